"""The rules every multiple-choice question must pass; each failure has a named reason.

| reason | rule |
|---|---|
| `empty_question`, `empty_option`, `empty_rationale` | the stem, every option and the rationale have text |
| `wrong_option_count` | there are exactly `num_options` options |
| `all_or_none_of_the_above` | no option refers to the other options ("all of the above", "none of these", "both A and B") |
| `duplicate_options` | the options are distinct after normalisation (case, spacing, punctuation) |
| `no_correct_option` | the correct answer is one of the options |
| `multiple_correct_options` | the correct answer matches exactly one option |
| `stem_contains_answer` | the stem does not contain the correct answer's words in order |
| `correct_option_longest` | the correct option is not conspicuously longer than every distractor |
| `stem_copies_caption` | the stem does not copy a long run of words from the caption |
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from microvqa_pp.mcq.text import contains_phrase, longest_shared_run, normalize_option

REASONS = (
    "empty_question",
    "empty_option",
    "empty_rationale",
    "wrong_option_count",
    "all_or_none_of_the_above",
    "duplicate_options",
    "no_correct_option",
    "multiple_correct_options",
    "stem_contains_answer",
    "correct_option_longest",
    "stem_copies_caption",
)
"""Every reason `validate_draft` can return, in the order the rules are checked."""

_REFERS_TO_OPTIONS = re.compile(
    r"\b(?:all|none|both|neither|any)\s+(?:of\s+)?(?:the\s+)?(?:above|these|those|options|answers|choices|previous)\b"
    r"|\ball\s+(?:are|of\s+them\s+are)\s+correct\b|\bnone\s+(?:are|is|of\s+them\s+(?:are|is))\s+correct\b"
    r"|\bboth\s+\(?[a-j1-9]\)?\s+and\s+\(?[a-j1-9]\)?(?![\w-])",
    re.IGNORECASE,
)

MIN_LENGTH_GAP = 8
"""Characters by which the correct option must exceed the longest distractor before the length
ratio counts, so that "DAPI" against "PI" (ratio 2, two characters) is not a shortcut."""


@dataclass
class McqDraft:
    """A question before its options are placed: the options as written, and which one is correct."""

    question: str
    options: list[str]
    correct_answer: str
    rationale: str
    span_kind: str = ""
    distractor_source: str = "agent"
    """Origin of the distractors: `agent`, or offline `corpus`, `lexicon`, `scaled`, `other-answers`."""
    notes: list[str] = field(default_factory=list)

    def correct_position(self) -> int:
        """Return the index of the first option that matches the correct answer, or -1."""
        key = normalize_option(self.correct_answer)
        for index, option in enumerate(self.options):
            if normalize_option(option) == key:
                return index
        return -1

    def distractors(self) -> list[str]:
        position = self.correct_position()
        return [option for index, option in enumerate(self.options) if index != position]


@dataclass(frozen=True)
class Violation:
    """A failed rule: the reason (one of REASONS) and a detail naming the offending text."""

    reason: str
    detail: str


@dataclass(frozen=True)
class ValidationSettings:
    num_options: int = 4
    max_length_ratio: float = 1.5
    """The correct option may be at most this many times as long (in characters) as the longest distractor."""
    max_caption_copy_words: int = 12
    """A stem that shares this many consecutive words or more with the caption copies it."""


def validate_draft(draft: McqDraft, settings: ValidationSettings, caption: str = "") -> Violation | None:
    """Return the first rule the draft breaks, or None when it passes every rule."""
    if not draft.question.strip():
        return Violation("empty_question", "the question stem is empty")
    for index, option in enumerate(draft.options):
        if not option.strip():
            return Violation("empty_option", f"option {index + 1} is empty")
    if not draft.rationale.strip():
        return Violation("empty_rationale", "the rationale is empty")
    if len(draft.options) != settings.num_options:
        return Violation("wrong_option_count", f"{len(draft.options)} options, expected {settings.num_options}")

    for option in draft.options:
        if _REFERS_TO_OPTIONS.search(option):
            return Violation("all_or_none_of_the_above", f"option {option!r} refers to the other options")

    correct_key = normalize_option(draft.correct_answer)
    keys = [normalize_option(option) for option in draft.options]
    matches = keys.count(correct_key)
    if matches == 0:
        return Violation("no_correct_option", f"the correct answer {draft.correct_answer!r} is not among the options")
    if matches > 1:
        return Violation("multiple_correct_options", f"{matches} options match the correct answer {draft.correct_answer!r}")
    seen: dict[str, str] = {}
    for option, key in zip(draft.options, keys):
        if key in seen:
            return Violation("duplicate_options", f"options {seen[key]!r} and {option!r} are the same after normalisation")
        seen[key] = option

    if contains_phrase(draft.question, draft.correct_answer):
        return Violation("stem_contains_answer", f"the stem contains the answer {draft.correct_answer!r}")

    if correct_option_too_long(draft.correct_answer, draft.distractors(), settings.max_length_ratio):
        longest_distractor = max(len(option.strip()) for option in draft.distractors())
        correct_length = len(draft.correct_answer.strip())
        return Violation(
            "correct_option_longest",
            f"the correct option has {correct_length} characters, the longest distractor {longest_distractor} "
            f"(ratio {correct_length / longest_distractor:.2f} > {settings.max_length_ratio})",
        )

    if caption:
        shared = longest_shared_run(draft.question, caption)
        if shared >= settings.max_caption_copy_words:
            return Violation("stem_copies_caption", f"the stem repeats {shared} consecutive words of the caption")
    return None


def correct_option_too_long(correct: str, distractors: list[str], max_ratio: float) -> bool:
    """Return whether the correct option is conspicuously longer than every distractor."""
    longest_distractor = max((len(option.strip()) for option in distractors), default=0)
    correct_length = len(correct.strip())
    return (
        longest_distractor > 0
        and correct_length > max_ratio * longest_distractor
        and correct_length - longest_distractor >= MIN_LENGTH_GAP
    )
