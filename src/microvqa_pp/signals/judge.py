"""The agent judge: an MLLM rates each QA's consistency with its image and caption from 0 to 1.

The prompt is `prompts/judge_consistency.md` beside this module (see `agents.prompts` for the
format). Its version is part of the reply cache key, so change it whenever the wording changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

from microvqa_pp.agents.base import AgentTask, Message, ReplyError
from microvqa_pp.agents.prompts import load_prompt

PROMPT = load_prompt("microvqa_pp.signals", "judge_consistency")
MAX_REASON_CHARS = 300

_LOOSE_SCORE = re.compile(r"\bscore\b\W{0,5}([01](?:\.\d+)?|\.\d+)\b", re.IGNORECASE)
_LOOSE_REASON = re.compile(r"\breason\b\W{0,5}(.+)", re.IGNORECASE)


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
    prompt_version = PROMPT.version
    output_model = JudgeVerdict

    def item_id(self, item: JudgeItem) -> str:
        return item.qa_id

    def messages(self, item: JudgeItem) -> list[Message]:
        return PROMPT.render(
            images=(item.image_path,),
            caption=item.caption,
            question=item.question,
            answer=item.answer,
            statement=item.statement,
        )

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
