"""Lexical grounding features and the caption sentence splitter.

These need no model: `lexical_overlap` measures how much of a QA statement's content vocabulary
occurs in the caption, `span_found` whether the answer span occurs in the caption, and
`split_sentences` cuts a caption into sentences for the NLI premise windows.
"""

from __future__ import annotations

import re
import unicodedata

STOPWORDS = frozenset(
    """
    a about above after again against all also am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just may me might more most must my myself no nor not now of off on once only or
    other our ours ourselves out over own same shall she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up upon
    very via was we were what when where which while who whom whose why will with within without
    would you your yours yourself yourselves
    """.split()
)
"""English function words, left out of the content vocabulary."""

_WORD = re.compile(r"\w+(?:[-'’]\w+)*")

# Abbreviations whose period does not end a sentence in figure captions.
_ABBREVIATIONS = frozenset(
    "al approx ca cf e.g eg etc fig figs i.e ie no nos ref refs resp sp spp st suppl vs viz".split()
)
# A sentence ends at ., ! or ? (optionally followed by closing quotes or brackets) when
# whitespace and an uppercase letter, a digit or an opening bracket follow, so a species name
# such as "E. coli" stays whole.
_SENTENCE_END = re.compile(r"[.!?][\"'’”)\]]*\s+(?=[A-Z0-9(\[“\"'])")


def normalize_text(text: str) -> str:
    """Return `text` NFKC-normalized, lowercased, with runs of whitespace collapsed to one space."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(text.split())


def words(text: str) -> list[str]:
    """Return the normalized word tokens of `text` (hyphenated and apostrophe words kept whole)."""
    return _WORD.findall(normalize_text(text))


def content_words(text: str) -> set[str]:
    """Return the words of `text` that are not stopwords or single characters."""
    return {word for word in words(text) if word not in STOPWORDS and len(word) > 1}


def lexical_overlap(statement: str, caption: str) -> float:
    """Return the share of the statement's content words that occur in the caption (0 to 1).

    A statement without content words gets 0.0: it carries no evidence of grounding.
    """
    statement_words = content_words(statement)
    if not statement_words:
        return 0.0
    caption_words = set(words(caption))
    return len(statement_words & caption_words) / len(statement_words)


def span_found(span: str, caption: str, start: int | None = None, end: int | None = None) -> bool:
    """Return whether the answer span occurs in the caption.

    The recorded character offsets are checked first; otherwise the normalized span is searched
    for in the normalized caption, ignoring punctuation at the span's ends.
    """
    if not span.strip():
        return False
    if start is not None and end is not None and 0 <= start < end <= len(caption) and caption[start:end] == span:
        return True
    needle = normalize_text(span).strip(" .,;:!?\"'()[]")
    return bool(needle) and needle in normalize_text(caption)


def split_sentences(text: str) -> list[str]:
    """Split a caption into sentences, keeping abbreviations such as `et al.` and `Fig.` intact.

    Joining the result with single spaces gives the caption with its whitespace collapsed.
    """
    text = " ".join(text.split())
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        candidate = text[start : match.start() + 1]
        last_word = candidate.rsplit(None, 1)[-1].rstrip(".").casefold() if candidate.strip() else ""
        if last_word in _ABBREVIATIONS:
            continue
        sentences.append(text[start : match.end()].strip())
        start = match.end()
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences
