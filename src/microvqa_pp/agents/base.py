"""The agent interface that every stage calling a model uses.

Three pieces, kept apart so each can be tested alone (the distilabel split):

- `AgentTask`: one kind of request (write QAs, judge a QA, write an MCQ, answer an MCQ). It
  renders the chat messages for an item, parses and validates the reply, and may implement
  `offline`, a deterministic answer that needs no model.
- `ChatBackend`: something that answers chat requests, e.g. an OpenAI-compatible server or a
  local transformers model. It knows nothing about tasks.
- `Agent`: runs a task over items. `LLMAgent` renders, sends through a backend, parses, and asks
  once for a repair when a reply does not parse; `OfflineAgent` calls `task.offline`.

A reply that cannot be parsed or a request that fails never raises out of `Agent.run`: the
item's `AgentResult` carries the raw reply, the reason and the detail, and the stage decides.
"""

from __future__ import annotations

import json
import logging
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Sequence, TypeVar

from pydantic import BaseModel, ValidationError

from microvqa_pp.errors import MicroVQAError

logger = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
OutputT = TypeVar("OutputT")


@dataclass(frozen=True)
class ImagePart:
    """An image in a chat message, referenced by file; backends encode it as they need."""

    path: Path


@dataclass(frozen=True)
class Message:
    """One chat message; `content` mixes text and images in order."""

    role: str
    content: tuple[str | ImagePart, ...]

    @classmethod
    def text(cls, role: str, text: str) -> "Message":
        return cls(role, (text,))


@dataclass(frozen=True)
class ChatRequest:
    """A request to a chat backend. `schema` asks for JSON output of that JSON schema."""

    messages: tuple[Message, ...]
    temperature: float = 0.0
    max_tokens: int = 2048
    schema: dict[str, Any] | None = None
    schema_name: str = "reply"
    seed: int | None = None
    top_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    """Sampling settings left as None are not sent, so the server's defaults apply."""
    cache_namespace: str = ""
    """Task name and prompt version; part of the cache key so a new prompt never hits old replies."""


@dataclass
class ChatReply:
    """A backend's answer: the reply text, or an error reason when the request failed."""

    text: str = ""
    error: str = ""
    """Empty on success; otherwise e.g. `request_failed`, `timeout`, `http_429`."""
    error_detail: str = ""
    cached: bool = False
    usage: dict[str, int] = field(default_factory=dict)


class ReplyError(ValueError):
    """A reply that does not parse or validate; the message says what is wrong."""


class BackendError(MicroVQAError):
    """A backend failure that concerns every request, such as a rejected API key or unknown model.

    Unlike a failed request, which becomes an error reply, this stops the stage: every later
    request would fail the same way.
    """


class ChatBackend(ABC):
    """Answers chat requests; `complete` returns replies in request order."""

    model: str

    @abstractmethod
    def complete(self, requests: Sequence[ChatRequest]) -> list[ChatReply]:
        """Answer every request (concurrently where the backend can), in order, never raising for one."""

    def usage(self) -> dict[str, int]:
        """Return request and token counts so far, for the run manifest."""
        return {}

    def close(self) -> None:
        """Release connections or models."""


class AgentTask(ABC, Generic[ItemT, OutputT]):
    """One kind of model request: messages for an item, and the parsed, validated output."""

    name: ClassVar[str]
    prompt_version: ClassVar[str]
    output_model: ClassVar[type[BaseModel] | None] = None
    """Pydantic model the reply must validate against; None for free text."""

    def item_id(self, item: ItemT) -> str:
        """Return a stable id of the item, for logs and rejection records."""
        return str(getattr(item, "id", None) or getattr(item, "figure_id", None) or id(item))

    @abstractmethod
    def messages(self, item: ItemT) -> list[Message]:
        """Render the chat messages for one item."""

    def parse(self, text: str, item: ItemT) -> OutputT:
        """Parse a reply into the task's output, raising ReplyError when it does not fit.

        The default extracts a JSON object and validates it with `output_model`.
        """
        if self.output_model is None:
            return text  # type: ignore[return-value]
        data = extract_json(text)
        try:
            return self.output_model.model_validate(data)  # type: ignore[return-value]
        except ValidationError as error:
            raise ReplyError(f"reply does not match {self.output_model.__name__}: {_short_errors(error)}") from error

    def offline(self, item: ItemT) -> OutputT:
        """Produce the output without a model; tasks without an offline version raise."""
        raise NotImplementedError(f"task {self.name!r} has no offline implementation; use an LLM backend")

    def json_schema(self) -> dict[str, Any] | None:
        return self.output_model.model_json_schema() if self.output_model is not None else None


@dataclass
class AgentResult(Generic[OutputT]):
    """The outcome for one item: the output, or the reason there is none."""

    item_id: str
    output: OutputT | None
    raw_reply: str = ""
    error: str = ""
    """Empty on success; `unparseable_reply` or the backend's error reason otherwise."""
    error_detail: str = ""
    cached: bool = False
    repaired: bool = False

    @property
    def ok(self) -> bool:
        return not self.error


class Agent(ABC):
    """Runs agent tasks over items."""

    name: str
    """Model name, or `offline-template` for the offline agent; recorded with every output."""
    template_generated: bool = False

    @abstractmethod
    def run(self, task: AgentTask[ItemT, OutputT], items: Sequence[ItemT]) -> list[AgentResult[OutputT]]:
        """Run `task` on every item; results are in item order and never raise for one item."""

    def usage(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        return None


class OfflineAgent(Agent):
    """Answers tasks with their deterministic `offline` implementation; needs no model."""

    name = "offline-template"
    template_generated = True

    def run(self, task: AgentTask[ItemT, OutputT], items: Sequence[ItemT]) -> list[AgentResult[OutputT]]:
        results: list[AgentResult[OutputT]] = []
        for item in items:
            item_id = task.item_id(item)
            try:
                results.append(AgentResult(item_id, task.offline(item)))
            except ReplyError as error:
                results.append(AgentResult(item_id, None, error="offline_failed", error_detail=str(error)))
        return results


class LLMAgent(Agent):
    """Runs tasks through a chat backend, with one repair request for a reply that does not parse."""

    def __init__(self, backend: ChatBackend, *, temperature: float = 0.0, max_tokens: int = 2048, seed: int | None = None):
        self.backend = backend
        self.name = backend.model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.seed = seed

    def request(self, task: AgentTask[Any, Any], messages: list[Message]) -> ChatRequest:
        return ChatRequest(
            messages=tuple(messages),
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            schema=task.json_schema(),
            schema_name=task.name,
            seed=self.seed,
            cache_namespace=f"{task.name}@{task.prompt_version}",
        )

    def run(self, task: AgentTask[ItemT, OutputT], items: Sequence[ItemT]) -> list[AgentResult[OutputT]]:
        conversations = [task.messages(item) for item in items]
        replies = self.backend.complete([self.request(task, messages) for messages in conversations])
        results: list[AgentResult[OutputT]] = []
        repairs: list[int] = []
        for index, (item, reply) in enumerate(zip(items, replies)):
            item_id = task.item_id(item)
            if reply.error:
                results.append(AgentResult(item_id, None, reply.text, reply.error, reply.error_detail, reply.cached))
                continue
            try:
                results.append(AgentResult(item_id, task.parse(reply.text, item), reply.text, cached=reply.cached))
            except ReplyError as error:
                results.append(AgentResult(item_id, None, reply.text, "unparseable_reply", str(error), reply.cached))
                repairs.append(index)

        if repairs:
            repair_requests = [
                self.request(task, conversations[index] + repair_messages(results[index].raw_reply, results[index].error_detail))
                for index in repairs
            ]
            for index, reply in zip(repairs, self.backend.complete(repair_requests)):
                item = items[index]
                if reply.error:
                    continue
                try:
                    output = task.parse(reply.text, item)
                except ReplyError as error:
                    results[index].error_detail += f"; the repair reply also failed: {error}"
                    results[index].raw_reply += "\n\n--- repair reply ---\n" + reply.text
                    continue
                results[index] = AgentResult(results[index].item_id, output, reply.text, cached=reply.cached, repaired=True)
        return results

    def usage(self) -> dict[str, int]:
        return self.backend.usage()

    def close(self) -> None:
        self.backend.close()


def repair_messages(reply: str, problem: str) -> list[Message]:
    """Return the follow-up turns that ask the model to fix a reply that did not parse."""
    return [
        Message.text("assistant", reply),
        Message.text(
            "user",
            f"Your reply could not be used: {problem}. Reply again with only the corrected JSON "
            "object, with no text before or after it.",
        ),
    ]


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def extract_json(text: str) -> Any:
    """Return the JSON value in a reply: the whole text, a fenced block, or the first balanced object."""
    stripped = text.strip()
    candidates = [stripped]
    candidates += [match.strip() for match in _FENCE.findall(text)]
    start = stripped.find("{")
    if start >= 0:
        candidates.append(_balanced_object(stripped, start))
    for candidate in candidates:
        if not candidate:
            continue
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            continue
    raise ReplyError("no valid JSON object found in the reply")


def _balanced_object(text: str, start: int) -> str:
    """Return the text from `start` to its matching closing brace, respecting strings."""
    depth = 0
    in_string = False
    escaped = False
    for position in range(start, len(text)):
        character = text[position]
        if in_string:
            if escaped:
                escaped = False
            elif character == "\\":
                escaped = True
            elif character == '"':
                in_string = False
            continue
        if character == '"':
            in_string = True
        elif character == "{":
            depth += 1
        elif character == "}":
            depth -= 1
            if depth == 0:
                return text[start : position + 1]
    return ""


def _short_errors(error: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(part) for part in item['loc']) or 'reply'}: {item['msg']}" for item in error.errors()[:5])
