"""Model agents: the task interface, the OpenAI-compatible and offline backends, the reply cache."""

from __future__ import annotations

from microvqa_pp.agents.base import (
    Agent,
    AgentResult,
    AgentTask,
    BackendError,
    ChatBackend,
    ChatReply,
    ChatRequest,
    ImagePart,
    LLMAgent,
    Message,
    OfflineAgent,
    ReplyError,
)
from microvqa_pp.config import AgentConfig
from microvqa_pp.run.rundir import RunDir

__all__ = [
    "Agent",
    "AgentResult",
    "AgentTask",
    "BackendError",
    "ChatBackend",
    "ChatReply",
    "ChatRequest",
    "ImagePart",
    "LLMAgent",
    "Message",
    "OfflineAgent",
    "ReplyError",
    "LLM_CACHE_FILE",
    "make_agent",
]

LLM_CACHE_FILE = "llm.sqlite"
"""Name of the reply cache in a run's cache folder."""


def make_agent(settings: AgentConfig, run: RunDir | None = None, seed: int | None = None) -> Agent:
    """Build the agent that the settings name.

    For the `openai` backend, replies are cached in `RUN/cache/llm.sqlite` when `run` is given
    and `settings.cache` is on. Raises ConfigError for settings that cannot work (no model name,
    an invalid URL, an API-key variable that is named but not set).
    """
    if settings.backend == "offline":
        return OfflineAgent()

    from microvqa_pp.agents.cache import ResponseCache
    from microvqa_pp.agents.openai import OpenAIBackend

    cache = ResponseCache(run.cache_dir / LLM_CACHE_FILE) if (run is not None and settings.cache) else None
    backend = OpenAIBackend.from_settings(settings, cache=cache)
    return LLMAgent(backend, temperature=settings.temperature, max_tokens=settings.max_tokens, seed=seed)
