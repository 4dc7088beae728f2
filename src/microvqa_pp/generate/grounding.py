"""The grounding check: a proposed QA is kept only when its answer span is in the caption.

Span matching ignores case, whitespace, Unicode variants and Greek spellings (see `text.fold`),
but the stored span and its offsets are those of the original caption, so that
`caption[span_start:span_end] == answer_span` always holds for a kept QA.
"""

from __future__ import annotations

from dataclasses import dataclass

from microvqa_pp.generate.schema import ProposedQA
from microvqa_pp.generate.spans import SPAN_KINDS
from microvqa_pp.generate.text import Sentence, contains_phrase, find_span, folded_text, sentence_at, split_sentences

MAX_ANSWER_WORDS_CHECKED = 8
"""Answers up to this many words are also checked for appearing in the question."""


@dataclass(frozen=True)
class GroundedQA:
    """A proposed QA that passed the check, with its span located in the original caption."""

    question: str
    answer: str
    answer_span: str
    span_start: int
    span_end: int
    support_sentence: str
    task: int
    answer_kind: str
    panel: str


@dataclass(frozen=True)
class Rejected:
    """A proposed QA that failed the check: `reason` is a short name, `detail` says why."""

    reason: str
    detail: str


class CaptionChecker:
    """Checks the proposed QAs of one caption; remembers the questions it kept to drop repeats."""

    def __init__(self, caption: str):
        self.caption = caption
        self.sentences: list[Sentence] = split_sentences(caption)
        self._questions: set[str] = set()

    def check(self, proposed: ProposedQA) -> GroundedQA | Rejected:
        question = proposed.question.strip()
        answer = proposed.answer.strip()
        span_text = proposed.answer_span.strip()
        for name, value in (("question", question), ("answer", answer), ("answer_span", span_text)):
            if not value:
                return Rejected("empty_field", f"the {name} is empty")

        support = self._support_range(proposed.support_sentence)
        located = find_span(self.caption, span_text, near=support)
        if located is None:
            return Rejected("span_not_in_caption", f"answer span {span_text!r} does not occur in the caption")
        start, end = located
        original_span = self.caption[start:end]

        if contains_phrase(question, original_span):
            return Rejected("answer_in_question", f"the question contains the answer span {original_span!r}")
        if len(answer.split()) <= MAX_ANSWER_WORDS_CHECKED and contains_phrase(question, answer):
            return Rejected("answer_in_question", f"the question contains the answer {answer!r}")

        key = folded_text(question)
        if key in self._questions:
            return Rejected("duplicate_question", "the same question was already kept for this figure")
        self._questions.add(key)

        sentence = sentence_at(self.sentences, start)
        if support is not None and support[0] <= start and end <= support[1]:
            support_text = self.caption[support[0] : support[1]]
        else:
            support_text = sentence.text if sentence is not None else original_span
        kind = proposed.answer_kind.strip().lower().replace(" ", "_")
        return GroundedQA(
            question=question,
            answer=answer,
            answer_span=original_span,
            span_start=start,
            span_end=end,
            support_sentence=support_text,
            task=proposed.task,
            answer_kind=kind if kind in SPAN_KINDS else "other",
            panel=sentence.panel_text if sentence is not None else "",
        )

    def _support_range(self, support_sentence: str) -> tuple[int, int] | None:
        if not support_sentence.strip():
            return None
        return find_span(self.caption, support_sentence.strip())
