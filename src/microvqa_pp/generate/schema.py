"""The reply a question writer returns for one figure: proposed QAs, before the grounding check."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ProposedQA(BaseModel):
    """One question-answer pair as written, with the caption phrase that supports the answer."""

    question: str = Field(description="The question, answerable from the image by an expert; it must not contain the answer.")
    answer: str = Field(description="The answer, short.")
    answer_span: str = Field(description="The exact caption phrase that gives the answer, copied character for character.")
    support_sentence: str = Field(default="", description="The caption sentence that contains the answer span.")
    task: Literal[1, 2, 3] = Field(description="1 Expert Visual Understanding, 2 Hypothesis Generation, 3 Experimental Proposal.")
    answer_kind: str = Field(default="other", description="What the answer is: one of the listed span kinds, or other.")


class ProposedQAs(BaseModel):
    """The question-answer pairs proposed for one figure."""

    questions: list[ProposedQA]
