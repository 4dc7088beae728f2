"""The offline MCQ writer: caption-grounded stems, same-kind distractors, rationales from the caption.

It needs no model. The correct option is the stage-1 answer; the distractors are spans of the same
kind from other captions of the corpus (stains for a stain, organisms for an organism, numbers
with the same unit for a quantity), topped up from the packaged lexicon or, for quantities, from
scaled values when the corpus is small. The stem is a short description of the image type and
subject (never a sentence of the caption) followed by the stage-1 question, or a generic question
for the answer's kind when the stage-1 question gives the answer away. The rationale goes from
what the image shows to the supporting caption sentence to the answer.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from microvqa_pp.agents.base import ReplyError
from microvqa_pp.mcq.positions import stable_seed
from microvqa_pp.mcq.spans import (
    OTHER,
    QUANTITY,
    KindInfo,
    Lexicon,
    Mention,
    SpanPool,
    classify_span,
    fallback_values,
    replace_number,
)
from microvqa_pp.mcq.text import canonical_characters, contains_phrase, content_words, longest_shared_run, normalize_option
from microvqa_pp.mcq.validation import McqDraft, ValidationSettings, correct_option_too_long
from microvqa_pp.records import QA

# Image-type phrases for the stem, most specific first; a phrase is skipped when it shares a
# content word with an option (a "confocal micrograph" stem would give away "confocal microscopy").
_IMAGE_TYPES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), phrase)
    for pattern, phrase in (
        (r"cryo-?electron tomogra", "A cryo-electron tomogram"),
        (r"transmission electron|\bTEM\b", "A transmission electron micrograph"),
        (r"scanning electron", "A scanning electron micrograph"),
        (r"electron micro", "An electron micrograph"),
        (r"confocal", "A confocal micrograph"),
        (r"immunofluorescen", "An immunofluorescence image"),
        (r"fluorescen|\bDAPI\b|\bGFP\b|Hoechst|mCherry", "A fluorescence micrograph"),
        (r"immunohistochem|\bIHC\b", "An immunohistochemistry image"),
        (r"hematoxylin|haematoxylin|\bH&E\b|\bHE stain", "A hematoxylin and eosin-stained section"),
        (r"phase[- ]contrast", "A phase-contrast micrograph"),
        (r"light microscop|bright-?field", "A light micrograph"),
    )
)
_GENERIC_IMAGE = "A microscopy image"
_GENERIC_WORDS = frozenset({"micrograph", "microscopy", "image", "section", "stained", "light"})
_SUBJECT_KINDS = ("cell_line", "organism", "cell_type")
_TEXT_REFERENCES = re.compile(r"\b(?:caption|legend|text|article|authors?|paper|study)\b", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(])")


@dataclass(frozen=True)
class QAContext:
    """Everything the MCQ tasks need about one kept QA: the QA, its caption, image and score."""

    qa: QA
    caption: str
    image_path: Path | None
    consistency_score: float
    source: str = ""

    @property
    def qa_id(self) -> str:
        return self.qa.qa_id

    @property
    def answer(self) -> str:
        return canonical_characters(self.qa.answer or self.qa.answer_span).strip()

    def support_sentence(self) -> str:
        """Return the stage-1 supporting sentence, else the caption sentence that holds the answer span."""
        if self.qa.support_sentence.strip():
            return self.qa.support_sentence.strip()
        start = 0
        for sentence in _SENTENCE_END.split(self.caption):
            end = start + len(sentence)
            if start <= self.qa.span_start < end + 1:
                return sentence.strip()
            start = end + 1
        return ""


@dataclass
class Candidate:
    """A possible distractor and where it came from (`corpus`, `lexicon`, `scaled`, `other-answers`)."""

    text: str
    source: str
    group: str = ""
    canonical: bool = True
    """False when a shorter or longer spelling than the canonical one was chosen to match the answer."""


class OfflineWriter:
    """Writes MCQs from caption-grounded QAs without a model (see the module docstring)."""

    def __init__(self, pool: SpanPool, settings: ValidationSettings, seed: int = 0):
        self.pool = pool
        self.lexicon: Lexicon = pool.lexicon
        self.settings = settings
        self.seed = seed

    # Writing ---------------------------------------------------------------------------------

    def write(self, context: QAContext) -> McqDraft:
        """Return a draft MCQ for one QA, or raise ReplyError `too_few_distractors: ...`."""
        answer = context.answer
        mention = classify_span(answer, self.lexicon)
        needed = self.settings.num_options - 1
        candidates = self.candidates(context, mention)
        rng = np.random.default_rng(stable_seed("offline-distractors", self.seed, context.qa_id))
        distractors = self.select(self.rank(candidates, answer, mention, rng), answer, needed)
        if len(distractors) < needed:
            kind = mention.key if mention else OTHER
            raise ReplyError(
                f"too_few_distractors: {len(distractors)} same-kind spans ({kind}) for {answer!r}, "
                f"{needed} needed; a larger corpus or an LLM agent supplies more"
            )
        return self.assemble(context, mention, distractors, generic_question=False)

    def assemble(
        self, context: QAContext, mention: Mention | None, distractors: list[Candidate], *, generic_question: bool
    ) -> McqDraft:
        """Build the stem and the rationale around a chosen set of distractors."""
        answer = context.answer
        options = [answer] + [candidate.text for candidate in distractors]
        info = self.lexicon.info(mention.key if mention else OTHER)
        lead = self.lead(context, mention, options)
        # An answer of no known kind has no meaningful generic question, so it keeps the stage-1 one.
        question = info.question if generic_question and mention is not None else self.question(context, options, info)
        return McqDraft(
            question=f"{lead} {question}",
            options=options,
            correct_answer=answer,
            rationale=self.rationale(context, info, lead, answer, [candidate.text for candidate in distractors]),
            span_kind=mention.key if mention else OTHER,
            distractor_source=_combine_sources(candidate.source for candidate in distractors),
        )

    # Distractors ------------------------------------------------------------------------------

    def candidates(self, context: QAContext, mention: Mention | None) -> list[Candidate]:
        """Return every same-kind span that could be a distractor, corpus first, in a stable order."""
        answer = context.answer
        if mention is None:
            return self._other_answers(context)
        if mention.key.startswith(QUANTITY):
            return self._quantities(context, answer, mention)
        return self._lexicon_kind(context, answer, mention)

    def _lexicon_kind(self, context: QAContext, answer: str, mention: Mention) -> list[Candidate]:
        in_caption = {(found.key, found.identity) for found in self.lexicon.find(context.caption)}
        excluded = in_caption | {(mention.key, mention.identity)}
        result: list[Candidate] = []
        seen: set[object] = set()
        for item in self.pool.same_kind(mention.key):
            if (item.key, item.identity) in excluded or item.identity in seen:
                continue
            seen.add(item.identity)
            entry = self.lexicon.entry(item.key, item.identity)
            forms = entry.forms if entry is not None else (item.text,)
            result.append(_lexicon_candidate(forms, answer, "corpus", item.group))
        for entry in self.lexicon.entries.get(mention.key, []):
            if (mention.key, entry.index) in excluded or entry.index in seen:
                continue
            seen.add(entry.index)
            result.append(_lexicon_candidate(entry.forms, answer, "lexicon", entry.group))
        return _drop_overlapping(result, answer)

    def _quantities(self, context: QAContext, answer: str, mention: Mention) -> list[Candidate]:
        assert mention.value is not None
        caption_values = {found.value for found in self.lexicon.find(context.caption) if found.key == mention.key}
        taken = caption_values | {mention.value}
        result: list[Candidate] = []
        for item in self.pool.same_kind(mention.key):
            value = item.value
            if value is None or value <= 0 or any(math.isclose(value, other) for other in taken if other is not None):
                continue
            # A value more than a hundredfold away is an implausible alternative for the same setting.
            if mention.value > 0 and abs(math.log10(value / mention.value)) > 2:
                continue
            taken.add(value)
            result.append(Candidate(replace_number(answer, mention, value), "corpus"))
        for value in fallback_values(mention.key, mention.value):
            if any(math.isclose(value, other) for other in taken if other is not None):
                continue
            taken.add(value)
            result.append(Candidate(replace_number(answer, mention, value), "scaled"))
        return _drop_overlapping(result, answer, containment=False)

    def _other_answers(self, context: QAContext) -> list[Candidate]:
        figure_id = context.qa.figure_id
        result = []
        for key, text in sorted(self.pool.answers.items()):
            if figure_id in self.pool.answer_figures[key] or classify_span(text, self.lexicon) is not None:
                continue
            if contains_phrase(context.caption, text):
                continue
            result.append(Candidate(text, "other-answers"))
        return _drop_overlapping(result, context.answer)

    def select(self, ranked: list[Candidate], answer: str, needed: int) -> list[Candidate]:
        """Take the first `needed` candidates, swapping the last one for a longer candidate when the
        correct option would otherwise be conspicuously the longest."""
        chosen = ranked[:needed]
        ratio = self.settings.max_length_ratio
        if len(chosen) < needed or not correct_option_too_long(answer, [candidate.text for candidate in chosen], ratio):
            return chosen
        for candidate in ranked[needed:]:
            swapped = chosen[:-1] + [candidate]
            if not correct_option_too_long(answer, [item.text for item in swapped], ratio):
                return swapped
        return chosen

    def rank(self, candidates: list[Candidate], answer: str, mention: Mention | None, rng: np.random.Generator) -> list[Candidate]:
        """Order candidates: same group, corpus before fallbacks, similar length, canonical spelling, then seeded random.

        Similar length keeps the correct option from standing out as the longest or shortest.
        """
        order = rng.permutation(len(candidates))
        shuffled = [candidates[index] for index in order]
        group = mention.group if mention else ""
        answer_length = max(len(answer), 1)

        def key(candidate: Candidate) -> tuple[int, int, int, int]:
            ratio = len(candidate.text) / answer_length
            length_misfit = 0 if 0.6 <= ratio <= 1.6 else 1
            fallback = 0 if candidate.source in ("corpus", "other-answers") else 1
            return (int(bool(group) and candidate.group != group), fallback, length_misfit, int(not candidate.canonical))

        return sorted(shuffled, key=key)

    # Stem and rationale -----------------------------------------------------------------------

    def lead(self, context: QAContext, mention: Mention | None, options: list[str]) -> str:
        """Return a sentence naming the image type and subject that gives no option away.

        The image type and subject come from the supporting sentence when it names them (the
        panel the QA is about), else from the whole caption. A phrase is skipped when it shares a
        content word or a lexicon entry with an option.
        """
        option_words = set().union(*(content_words(option) for option in options)) - _GENERIC_WORDS
        option_things = {(found.key, found.identity) for option in options for found in self.lexicon.find(option)}

        def reveals(phrase: str) -> bool:
            if (content_words(phrase) - _GENERIC_WORDS) & option_words:
                return True
            return any((found.key, found.identity) in option_things for found in self.lexicon.find(phrase))

        texts = [context.support_sentence(), context.caption]
        image_type = next(
            (phrase for text in texts for pattern, phrase in _IMAGE_TYPES if text and pattern.search(text) and not reveals(phrase)),
            _GENERIC_IMAGE,
        )
        for text in texts:
            for found in self.lexicon.find(text):
                if found.key not in _SUBJECT_KINDS:
                    continue
                subject = found.text
                if found.key == "cell_line" and not subject.endswith("s"):
                    subject = f"{subject} cells"
                if not reveals(subject):
                    return f"{image_type} of {subject} is shown."
        return f"{image_type} is shown."

    def question(self, context: QAContext, options: list[str], info: KindInfo) -> str:
        """Return the stage-1 question when it is usable as a stem, else the kind's generic question."""
        question = " ".join(context.qa.question.split())
        if not question:
            return info.question
        if not question.endswith("?"):
            question = question.rstrip(".") + "?"
        gives_away = any(contains_phrase(question, option) for option in options)
        copies = longest_shared_run(question, context.caption) >= self.settings.max_caption_copy_words
        if gives_away or copies or _TEXT_REFERENCES.search(question):
            return info.question
        return question

    def rationale(self, context: QAContext, info: KindInfo, lead: str, answer: str, distractors: list[str]) -> str:
        support = context.support_sentence()
        parts = [lead, info.evidence]
        if support:
            parts.append(f'The figure\'s description confirms this: "{support.rstrip()}"')
        parts.append(f"The {info.noun} is therefore {answer}.")
        parts.append(
            f"The other options, {_join(distractors)}, are {info.plural} that are not reported for this image."
            if info.kind != OTHER
            else f"The other options, {_join(distractors)}, describe other figures and are not supported by this image."
        )
        return " ".join(parts)


def _lexicon_candidate(forms: tuple[str, ...], answer: str, source: str, group: str) -> Candidate:
    """Return the canonical spelling, or the one closest in length when the canonical is over twice as long or short.

    So "DAPI" gets "H&E" rather than "hematoxylin and eosin", and a long answer gets full names.
    """
    canonical = forms[0]
    ratio = len(canonical) / max(len(answer), 1)
    if 0.5 <= ratio <= 2.0:
        return Candidate(canonical, source, group)
    closest = min(forms, key=lambda form: abs(len(form) - len(answer)))
    return Candidate(closest, source, group, canonical=closest == canonical)


def _drop_overlapping(candidates: list[Candidate], answer: str, *, containment: bool = True) -> list[Candidate]:
    """Drop candidates equal to the answer or an earlier candidate after normalisation.

    With `containment`, also drop one that contains or is contained in them ("Ku" and "Ku80"),
    which may name the same thing; quantities compare by equality only, because "5 μm" is inside "25 μm".
    """
    kept: list[Candidate] = []
    keys = [normalize_option(answer)]
    for candidate in candidates:
        key = normalize_option(candidate.text)
        if not key or any(key == other or (containment and (key in other or other in key)) for other in keys):
            continue
        keys.append(key)
        kept.append(candidate)
    return kept


def _combine_sources(sources: Iterable[str]) -> str:
    return "+".join(dict.fromkeys(sources))


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
