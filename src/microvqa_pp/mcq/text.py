"""Text normalisation and word matching shared by validation, distractors and the no-image check."""

from __future__ import annotations

import re
import unicodedata

_NON_WORD = re.compile(r"[^\w%]+")
_WORD = re.compile(r"[\w%]+")
_LABEL = re.compile(r"^\s*\(?([1-9][0-9]?|[A-Ja-j])[).:]\s+")
_PAREN_LABEL = re.compile(r"^\s*(?:\(?[1-9][0-9]?\)|\([A-Ja-j]\))\s+")

STOPWORDS = frozenset(
    """a an and are as at be by can could did do does for from has have how in into is it its of on
    or that the their these this those to under using was were what when where which while who whose
    why will with within would shown seen image images figure panel panels most likely following best
    based observed""".split()
)
"""Words that carry no content for overlap between a stem and an option."""


def canonical_characters(text: str) -> str:
    """Apply NFKC and map look-alike characters (micro sign, dashes, quotes) to one form."""
    text = unicodedata.normalize("NFKC", text)
    text = text.replace("\u00b5", "\u03bc")
    text = re.sub(r"[\u2010-\u2015\u2212]", "-", text)
    text = re.sub(r"[\u2018\u2019\u201b\u2032]", "'", text)
    return re.sub(r"[\u201c\u201d\u201f\u2033]", '"', text)


def normalize_option(text: str) -> str:
    """Return the comparison key of an option: case, spacing and punctuation removed.

    `"H&E"` and `"HE"` share a key, as do `"10 μM"` and `"10μM"`.
    """
    return _NON_WORD.sub("", canonical_characters(text).casefold())


def words(text: str) -> list[str]:
    """Return the lower-case word tokens of `text` (letters, digits and `%`)."""
    return _WORD.findall(canonical_characters(text).casefold())


def content_words(text: str) -> set[str]:
    """Return the words of `text` that are not stopwords, with a plural `s` removed."""
    result = set()
    for word in words(text):
        if word in STOPWORDS or len(word) < 2:
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        result.add(word)
    return result


def contains_phrase(text: str, phrase: str) -> bool:
    """Return whether the words of `phrase` occur in `text` as a contiguous word sequence."""
    needle = words(phrase)
    if not needle:
        return False
    haystack = words(text)
    width = len(needle)
    return any(haystack[start : start + width] == needle for start in range(len(haystack) - width + 1))


def longest_shared_run(first: str, second: str) -> int:
    """Return the length, in words, of the longest word sequence that both texts contain."""
    first_words = words(first)
    second_words = words(second)
    if not first_words or not second_words:
        return 0
    best = 0
    previous = [0] * (len(second_words) + 1)
    for first_word in first_words:
        current = [0] * (len(second_words) + 1)
        for index, second_word in enumerate(second_words, start=1):
            if first_word == second_word:
                current[index] = previous[index - 1] + 1
                best = max(best, current[index])
        previous = current
    return best


def strip_option_labels(options: list[str]) -> list[str]:
    """Remove option labels that a model added: `(1) `, `2) ` or `(B) ` always, and `A. `, `b: `
    or `1. ` only when every option carries them in sequence, so "E. coli" keeps its "E. "."""
    matches = [_LABEL.match(option) for option in options]
    labels = [match.group(1) if match else None for match in matches]
    if all(labels) and _in_sequence(labels):  # type: ignore[arg-type]
        return [option[match.end() :].strip() for option, match in zip(options, matches)]  # type: ignore[union-attr]
    return [strip_option_prefix(option) for option in options]


def strip_option_prefix(text: str) -> str:
    """Remove a label that cannot be part of an answer: `(1) `, `2) ` or `(B) `."""
    return _PAREN_LABEL.sub("", text, count=1).strip()


def resolve_correct_answer(correct: str, raw_options: list[str], options: list[str]) -> str:
    """Return the option text that a reply's `correct_answer` names: the option itself, its
    labelled form, or a bare label such as `B` or `(2)`."""
    correct = correct.strip()
    if correct in raw_options:
        return options[raw_options.index(correct)]
    bare = re.fullmatch(r"\(?([1-9]|[A-Ja-j])\)?[.:]?", correct)
    if bare:
        label = bare.group(1)
        index = int(label) - 1 if label.isdigit() else ord(label.upper()) - ord("A")
        if 0 <= index < len(options):
            return options[index]
    return strip_option_prefix(correct)


def _in_sequence(labels: list[str]) -> bool:
    if all(label.isdigit() for label in labels):
        return [int(label) for label in labels] == list(range(1, len(labels) + 1))
    return [label.upper() for label in labels] == [chr(ord("A") + index) for index in range(len(labels))]
