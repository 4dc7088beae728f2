"""The agent task of stage 1: write caption-grounded QAs for one figure, by model or by template."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from microvqa_pp.agents.base import AgentTask, Message
from microvqa_pp.agents.prompts import load_prompt
from microvqa_pp.generate import offline
from microvqa_pp.generate.schema import ProposedQAs
from microvqa_pp.generate.spans import SPAN_KINDS

PROMPT = load_prompt("microvqa_pp.generate", "generate_qa")


@dataclass(frozen=True)
class FigureInput:
    """What the question writer sees of a figure: its caption and image file."""

    figure_id: str
    caption: str
    image_path: Path


class GenerateQATask(AgentTask[FigureInput, ProposedQAs]):
    """Ask for `count` QAs per figure, with the image and the caption in one user message."""

    name: ClassVar[str] = "generate_qa"
    prompt_version: ClassVar[str] = PROMPT.version
    output_model = ProposedQAs

    def __init__(self, count: int):
        if count < 1:
            raise ValueError(f"questions per figure must be at least 1, got {count}")
        self.count = count

    def item_id(self, item: FigureInput) -> str:
        return item.figure_id

    def messages(self, item: FigureInput) -> list[Message]:
        kinds = "\n".join(f"   - {kind}: {description}" for kind, description in SPAN_KINDS.items())
        return PROMPT.render(images=[item.image_path], caption=item.caption.strip(), count=self.count, kinds=kinds)

    def offline(self, item: FigureInput) -> ProposedQAs:
        return offline.write_questions(item.caption, self.count)

    @staticmethod
    def offline_version() -> str:
        return f"offline-template@{offline.OFFLINE_VERSION}"
