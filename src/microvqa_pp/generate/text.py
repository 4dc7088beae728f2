"""Caption text: folding for span matching, and splitting into sentences and panels.

Folding maps a text to a form in which spelling variants compare equal. For every folded
character it keeps the range of original characters it came from, so a match in folded text
gives character offsets in the original caption. Folding applies compatibility decomposition
(NFKD, so `µ` becomes `μ` and `²` becomes `2`), drops combining accents, case-folds, spells
Greek letters out (`α` becomes `alpha`, `μ` and the word `micro` become `u`, so `µg`, `μg`, `ug`
and `microg` agree), unifies dashes, quotes and the multiplication sign, and collapses or removes
whitespace.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

GREEK_NAMES = {
    "α": "alpha", "β": "beta", "γ": "gamma", "δ": "delta", "ε": "epsilon", "ζ": "zeta",
    "η": "eta", "θ": "theta", "ι": "iota", "κ": "kappa", "λ": "lambda", "μ": "u", "ν": "nu",
    "ξ": "xi", "ο": "omicron", "π": "pi", "ρ": "rho", "σ": "sigma", "ς": "sigma", "τ": "tau",
    "υ": "upsilon", "φ": "phi", "ϕ": "phi", "χ": "chi", "ψ": "psi", "ω": "omega",
}  # fmt: skip
"""Lower-case Greek letters (after case folding) and their Latin spellings; `μ` is the SI prefix."""

SYMBOLS = {
    "‐": "-", "‑": "-", "‒": "-", "–": "-", "—": "-", "―": "-", "−": "-", "﹣": "-", "－": "-",
    "‘": "'", "’": "'", "‚": "'", "‛": "'", "′": "'", "“": '"', "”": '"', "„": '"', "″": '"',
    "×": "x", "✕": "x",
}  # fmt: skip
"""Dashes, quotes and the multiplication sign, mapped to their ASCII forms."""


@dataclass(frozen=True)
class Folded:
    """A folded text with the original character range of each folded character."""

    text: str
    starts: tuple[int, ...]
    ends: tuple[int, ...]

    def original_range(self, start: int, end: int) -> tuple[int, int]:
        """Return the original offsets `[start, end)` of the folded range `[start, end)`."""
        return self.starts[start], self.ends[end - 1]


def _fold_character(character: str) -> str:
    pieces = []
    for part in unicodedata.normalize("NFKD", character):
        if unicodedata.category(part) == "Mn":
            continue
        for lowered in part.casefold():
            pieces.append(GREEK_NAMES.get(lowered) or SYMBOLS.get(lowered, lowered))
    return "".join(pieces)


@lru_cache(maxsize=4096)
def fold(text: str, keep_spaces: bool = True) -> Folded:
    """Fold `text` for comparison; whitespace runs become one space, or vanish if not `keep_spaces`."""
    characters: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    previous_space = True
    for index, character in enumerate(text):
        if character.isspace():
            if keep_spaces and not previous_space:
                characters.append(" ")
                starts.append(index)
                ends.append(index + 1)
            previous_space = True
            continue
        previous_space = False
        for piece in _fold_character(character):
            characters.append(piece)
            starts.append(index)
            ends.append(index + 1)
    if keep_spaces and characters and characters[-1] == " ":
        del characters[-1], starts[-1], ends[-1]

    # The SI prefix spelled out: "micro" becomes "u", as "μ" does.
    joined = "".join(characters)
    position = joined.find("micro")
    while position >= 0:
        characters[position : position + 5] = ["u"]
        ends[position] = ends[position + 4]
        del starts[position + 1 : position + 5], ends[position + 1 : position + 5]
        joined = "".join(characters)
        position = joined.find("micro", position + 1)
    return Folded("".join(characters), tuple(starts), tuple(ends))


def folded_text(text: str, keep_spaces: bool = True) -> str:
    return fold(text, keep_spaces).text


_SPAN_TRIM = " \t\n.,;:!?\"'()[]{}"


def find_span(caption: str, span: str, near: tuple[int, int] | None = None) -> tuple[int, int] | None:
    """Return the offsets `[start, end)` of `span` in the original `caption`, or None.

    Matching ignores case, whitespace, accents, Unicode variants and Greek spellings (see the
    module docstring). A span that does not match is tried again without surrounding punctuation.
    Among several matches, those inside `near` (an original range, such as the supporting
    sentence) come first, then those written exactly as `span`, then those at word boundaries,
    then the earliest.
    """
    haystack = fold(caption, keep_spaces=False)
    for candidate in (span, span.strip(_SPAN_TRIM)):
        needle = folded_text(candidate, keep_spaces=False)
        if not needle:
            continue
        matches = []
        position = haystack.text.find(needle)
        while position >= 0:
            matches.append(haystack.original_range(position, position + len(needle)))
            position = haystack.text.find(needle, position + 1)
        if matches:
            return _best_match(caption, candidate.strip(), matches, near)
    return None


def _best_match(caption: str, span: str, matches: list[tuple[int, int]], near: tuple[int, int] | None) -> tuple[int, int]:
    def rank(match: tuple[int, int]) -> tuple[bool, bool, bool, int]:
        inside = near is not None and near[0] <= match[0] and match[1] <= near[1]
        exact = caption[match[0] : match[1]] == span
        return (not inside, not exact, not _at_word_boundaries(caption, *match), match[0])

    return min(matches, key=rank)


def _at_word_boundaries(text: str, start: int, end: int) -> bool:
    before = text[start - 1] if start > 0 else " "
    after = text[end] if end < len(text) else " "
    return not (before.isalnum() and text[start].isalnum()) and not (after.isalnum() and text[end - 1].isalnum())


def contains_phrase(text: str, phrase: str) -> bool:
    """Return whether `phrase` occurs in `text` as whole words, after folding both."""
    needle = folded_text(phrase).strip()
    if not needle:
        return False
    pattern = r"(?<![a-z0-9])" + re.escape(needle) + r"(?![a-z0-9])"
    return re.search(pattern, folded_text(text)) is not None


# Sentences and panels -------------------------------------------------------------------------

ABBREVIATIONS = {
    "al", "e.g", "i.e", "eg", "ie", "fig", "figs", "vs", "ca", "approx", "no", "nos", "n.s", "ref",
    "refs", "resp", "cf", "sp", "spp", "st", "dr", "mr", "mrs", "ms", "prof", "inc", "ltd", "co",
    "var", "subsp", "etc", "min", "max", "mag", "conc", "temp", "vol", "wt", "aa", "ab",
}  # fmt: skip
"""Words that end in a period without ending the sentence (compared in lower case)."""

_LETTER = r"[A-Za-z]"
_LABEL_BODY = rf"{_LETTER}(?:\s*(?:[-–—,]|and|&|to)\s*{_LETTER})*"
_PANEL_AT_START = re.compile(
    rf"^\s*(?:\((?P<paren>{_LABEL_BODY})\)(?:\s*[-–—]\s*\((?P<paren_end>{_LETTER})\))?"
    rf"|(?P<bare>{_LETTER})[.,:)](?=\s|[A-Z]))\s*"
)
_BOUNDARY = re.compile(r"[.!?](?=\s+[\"'(\[A-Z0-9]|\s*$|\s*(?:[A-Za-z][.,:)]|\([A-Za-z][^)]{0,12}\))\s)")


@dataclass(frozen=True)
class Sentence:
    """A caption sentence with its original offsets and the panels it is about.

    `panels` are the labels that start the sentence, e.g. ("B",) or ("C", "D"); `panel_text`
    is the label as written, without brackets (e.g. "C and D"). Sentences without a label of
    their own have no panels, even when they follow a labelled one.
    """

    text: str
    start: int
    end: int
    panels: tuple[str, ...] = ()
    panel_text: str = ""
    label_end: int = 0
    """Offset, relative to the sentence start, where the text after the panel label begins."""

    @property
    def body(self) -> str:
        """The sentence without its panel label."""
        return self.text[self.label_end :]


def expand_label(label: str) -> tuple[str, ...]:
    """Return the panel letters in a label such as `B-H`, `C, E, G, I` or `C and D`."""
    letters: list[str] = []
    parts = re.split(r"\s*(?:,|and|&)\s*", label.strip())
    for part in parts:
        bounds = re.fullmatch(r"([A-Za-z])\s*(?:[-–—]|to)\s*([A-Za-z])", part)
        if bounds:
            first, last = bounds.group(1), bounds.group(2)
            if ord(first) <= ord(last) and ord(last) - ord(first) < 26:
                letters.extend(chr(code) for code in range(ord(first), ord(last) + 1))
            continue
        if re.fullmatch(r"[A-Za-z]", part):
            letters.append(part)
    return tuple(letters)


def split_sentences(caption: str) -> list[Sentence]:
    """Split a caption into sentences and attach the panel label that starts each one."""
    pieces: list[tuple[int, int]] = []
    current = ""
    for piece in _split_at_boundaries(caption):
        split, current = _split_before_next_panel(caption, piece, current)
        pieces.extend(split)

    sentences = []
    for start, end in pieces:
        text = caption[start:end]
        stripped_start = len(text) - len(text.lstrip())
        text = text.strip()
        if not text:
            continue
        start += stripped_start
        end = start + len(text)
        panels, panel_text, label_end = _leading_panel(text)
        sentences.append(Sentence(text, start, end, panels, panel_text, label_end))
    return sentences


def sentence_at(sentences: list[Sentence], offset: int) -> Sentence | None:
    """Return the sentence that contains the original offset `offset`."""
    for sentence in sentences:
        if sentence.start <= offset < sentence.end:
            return sentence
    return None


def _split_at_boundaries(caption: str) -> list[tuple[int, int]]:
    pieces = []
    start = 0
    for match in _BOUNDARY.finditer(caption):
        position = match.start()
        if _is_abbreviation(caption, position, start):
            continue
        pieces.append((start, position + 1))
        start = position + 1
    if start < len(caption):
        pieces.append((start, len(caption)))
    return pieces


def _is_abbreviation(caption: str, period: int, piece_start: int) -> bool:
    """Return whether the period at `period` ends an abbreviation, initial or label, not a sentence."""
    if caption[period] != ".":
        return False
    word_match = re.search(r"([A-Za-z][A-Za-z.]*)$", caption[:period])
    if word_match is None:
        return False
    word = word_match.group(1)
    before = caption[word_match.start() - 1] if word_match.start() > 0 else " "
    # A lone letter is a panel label at the start of a sentence (a. Cells were ...), an initial
    # before a lower-case word (E. coli), or a lower-case panel label within a sentence, which
    # `_split_before_next_panel` splits before. After a digit or a symbol it is a unit or a panel
    # reference that can end a sentence ("37°C.", "Figure 2F.", "image from E. (G) ...").
    if len(word) == 1:
        if not (before.isspace() or before in "(["):
            return False
        if not caption[piece_start:period].strip()[:-1].strip():
            return True
        following = caption[period + 1 :].lstrip()[:1]
        return following.islower() or (word.islower() and following.isupper())
    return word.lower() in ABBREVIATIONS


def _leading_panel(text: str) -> tuple[tuple[str, ...], str, int]:
    match = _PANEL_AT_START.match(text)
    if match is None:
        return (), "", 0
    if match.group("paren") is not None:
        label = match.group("paren")
        if match.group("paren_end"):
            label = f"{label}-{match.group('paren_end')}"
    else:
        label = match.group("bare")
        # "A." or "A," followed by a lower-case word is ordinary text ("A, the ..."); a label
        # is followed by a capital, a digit or a bracket.
        following = text[match.end() : match.end() + 1]
        if following and not (following.isupper() or following.isdigit() or following in "([\"'"):
            return (), "", 0
    letters = expand_label(label)
    if not letters:
        return (), "", 0
    return letters, label, match.end()


def _split_before_next_panel(caption: str, piece: tuple[int, int], current: str) -> tuple[list[tuple[int, int]], str]:
    """Split a piece where the next panel starts without a period before its label.

    Captions such as "... group D1/BRCA2 b. Cells were ..." start panel b inside a sentence.
    Only the letter after the current panel (`current`, e.g. a then b) counts, so a mention
    such as "(B)" in running text does not split a sentence. Returns the pieces and the panel
    current after them.
    """
    start, end = piece
    text = caption[start:end]
    panels, _, _ = _leading_panel(text.strip())
    if panels:
        current = panels[-1]
    if len(current) != 1 or current in "zZ":
        return [piece], current

    following = chr(ord(current) + 1)
    label = re.escape(following)
    pattern = re.compile(rf"(?<=\s)(?:{label}[.,:]|\({label}\))\s+(?=[A-Z])")
    match = pattern.search(text, 3)
    if match is None:
        return [piece], current
    split = start + match.start()
    rest, current = _split_before_next_panel(caption, (split, end), following)
    return [(start, split)] + rest, current
