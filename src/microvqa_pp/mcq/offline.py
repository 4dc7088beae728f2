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
from difflib import SequenceMatcher
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

# Image-type phrases for the stem, most specific first. A phrase is skipped when it shares a
# content word with an option, because a "confocal micrograph" stem gives away "confocal microscopy".
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
# Stage-1 answer kinds that name a lexicon kind; the others (treatment, effect, conclusion, and
# quantities the lexicon cannot parse) draw distractors from other answers of the same stage-1 kind.
STAGE1_KINDS = {
    "stain": "stain",
    "marker": "marker",
    "cell_type": "cell_type",
    "organism": "organism",
    "modality": "technique",
    "outcome": "outcome",
}
_GENERIC_IMAGE = "A microscopy image"
_GENERIC_WORDS = frozenset({"micrograph", "microscopy", "image", "section", "stained"})
_SUBJECT_KINDS = ("cell_line", "organism", "cell_type")
_CELL_KINDS = frozenset({"cell_line", "cell_type"})
_TEXT_REFERENCES = re.compile(r"\b(?:caption|legend|text|article|authors?|paper|study)\b", re.IGNORECASE)
NEAR_DUPLICATE_RATIO = 0.85
"""Normalised options at least this similar (difflib ratio) count as one, to catch spelling variants."""
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
    def answer_kind(self) -> str:
        """The kind stage 1 gave the answer (`QA.answer_kind`), or empty for `other`."""
        return "" if self.qa.answer_kind == OTHER else self.qa.answer_kind

    @property
    def answer(self) -> str:
        return canonical_characters(self.qa.answer or self.qa.answer_span).strip()

    def support_sentence(self) -> str:
        """Return the stage-1 supporting sentence, else the caption sentence that contains the answer span."""
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


@dataclass(frozen=True)
class AnswerKind:
    """The kind of an answer: a key such as `stain` or `quantity:μM`, and the lexicon mention
    that covers the answer when there is one (it carries the identity and the family)."""

    key: str
    mention: Mention | None = None

    @property
    def group(self) -> str:
        return self.mention.group if self.mention else ""


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
        kind = self.resolve_kind(context)
        answer = self.display_answer(context, kind)
        needed = self.settings.num_options - 1
        rng = np.random.default_rng(stable_seed("offline-distractors", self.seed, context.qa_id))
        distractors = self.select(self.rank(self.candidates(context, kind), answer, kind, rng), answer, needed)
        if len(distractors) < needed:
            described = kind.key if kind.key != OTHER or not context.answer_kind else f"stage-1 kind {context.answer_kind}"
            raise ReplyError(
                f"too_few_distractors: {len(distractors)} same-kind spans ({described}) for {answer!r}, "
                f"{needed} needed; a larger corpus or an LLM agent supplies more"
            )
        return self.assemble(context, kind, distractors, generic_question=False)

    def resolve_kind(self, context: QAContext) -> AnswerKind:
        """Classify the answer with the lexicon; when that fails, use the kind stage 1 gave it."""
        mention = classify_span(context.answer, self.lexicon)
        if mention is not None:
            return AnswerKind(mention.key, mention)
        return AnswerKind(STAGE1_KINDS.get(context.answer_kind, OTHER))

    def display_answer(self, context: QAContext, kind: AnswerKind) -> str:
        """Return the correct option's text: the answer, with a spelled-out number in digits
        ("Twenty μg/ml" becomes "20 μg/ml") so that it is written like its distractors."""
        mention = kind.mention
        if mention is not None and mention.value is not None and not any(character.isdigit() for character in mention.text):
            return replace_number(context.answer, mention, mention.value)
        return self.sentence_case(context.answer, kind.key)

    def sentence_case(self, answer: str, key: str) -> str:
        """Lower the answer's first letter when only its place at a sentence start capitalised it.

        A span copied from the start of a caption sentence ("Confocal microscopy of ...") would
        otherwise be the one capitalised option among lowercase distractors from the lexicon, which
        gives the answer away. The letter is lowered only when the lexicon writes a form of the
        answer's kind that starts with the same word in lowercase, so names such as "Giemsa" or
        "HeLa" keep theirs.
        """
        first_word = answer.split(" ", 1)[0]
        if not first_word[:1].isupper() or not first_word[1:].islower():
            return answer
        lowered = first_word.lower()
        forms = (form for entry in self.lexicon.entries.get(key, []) for form in entry.forms)
        if not any(form.split(" ", 1)[0] == lowered for form in forms):
            return answer
        return answer[0].lower() + answer[1:]

    def assemble(self, context: QAContext, kind: AnswerKind, distractors: list[Candidate], *, generic_question: bool) -> McqDraft:
        """Build the stem and the rationale around a chosen set of distractors.

        With `generic_question` the stem uses the kind's generic question. Kinds without one
        (answers of no known kind, effects) keep the stage-1 question.
        """
        answer = self.display_answer(context, kind)
        options = [answer] + [candidate.text for candidate in distractors]
        info = self.lexicon.info(kind.key)
        lead = self.lead(context, options, kind.key)
        if generic_question and info.question and kind.key != OTHER:
            question = info.question
        else:
            question = self.question(context, options, info)
        return McqDraft(
            question=f"{lead} {question}",
            options=options,
            correct_answer=answer,
            rationale=self.rationale(context, info, lead, answer, [candidate.text for candidate in distractors]),
            span_kind=kind.key,
            distractor_source=_combine_sources(candidate.source for candidate in distractors),
        )

    # Distractors ------------------------------------------------------------------------------

    def candidates(self, context: QAContext, kind: AnswerKind) -> list[Candidate]:
        """Return every same-kind span that could be a distractor, corpus first, in a stable order."""
        answer = context.answer
        if kind.key.startswith(QUANTITY) and kind.mention is not None:
            return self._quantities(context, answer, kind.mention)
        if kind.key in self.lexicon.kinds:
            return self._lexicon_kind(context, answer, kind.key)
        return self._other_answers(context)

    def _lexicon_kind(self, context: QAContext, answer: str, key: str) -> list[Candidate]:
        # Anything the caption mentions may be in the image, and anything the answer mentions is the answer.
        excluded = {(found.key, found.identity) for text in (context.caption, answer) for found in self.lexicon.find(text)}
        result: list[Candidate] = []
        seen: set[object] = set()
        for item in self.pool.same_kind(key):
            if (item.key, item.identity) in excluded or item.identity in seen:
                continue
            seen.add(item.identity)
            entry = self.lexicon.entry(item.key, item.identity)
            forms = entry.forms if entry is not None else (item.text,)
            result.append(_lexicon_candidate(forms, answer, "corpus", item.group))
        for entry in self.lexicon.entries.get(key, []):
            if (key, entry.index) in excluded or entry.index in seen:
                continue
            seen.add(entry.index)
            result.append(_lexicon_candidate(entry.forms, answer, "lexicon", entry.group))
        return _drop_overlapping(result, answer)

    def _quantities(self, context: QAContext, answer: str, mention: Mention) -> list[Candidate]:
        assert mention.value is not None
        caption_values = {found.value for found in self.lexicon.find(context.caption) if found.key == mention.key}
        used_values = caption_values | {mention.value}
        result: list[Candidate] = []
        for item in self.pool.same_kind(mention.key):
            value = item.value
            if value is None or value <= 0 or any(math.isclose(value, other) for other in used_values if other is not None):
                continue
            # A value more than a hundredfold away is an implausible alternative for the same setting.
            if mention.value > 0 and abs(math.log10(value / mention.value)) > 2:
                continue
            used_values.add(value)
            result.append(Candidate(replace_number(answer, mention, value), "corpus"))
        for value in fallback_values(mention.key, mention.value):
            if any(math.isclose(value, other) for other in used_values if other is not None):
                continue
            used_values.add(value)
            result.append(Candidate(replace_number(answer, mention, value), "scaled"))
        return _drop_overlapping(result, answer, containment=False)

    def _other_answers(self, context: QAContext) -> list[Candidate]:
        """Return answers of other figures' QAs: those of the same stage-1 kind when stage 1 named
        one, else those of no kind the lexicon knows."""
        figure_id = context.qa.figure_id
        stage1_kind = context.answer_kind
        result = []
        for key, text in sorted(self.pool.answers.items()):
            if figure_id in self.pool.answer_figures[key] or contains_phrase(context.caption, text):
                continue
            if stage1_kind:
                if self.pool.answer_kinds.get(key) != stage1_kind:
                    continue
            elif classify_span(text, self.lexicon) is not None:
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

    def rank(self, candidates: list[Candidate], answer: str, kind: AnswerKind, rng: np.random.Generator) -> list[Candidate]:
        """Order candidates: family, corpus before fallbacks, similar length, canonical spelling, then seeded random.

        For kinds whose families hold interchangeable answers (`distractor_groups: different`),
        candidates of the answer's own family are dropped. Similar length keeps the correct
        option from standing out as the longest or shortest.
        """
        order = rng.permutation(len(candidates))
        shuffled = [candidates[index] for index in order]
        group = kind.group
        if group and self.lexicon.info(kind.key).distractor_groups == "different":
            shuffled = [candidate for candidate in shuffled if candidate.group != group]
            group = ""
        answer_length = max(len(answer), 1)

        def key(candidate: Candidate) -> tuple[int, int, int, int]:
            ratio = len(candidate.text) / answer_length
            length_misfit = 0 if 0.6 <= ratio <= 1.6 else 1
            fallback = 0 if candidate.source in ("corpus", "other-answers") else 1
            return (int(bool(group) and candidate.group != group), fallback, length_misfit, int(not candidate.canonical))

        return sorted(shuffled, key=key)

    # Stem and rationale -----------------------------------------------------------------------

    def lead(self, context: QAContext, options: list[str], answer_kind: str = OTHER) -> str:
        """Return a sentence naming the image type and subject that gives no option away.

        The image type and subject come from the supporting sentence when it names them (the
        panel the QA is about), else from the whole caption. A phrase is skipped when it shares a
        content word or a lexicon entry with an option. A subject of the answer's own kind is
        skipped too: for "which cells are shown in teal?" a lead "an image of astrocytes" would
        name a rival answer as what the image shows.
        """
        rival_kinds = _CELL_KINDS if answer_kind in _CELL_KINDS else {answer_kind}
        option_words = set().union(*(content_words(option) for option in options)) - _GENERIC_WORDS
        option_things = {(found.key, found.identity) for option in options for found in self.lexicon.find(option)}

        def reveals(phrase: str) -> bool:
            if (content_words(phrase) - _GENERIC_WORDS) & option_words:
                return True
            return any((found.key, found.identity) in option_things for found in self.lexicon.find(phrase))

        texts = [context.support_sentence(), context.caption]
        image_type = _GENERIC_IMAGE
        for text in texts:
            described = [phrase for pattern, phrase in _IMAGE_TYPES if text and pattern.search(text)]
            if described:
                # The first text that names an image type decides: another panel's type would mislead.
                image_type = next((phrase for phrase in described if not reveals(phrase)), _GENERIC_IMAGE)
                break
        for text in texts:
            for found in self.lexicon.find(text):
                if found.key not in _SUBJECT_KINDS or found.key in rival_kinds:
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
        named = info.kind in self.lexicon.kinds and info.kind != "outcome" or info.kind.startswith(QUANTITY)
        parts.append(f"The {info.noun} is therefore {answer}." if named else f"The answer is therefore {answer}.")
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

    With `containment`, also drop one that contains, is contained in, or is nearly the same
    string as them ("Ku" and "Ku80", "Imunofluorescence" and "immunofluorescence"), which may name
    the same thing. Quantities compare by equality only, because "5 μm" is inside "25 μm".
    """
    unique: list[Candidate] = []
    keys = [normalize_option(answer)]
    for candidate in candidates:
        key = normalize_option(candidate.text)
        if not key or any(key == other or (containment and _overlaps(key, other)) for other in keys):
            continue
        keys.append(key)
        unique.append(candidate)
    return unique


def _overlaps(first: str, second: str) -> bool:
    if first in second or second in first:
        return True
    matcher = SequenceMatcher(None, first, second)
    # The quick upper bounds rule out most pairs before the full comparison.
    return (
        matcher.real_quick_ratio() >= NEAR_DUPLICATE_RATIO
        and matcher.quick_ratio() >= NEAR_DUPLICATE_RATIO
        and matcher.ratio() >= NEAR_DUPLICATE_RATIO
    )


def _combine_sources(sources: Iterable[str]) -> str:
    return "+".join(dict.fromkeys(sources))


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
