"""Span kinds and the corpus pool of same-kind spans that offline distractors are drawn from.

A kind is a family of answers that can replace each other in an option list: stains, fluorescent
reporters, organisms, cell lines, cell types, imaging techniques, colours, structures, labelled
proteins (from `span_lexicon.json` plus a gene-symbol pattern), and quantities with one unit
(`quantity:μM`, `quantity:×` for magnifications, ...). `SpanPool` indexes every mention of every
kind in the captions of a run, so a distractor for "DAPI" is another stain that some other
caption of the corpus mentions, and a distractor for "10 μM" is another micromolar value.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Iterable

from microvqa_pp.mcq.text import canonical_characters, normalize_option

QUANTITY = "quantity"
OTHER = "other"

# Canonical unit, its dimension, and the spellings that captions use (matched case-sensitively,
# because `mM` and `mm` differ).
_UNITS: list[tuple[str, str, tuple[str, ...]]] = [
    ("μg/ml", "concentration", ("μg/ml", "μg/mL", "ug/ml", "ug/mL", "μg ml-1", "μg mL-1")),
    ("mg/ml", "concentration", ("mg/ml", "mg/mL", "mg ml-1", "mg mL-1")),
    ("ng/ml", "concentration", ("ng/ml", "ng/mL", "ng ml-1", "ng mL-1")),
    ("pg/ml", "concentration", ("pg/ml", "pg/mL")),
    ("U/ml", "concentration", ("U/ml", "U/mL")),
    ("mg/kg", "dose", ("mg/kg", "mg kg-1")),
    ("pM", "concentration", ("pM",)),
    ("nM", "concentration", ("nM",)),
    ("μM", "concentration", ("μM", "uM")),
    ("mM", "concentration", ("mM",)),
    ("M", "concentration", ("M",)),
    ("nm", "length", ("nm",)),
    ("μm", "length", ("μm", "um")),
    ("mm", "length", ("mm",)),
    ("cm", "length", ("cm",)),
    ("ms", "time", ("ms",)),
    ("s", "time", ("s", "sec", "seconds")),
    ("min", "time", ("min", "mins", "minutes", "minute")),
    ("h", "time", ("h", "hr", "hrs", "hours", "hour")),
    ("d", "time", ("days", "day")),
    ("Gy", "dose", ("Gy",)),
    ("°C", "temperature", ("°C", "° C", "ºC")),
    ("kDa", "mass", ("kDa",)),
    ("%", "percentage", ("%",)),
]
_UNIT_OF_SPELLING = {spelling: (canonical, dimension) for canonical, dimension, spellings in _UNITS for spelling in spellings}
_UNIT_DIMENSIONS = {canonical: dimension for canonical, dimension, _ in _UNITS}
_UNIT_DIMENSIONS["×"] = "magnification"

_NUMBER_WORDS = {
    word: float(value)
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
} | {"thirty": 30.0, "forty": 40.0, "fifty": 50.0, "sixty": 60.0, "seventy": 70.0, "eighty": 80.0, "ninety": 90.0, "hundred": 100.0}
_NUMBER = r"\d+(?:,\d{3})*(?:\.\d+)?"
_SPELLED_NUMBER = "|".join(sorted(_NUMBER_WORDS, key=len, reverse=True))
_UNIT_ALTERNATIVES = "|".join(re.escape(spelling) for spelling in sorted(_UNIT_OF_SPELLING, key=len, reverse=True))
# A number with a unit, not the second number of a range such as 560–650 nm.
_QUANTITY_PATTERN = re.compile(rf"(?<![\w.,\-–])({_NUMBER}|(?i:{_SPELLED_NUMBER}))\s?({_UNIT_ALTERNATIVES})(?![\w/])")
_MAGNIFICATION_PATTERN = re.compile(rf"(?:[×x]\s?({_NUMBER})(?![\w.])|(?<![\w.,])({_NUMBER})\s?×)")
# Gene and protein symbols such as RAD51, 53BP1 or ROBO2. Single letters plus a digit (S1, G1),
# strain numbers with four or more digits (SMR8350) and the chemical formulas below are excluded.
_SYMBOL_PATTERN = re.compile(r"(?<![\w-])(?:[A-Z][A-Za-z]{1,6}\d{1,3}[A-Za-z]?|\d{1,3}[A-Z]{2,4}\d?)(?![\w-])")
_NOT_SYMBOLS = frozenset({"CO2", "H2O", "H2O2", "O2", "N2", "H2", "NO2", "SO4", "PO4", "NH4", "Ca2", "Mg2", "Fe2", "Fe3", "Zn2", "MgCl2", "CaCl2"})

# Typical incubation temperatures, used when the corpus has too few other values in °C.
_COMMON_TEMPERATURES = (4.0, 16.0, 25.0, 30.0, 37.0, 42.0, 65.0, 95.0)
_COMMON_MAGNIFICATIONS = (10.0, 20.0, 40.0, 63.0, 100.0, 200.0, 400.0, 1000.0)
_SCALE_FACTORS = (0.5, 2.0, 5.0, 0.2, 10.0, 0.1)


@dataclass(frozen=True)
class KindInfo:
    """Wording for one kind in questions and rationales: its noun, a generic question, the visual evidence."""

    kind: str
    noun: str
    plural: str
    question: str
    """A question that fits any answer of the kind; empty when none does (effects keep the stage-1 question)."""
    evidence: str
    distractor_groups: str = "same"
    """`same`: distractors of the answer's family first; `different`: only distractors of other families."""


@dataclass(frozen=True)
class LexiconEntry:
    """One thing with its spellings; `forms[0]` is canonical."""

    kind: str
    index: int
    forms: tuple[str, ...]
    group: str = ""


@dataclass(frozen=True)
class Mention:
    """One occurrence of a kind in a text: the kind key, the identity within the kind, the surface text.

    `key` is a lexicon kind, `marker`, or `quantity:UNIT`. `identity` is the lexicon entry index,
    the normalised symbol, or the numeric value. `value` is set for quantities only.
    """

    key: str
    identity: Any
    text: str
    start: int
    end: int
    group: str = ""
    value: float | None = None


@dataclass
class Lexicon:
    """The kinds and entries of `span_lexicon.json`, with one compiled matcher per kind."""

    version: int
    kinds: dict[str, KindInfo]
    entries: dict[str, list[LexiconEntry]]
    _matchers: dict[str, tuple[re.Pattern[str], re.Pattern[str] | None, dict[str, LexiconEntry]]] = field(default_factory=dict)

    @classmethod
    def load(cls) -> "Lexicon":
        data = json.loads(resources.files("microvqa_pp.mcq").joinpath("span_lexicon.json").read_text(encoding="utf-8"))
        kinds: dict[str, KindInfo] = {}
        entries: dict[str, list[LexiconEntry]] = {}
        for kind, spec in data["kinds"].items():
            kinds[kind] = KindInfo(
                kind, spec["noun"], spec["plural"], spec["question"], spec["evidence"], spec.get("distractor_groups", "same")
            )
            entries[kind] = [
                LexiconEntry(kind, index, tuple(canonical_characters(form) for form in entry["forms"]), entry.get("group", ""))
                for index, entry in enumerate(spec["entries"])
            ]
        lexicon = cls(int(data["version"]), kinds, entries)
        for kind in entries:
            lexicon._matchers[kind] = _compile(entries[kind])
        return lexicon

    def find(self, text: str) -> list[Mention]:
        """Return every mention of a lexicon kind, quantity or protein symbol in `text`.

        Longer matches win over the shorter ones they overlap (`uranyl acetate/lead citrate`
        over `uranyl acetate`), and a symbol that a lexicon entry covers is not repeated as a marker.
        """
        text = canonical_characters(text)
        found: list[Mention] = []
        for kind, (insensitive, sensitive, by_form) in self._matchers.items():
            for pattern in (insensitive, sensitive):
                if pattern is None:
                    continue
                for match in pattern.finditer(text):
                    entry = by_form[match.group(0) if pattern is sensitive else match.group(0).casefold()]
                    found.append(Mention(kind, entry.index, match.group(0), match.start(), match.end(), entry.group))
        found.extend(find_quantities(text))
        # Lexicon mentions come first, so an overlapping symbol match of the same length is dropped.
        for match in _SYMBOL_PATTERN.finditer(text):
            if match.group(0) not in _NOT_SYMBOLS:
                found.append(Mention("marker", normalize_option(match.group(0)), match.group(0), match.start(), match.end()))
        return _drop_overlaps(found)

    def entry(self, key: str, identity: Any) -> LexiconEntry | None:
        if key in self.entries and isinstance(identity, int):
            return self.entries[key][identity]
        return None

    def info(self, key: str) -> KindInfo:
        """Return the wording for the kind `key` (for quantities, by their dimension)."""
        if key in self.kinds:
            return self.kinds[key]
        if key.startswith(QUANTITY):
            unit = key.partition(":")[2]
            return _quantity_info(unit)
        return KindInfo(OTHER, "answer", "answers", "Which of the following is shown in this image?", "The image shows the feature that the question asks about.")


def _compile(entries: list[LexiconEntry]) -> tuple[re.Pattern[str], re.Pattern[str] | None, dict[str, LexiconEntry]]:
    """Compile one case-insensitive pattern for long forms and one case-sensitive one for short forms."""
    by_form: dict[str, LexiconEntry] = {}
    long_forms, short_forms = [], []
    for entry in entries:
        for form in entry.forms:
            if len(form) <= 4:
                short_forms.append(form)
                by_form[form] = entry
            else:
                long_forms.append(form)
                by_form[form.casefold()] = entry

    def alternatives(forms: list[str]) -> str:
        return "|".join(re.escape(form) for form in sorted(set(forms), key=len, reverse=True))

    # A hyphen may follow a form ("H&E-stained", "Ku-deficient") but not precede it, so "HE" is
    # not found in "GamGFP-HE".
    insensitive = re.compile(rf"(?<![\w-])(?:{alternatives(long_forms)})(?!\w)", re.IGNORECASE)
    sensitive = re.compile(rf"(?<![\w-])(?:{alternatives(short_forms)})(?!\w)") if short_forms else None
    return insensitive, sensitive, by_form


def _drop_overlaps(mentions: list[Mention]) -> list[Mention]:
    kept: list[Mention] = []
    for mention in sorted(mentions, key=lambda item: (item.start, -(item.end - item.start))):
        if kept and mention.start < kept[-1].end:
            continue
        kept.append(mention)
    return kept


def _quantity_info(unit: str) -> KindInfo:
    dimension = _UNIT_DIMENSIONS.get(unit, "value")
    questions = {
        "concentration": ("concentration", "concentrations", "At what concentration was the treatment applied to the sample in this image?"),
        "dose": ("dose", "doses", "What dose did the sample in this image receive?"),
        "length": ("length", "lengths", "What length does the scale bar in this image represent?"),
        "time": ("time", "times", "At what time point was the sample in this image imaged?"),
        "temperature": ("temperature", "temperatures", "At what temperature was the sample in this image incubated?"),
        "magnification": ("magnification", "magnifications", "At what magnification was this image acquired?"),
        "percentage": ("percentage", "percentages", "What percentage does the image report?"),
        "mass": ("molecular mass", "molecular masses", "What molecular mass does the labelled band in this image have?"),
    }
    noun, plural, question = questions.get(dimension, ("value", "values", "What value does this image report?"))
    return KindInfo(f"{QUANTITY}:{unit}", noun, plural, question, "The labels and scale of the image show the value.")


def parse_number(text: str) -> float:
    """Return the value of a number written with digits ("8,000") or as a word ("Twenty")."""
    if text.casefold() in _NUMBER_WORDS:
        return _NUMBER_WORDS[text.casefold()]
    return float(text.replace(",", ""))


def find_quantities(text: str) -> list[Mention]:
    """Return the numbers with a unit and the magnifications in `text`."""
    found = []
    for match in _QUANTITY_PATTERN.finditer(text):
        unit, _ = _UNIT_OF_SPELLING[match.group(2)]
        value = parse_number(match.group(1))
        found.append(Mention(f"{QUANTITY}:{unit}", value, match.group(0), match.start(), match.end(), value=value))
    for match in _MAGNIFICATION_PATTERN.finditer(text):
        value = parse_number(match.group(1) or match.group(2))
        found.append(Mention(f"{QUANTITY}:×", value, match.group(0), match.start(), match.end(), value=value))
    return found


@cache
def default_lexicon() -> Lexicon:
    return Lexicon.load()


def classify_span(span: str, lexicon: Lexicon | None = None) -> Mention | None:
    """Return the mention that makes up most of `span`, or None when no kind covers half of it.

    "α-bungarotoxin (BTX)" is a stain; "10 μM" is `quantity:μM`; "RAD51" a marker.
    """
    lexicon = lexicon or default_lexicon()
    span = canonical_characters(span).strip()
    mentions = lexicon.find(span)
    if not mentions:
        return None
    best = max(mentions, key=lambda mention: mention.end - mention.start)
    # Characters that count: letters and digits, so "(BTX)" punctuation does not dilute coverage.
    significant = sum(character.isalnum() for character in span)
    same_thing = [mention for mention in mentions if (mention.key, mention.identity) == (best.key, best.identity)]
    covered = sum(sum(character.isalnum() for character in mention.text) for mention in same_thing)
    if significant == 0 or covered / significant < 0.5:
        return None
    return best


@dataclass
class PoolItem:
    """One distinct span of a kind in the corpus."""

    key: str
    identity: Any
    text: str
    group: str
    value: float | None


class SpanPool:
    """Every distinct same-kind span of a corpus of captions, and the answers of its QAs, for offline distractors."""

    def __init__(self, lexicon: Lexicon | None = None):
        self.lexicon = lexicon or default_lexicon()
        self.items: dict[str, dict[Any, PoolItem]] = defaultdict(dict)
        self.answers: dict[str, str] = {}
        """Answers of the run's QAs by normalised text, the distractors for answers of no known kind."""
        self.answer_figures: dict[str, set[str]] = defaultdict(set)
        self.answer_kinds: dict[str, str] = {}
        """Stage-1 kind of each answer, when stage 1 gives one."""

    def add_caption(self, figure_id: str, caption: str) -> None:
        for mention in self.lexicon.find(caption):
            if mention.identity not in self.items[mention.key]:
                self.items[mention.key][mention.identity] = PoolItem(mention.key, mention.identity, mention.text, mention.group, mention.value)

    def add_answer(self, figure_id: str, answer: str, kind: str = "") -> None:
        key = normalize_option(answer)
        if key:
            self.answers.setdefault(key, canonical_characters(answer).strip())
            self.answer_figures[key].add(figure_id)
            if kind:
                self.answer_kinds.setdefault(key, kind)

    @classmethod
    def from_captions(cls, captions: Iterable[tuple[str, str]], lexicon: Lexicon | None = None) -> "SpanPool":
        pool = cls(lexicon)
        for figure_id, caption in captions:
            pool.add_caption(figure_id, caption)
        return pool

    def same_kind(self, key: str) -> list[PoolItem]:
        """Return the pool's spans of kind `key` in a stable order."""
        return sorted(self.items.get(key, {}).values(), key=lambda item: str(item.identity))

    def counts(self) -> dict[str, int]:
        return {key: len(values) for key, values in sorted(self.items.items())}

    def to_json(self) -> dict[str, Any]:
        """Return the pool as JSON-compatible data (lexicon identities are entry indices, so the version is kept)."""
        return {
            "lexicon_version": self.lexicon.version,
            "items": [
                {"key": item.key, "identity": item.identity, "text": item.text, "group": item.group, "value": item.value}
                for key in sorted(self.items)
                for item in self.same_kind(key)
            ],
            "answers": [
                {"key": key, "text": text, "kind": self.answer_kinds.get(key, ""), "figures": sorted(self.answer_figures[key])}
                for key, text in sorted(self.answers.items())
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], lexicon: Lexicon | None = None) -> "SpanPool":
        pool = cls(lexicon)
        if data.get("lexicon_version") != pool.lexicon.version:
            raise ValueError(
                f"span pool was built with lexicon version {data.get('lexicon_version')}, expected "
                f"{pool.lexicon.version}; build it again from the captions"
            )
        for row in data["items"]:
            pool.items[row["key"]][row["identity"]] = PoolItem(row["key"], row["identity"], row["text"], row["group"], row["value"])
        for row in data["answers"]:
            pool.answers[row["key"]] = row["text"]
            pool.answer_figures[row["key"]] = set(row["figures"])
            if row.get("kind"):
                pool.answer_kinds[row["key"]] = row["kind"]
        return pool


def format_like(value: float, template_number: str) -> str:
    """Format `value` like `template_number`: its decimals (or enough for two significant digits), its commas.

    Trailing zeros are dropped, so 2 × 2.4 gives "4.8" and 10 × 2.4 gives "24".
    """
    decimals = len(template_number.split(".")[1]) if "." in template_number else 0
    if value and abs(value) < 10:
        decimals = max(decimals, 1 - int(math.floor(math.log10(abs(value)))))
    separator = "," if "," in template_number else ""
    text = f"{value:{separator}.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def replace_number(answer: str, mention: Mention, value: float) -> str:
    """Return `answer` with the number of the quantity `mention` replaced by `value`, in digits."""
    number = re.search(rf"{_NUMBER}|(?i:{_SPELLED_NUMBER})", mention.text)
    assert number is not None
    new_text = mention.text[: number.start()] + format_like(value, number.group(0)) + mention.text[number.end() :]
    return answer[: mention.start] + new_text + answer[mention.end :]


def fallback_values(key: str, value: float) -> list[float]:
    """Return plausible other values of a quantity when the corpus has too few: scaled or typical ones."""
    unit = key.partition(":")[2]
    if unit == "°C":
        candidates = list(_COMMON_TEMPERATURES)
    elif unit == "×":
        candidates = list(_COMMON_MAGNIFICATIONS)
    else:
        candidates = [value * factor for factor in _SCALE_FACTORS]
        if unit == "%":
            candidates = [candidate for candidate in candidates if 0 < candidate <= 100]
    return [candidate for candidate in candidates if not math.isclose(candidate, value)]
