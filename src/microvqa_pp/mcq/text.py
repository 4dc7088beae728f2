"""Text normalisation and word matching shared by validation, distractors and the no-image check."""

from __future__ import annotations

import re
import unicodedata

_NON_WORD = re.compile(r"[^\w%]+")
_WORD = re.compile(r"[\w%]+")
_PREFIX = re.compile(r"^\s*(?:\(?[1-9][0-9]?[).:]|\(?[A-Ja-j][).:])\s+")

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


def strip_option_prefix(text: str) -> str:
    """Remove a leading option label such as `1) `, `(2) `, `B. ` or `c: `."""
    return _PREFIX.sub("", text, count=1).strip()


def sentence_case(text: str) -> str:
    """Capitalise the first letter unless the first word is an acronym or starts lower-case by design (mCherry)."""
    if not text:
        return text
    first_word = text.split()[0]
    if any(character.isupper() for character in first_word[1:]) or any(character.isdigit() for character in first_word):
        return text
    return text[0].upper() + text[1:]
