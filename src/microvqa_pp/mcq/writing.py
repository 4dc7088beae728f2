"""The agent task that writes a multiple-choice question and its rationale from a kept QA."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, Field

from microvqa_pp.agents.base import AgentTask, Message, ReplyError, repair_messages
from microvqa_pp.agents.prompts import load_prompt
from microvqa_pp.mcq.offline import OfflineWriter, QAContext
from microvqa_pp.mcq.text import resolve_correct_answer, strip_option_labels
from microvqa_pp.mcq.validation import McqDraft


class McqReply(BaseModel):
    """The JSON object the model returns for `mcq_write`."""

    question: str
    options: list[str] = Field(min_length=2)
    correct_answer: str
    rationale: str


@dataclass(frozen=True)
class WriteItem:
    """One QA to turn into an MCQ; `previous_reply` and `problem` ask again after a failed validation."""

    context: QAContext
    previous_reply: str = ""
    problem: str = ""


class McqWriteTask(AgentTask[WriteItem, McqDraft]):
    """Write the stem, options, correct answer and rationale for one QA, looking at the image."""

    name = "mcq_write"
    prompt_version = load_prompt("microvqa_pp.mcq", "mcq_write").version
    output_model = McqReply

    def __init__(self, num_options: int, writer: OfflineWriter | None = None):
        self.num_options = num_options
        self.writer = writer
        self.template = load_prompt("microvqa_pp.mcq", self.name)

    def item_id(self, item: WriteItem) -> str:
        return item.context.qa_id

    def messages(self, item: WriteItem) -> list[Message]:
        qa = item.context.qa
        images = [item.context.image_path] if item.context.image_path is not None else []
        messages = self.template.render(
            images,
            num_options=self.num_options,
            num_distractors=self.num_options - 1,
            task_str=qa.task_str,
            caption=item.context.caption,
            question=qa.question,
            answer=item.context.answer,
            support_sentence=item.context.support_sentence() or "(none)",
        )
        if item.previous_reply:
            messages += repair_messages(item.previous_reply, item.problem)
        return messages

    def parse(self, text: str, item: WriteItem) -> McqDraft:
        reply: McqReply = super().parse(text, item)  # type: ignore[assignment]
        options = strip_option_labels(reply.options)
        return McqDraft(
            question=reply.question.strip(),
            options=options,
            correct_answer=resolve_correct_answer(reply.correct_answer, reply.options, options),
            rationale=reply.rationale.strip(),
        )

    def offline(self, item: WriteItem) -> McqDraft:
        if self.writer is None:
            raise ReplyError("offline_unavailable: no offline writer was configured for mcq_write")
        return self.writer.write(item.context)
