"""The agent judge: an MLLM rates each QA's consistency with its image and caption from 0 to 1.

The prompt is `judge_prompt.txt` beside this module: a `version:` line, then a system and a user
section with `$name` placeholders (string.Template). Change the version whenever the wording
changes, because cached replies are keyed by it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from string import Template

from pydantic import BaseModel, Field, field_validator

from microvqa_pp.agents.base import AgentTask, ImagePart, Message, ReplyError

PROMPT_FILE = Path(__file__).with_name("judge_prompt.txt")
MAX_REASON_CHARS = 300

_SECTION = re.compile(r"^=== (system|user) ===$", re.MULTILINE)
_LOOSE_SCORE = re.compile(r"\bscore\b\W{0,5}([01](?:\.\d+)?|\.\d+)\b", re.IGNORECASE)
_LOOSE_REASON = re.compile(r"\breason\b\W{0,5}(.+)", re.IGNORECASE)


@dataclass(frozen=True)
class PromptTemplate:
    """A versioned chat prompt with a system and a user part."""

    version: str
    system: Template
    user: Template


@lru_cache(maxsize=None)
def load_prompt(path: Path = PROMPT_FILE) -> PromptTemplate:
    """Read a prompt file: `version: NAME`, then `=== system ===` and `=== user ===` sections."""
    text = path.read_text(encoding="utf-8")
    first_line, _, body = text.partition("\n")
    if not first_line.startswith("version:"):
        raise ValueError(f"prompt file {path} must start with a 'version: NAME' line")
    parts = _SECTION.split(body)
    sections = {parts[index]: parts[index + 1].strip() for index in range(1, len(parts) - 1, 2)}
    if set(sections) != {"system", "user"}:
        raise ValueError(f"prompt file {path} needs exactly one '=== system ===' and one '=== user ===' section")
    return PromptTemplate(first_line.removeprefix("version:").strip(), Template(sections["system"]), Template(sections["user"]))


@dataclass(frozen=True)
class JudgeItem:
    """One QA to judge, with its figure's caption and image file."""

    qa_id: str
    question: str
    answer: str
    statement: str
    caption: str
    image_path: Path


class JudgeVerdict(BaseModel):
    """The judge's reply: a consistency score from 0 to 1 and a short reason."""

    score: float = Field(ge=0.0, le=1.0)
    reason: str = ""

    @field_validator("reason")
    @classmethod
    def _shorten(cls, reason: str) -> str:
        reason = " ".join(reason.split())
        return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 1] + "…"


class JudgeTask(AgentTask[JudgeItem, JudgeVerdict]):
    """Rate a QA's consistency with the figure's image and caption."""

    name = "judge_consistency"
    prompt_version = load_prompt().version
    output_model = JudgeVerdict

    def item_id(self, item: JudgeItem) -> str:
        return item.qa_id

    def messages(self, item: JudgeItem) -> list[Message]:
        prompt = load_prompt()
        user = prompt.user.substitute(
            caption=item.caption, question=item.question, answer=item.answer, statement=item.statement
        )
        return [
            Message.text("system", prompt.system.substitute()),
            Message("user", (ImagePart(item.image_path), user)),
        ]

    def parse(self, text: str, item: JudgeItem) -> JudgeVerdict:
        """Parse the JSON reply; a reply without JSON may still give `score: X` and `reason: ...` lines."""
        try:
            return super().parse(text, item)
        except ReplyError as error:
            loose = _LOOSE_SCORE.search(text)
            if loose is None or "{" in text:
                raise
            reason = _LOOSE_REASON.search(text)
            try:
                return JudgeVerdict(score=float(loose.group(1)), reason=reason.group(1) if reason else "")
            except ValueError:
                raise error from None
