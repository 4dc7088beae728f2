"""Model agents: the task interface, the OpenAI-compatible and offline backends, the reply cache."""

from __future__ import annotations

from microvqa_pp.agents.base import Agent, AgentResult, AgentTask, ChatBackend, ChatReply, ChatRequest, ImagePart, LLMAgent, Message, OfflineAgent, ReplyError
from microvqa_pp.config import AgentConfig
from microvqa_pp.run.rundir import RunDir

__all__ = [
    "Agent",
    "AgentResult",
    "AgentTask",
    "ChatBackend",
    "ChatReply",
    "ChatRequest",
    "ImagePart",
    "LLMAgent",
    "Message",
    "OfflineAgent",
    "ReplyError",
    "make_agent",
]


def make_agent(settings: AgentConfig, run: RunDir | None = None, seed: int | None = None) -> Agent:
    """Build the agent that the settings name; `run` supplies the response cache folder."""
    if settings.backend == "offline":
        return OfflineAgent()
    # TODO: the OpenAI-compatible backend with its SQLite cache is not written yet.
    raise NotImplementedError(f"agent backend {settings.backend!r} is not available yet")
