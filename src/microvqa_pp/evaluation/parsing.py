"""Answer parsers: MicroVQA's reference regex, and a robust parser reported beside it.

Both return the 1-based number of the chosen option, or None. Neither ever guesses: a reply
without a readable answer is unparsed and scored wrong.

The reference parser is MicroVQA's own (`REGEX_PATTERN` in `eval/eval.py` of the GitHub
repository jmhb0/microvqa, commit 0868fdf): `re.search` of
`answer is \\*?\\*?\\(?([0-9])\\)?\\*?\\*?`, case-sensitive, first match wins, one digit only.

The robust parser reads what the reference regex misses: letters as well as numbers, `Answer:`
and `\\boxed{}` forms, markdown emphasis, option text restated instead of its number, and
replies that revise themselves (the revised answer wins). A reply that states several different
answers without marking one as its final one is unparsed, not read as its first answer. A
mention of an option as a distractor ("option 3 is the most likely distractor") is no answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

REFERENCE_PATTERN = re.compile(r"answer is \*?\*?\(?([0-9])\)?\*?\*?")

LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class ParsedAnswer:
    """A parser's reading of one reply.

    `option` is the 1-based option number, or None when the reply is unparsed. `reason` names
    the rule that decided: for the robust parser `statement`, `revised`, `bare`, `option_text`,
    or, when unparsed, `conflicting`, `out_of_range` or `no_answer`.
    """

    option: int | None
    reason: str

    @property
    def parsed(self) -> bool:
        return self.option is not None


def parse_reference(reply: str) -> ParsedAnswer:
    """Read the answer exactly as MicroVQA's reference evaluation does.

    The option is returned as matched, even when it is outside the question's options. The
    reference metrics decide what counts as a valid answer (`metrics.REFERENCE_VALID_OPTIONS`).
    """
    match = REFERENCE_PATTERN.search(reply)
    if match is None:
        return ParsedAnswer(None, "no_answer")
    return ParsedAnswer(int(match.group(1)), "statement")


# The robust parser ----------------------------------------------------------------------------

# An option label: a one- or two-digit number that is not part of a decimal, a word or a
# quantity ("2.5", "2nd", "2-fold", "12 µm", "5 min"), or a capital letter on its own.
_UNIT = r"(?:%|[µμu]m\b|nm\b|mm\b|cm\b|min\b|ms\b|s\b|h\b|hours?\b|days?\b|[µμun]?M\b|k?Da\b|x\b|×|fold\b|times\b)"
_NUMBER = r"(?P<number>[0-9]{1,2})(?![0-9]|[.,][0-9]|-?[A-Za-z]|\s*" + _UNIT + ")"
_LETTER = r"(?P<letter>[A-J])(?![A-Za-z0-9'’-])"
_LABEL = rf"[(\[]?\s*(?:{_NUMBER}|{_LETTER})\s*[)\]]?"
_OPTION_WORD = r"(?:(?i:option|choice)\s*)?"

_STATEMENT_PATTERNS = [
    # "The answer is (3)", "Final answer: B", "the correct answer would be option 2".
    re.compile(
        r"(?i:\banswers?\b)"
        r"(?:\s+(?i:is|would\s+be|should\s+be|must\s+be|will\s+be|appears\s+to\s+be|seems\s+to\s+be))?"
        r"\s*(?:[:=\-–]\s*)?(?:(?i:is)\s+)?" + _OPTION_WORD + _LABEL
    ),
    # "The correct option is (2)", "the best choice is B".
    re.compile(
        r"(?i:\b(?:correct|right|best)\s+(?:option|choice)\s+(?:is|would\s+be))\s*:?\s*" + _OPTION_WORD + _LABEL
    ),
    # "I choose (2)", "I would select option B", "I'll go with 3".
    re.compile(r"(?i:\b(?:choose|select|pick|go\s+with)\b)\s+" + _OPTION_WORD + _LABEL),
    # "Option 3 is correct", "(B) is the best answer", "choice 2 is the most likely".
    re.compile(
        r"(?:(?i:\b(?:option|choice))\s*|(?=[(\[]))" + _LABEL
        + r"\s+(?i:is\s+(?:the\s+)?(?:correct|right|best|most\s+(?:likely|appropriate|plausible|consistent)))"
    ),
    # LaTeX: "\boxed{3}", "\boxed{\text{B}}".
    re.compile(r"\\boxed\{\s*(?:\\text\{\s*)?" + _LABEL + r"\s*\}?\s*\}"),
]

# "The answer is increased laser power ..." when a reply restates an option instead of its number.
_ANSWER_CLAUSE = re.compile(
    r"(?i:\banswer\b(?:\s+(?:is|would\s+be|should\s+be))?\s*(?:[:=\-–]|\bis\b))\s*(?P<clause>[^\n]+)"
)

# "(2) or (3)", "B/C", "2 and 3" right after a statement: the reply hedges between options.
_HEDGE = re.compile(r"\s*(?:or|and|/|,)\s*" + _OPTION_WORD + r"[(\[]?\s*(?:[0-9]{1,2}|[A-J])\b")

# A statement whose next words call the option wrong ("option 3 is the most likely distractor",
# "(1) is the most plausible wrong answer") is a remark about a distractor, not an answer.
_DISTRACTOR_TAIL = re.compile(
    r"\s*(?:(?:a|an|the|one|option|choice|answer|to\s+be|as)\s+)*"
    r"(?:distractors?|wrong|incorrect|decoys?|traps?|red\s+herrings?|excluded|eliminated|ruled\s+out)\b",
    re.IGNORECASE,
)

# Words that mark a later statement as the reply's final or corrected answer.
_REVISION_CUE = re.compile(
    r"(?i:\bfinal\b|\bactually\b|\bwait\b|second\s+thought|reconsider|re-?evaluat|re-?examin"
    r"|upon\s+(?:further\s+)?reflection|on\s+reflection|correction|\bcorrect(?:ed|ing)\s+(?:my|myself|the)"
    r"|revis|\binstead\b|chang(?:e|ing)\s+my|\bi\s+was\s+wrong|\bmistake\b|double-?check|re-?check"
    r"|looking\s+again|closer\s+look|on\s+closer|\bin\s+conclusion\b|\bhowever\b)"
)
_REVISION_WINDOW = 120
"""Characters before a statement searched for a revision cue."""

# A whole reply (or its last line) that is only an option label: "3", "(B)", "**2.**", "Option C".
_BARE = re.compile(r"^\W*" + _OPTION_WORD + r"[(\[]?\s*(?P<number>[0-9]{1,2}|(?P<letter>[A-J]))\s*[)\]]?\W*$")

_MARKDOWN = re.compile(r"\*\*|__|(?<!\w)\*(?!\s)|(?<!\s)\*(?!\w)|`")
_LATEX_TEXT = re.compile(r"\\(?:text|textbf|mathrm)\{([^{}]*)\}")


@dataclass(frozen=True)
class _Statement:
    start: int
    end: int
    option: int | None
    """1-based option, or None when the label is outside the question's options."""
    hedged: bool


def parse_robust(reply: str, choices: Sequence[str]) -> ParsedAnswer:
    """Read the answer of a reply to a question with `choices`, without ever guessing."""
    text = _clean(reply)
    statements = _statements(text, len(choices))
    if statements:
        return _decide(text, statements)

    restated = _restated_option(text, choices)
    if restated is not None:
        return restated

    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    candidates = [text.strip()] + ([lines[-1]] if lines else [])
    for candidate in candidates:
        match = _BARE.match(candidate)
        if match is None:
            continue
        option = _option_number(match.group("number"), len(choices))
        if option is None:
            return ParsedAnswer(None, "out_of_range")
        return ParsedAnswer(option, "bare")
    return ParsedAnswer(None, "no_answer")


def _clean(reply: str) -> str:
    """Drop markdown emphasis and LaTeX text wrappers, which models put around their answers."""
    text = _LATEX_TEXT.sub(r"\1", reply)
    text = _MARKDOWN.sub("", text)
    return text.replace("\u00a0", " ")


def _option_number(label: str, option_count: int) -> int | None:
    """Map a label ("3" or "C") to a 1-based option number, or None when outside the options."""
    number = int(label) if label.isdigit() else LETTERS.index(label) + 1
    return number if 1 <= number <= option_count else None


def _statements(text: str, option_count: int) -> list[_Statement]:
    """Find every explicit answer statement, in reply order, without overlaps."""
    found: list[_Statement] = []
    for pattern in _STATEMENT_PATTERNS:
        for match in pattern.finditer(text):
            label = match.group("number") or match.group("letter")
            if match.group("letter") and LETTERS.index(label) >= option_count:
                # A capital letter beyond the options is a word ("I think"), not a label.
                continue
            if _DISTRACTOR_TAIL.match(text, match.end()):
                continue
            hedged = _HEDGE.match(text, match.end()) is not None
            found.append(_Statement(match.start(), match.end(), _option_number(label, option_count), hedged))

    found.sort(key=lambda statement: statement.start)
    statements: list[_Statement] = []
    for statement in found:
        if statements and statement.start < statements[-1].end:
            continue
        statements.append(statement)
    return statements


def _decide(text: str, statements: list[_Statement]) -> ParsedAnswer:
    """Turn the answer statements of a reply into one answer, or unparsed when they conflict."""
    last = statements[-1]
    distinct = {statement.option for statement in statements}
    if len(distinct) == 1 and not any(statement.hedged for statement in statements):
        if last.option is None:
            return ParsedAnswer(None, "out_of_range")
        return ParsedAnswer(last.option, "statement")

    # Different answers (or a hedge): only a last statement marked as final or corrected wins.
    previous_end = statements[-2].end if len(statements) > 1 else 0
    window = text[max(previous_end, last.start - _REVISION_WINDOW) : last.start]
    if len(statements) > 1 and not last.hedged and _REVISION_CUE.search(window):
        if last.option is None:
            return ParsedAnswer(None, "out_of_range")
        return ParsedAnswer(last.option, "revised")
    return ParsedAnswer(None, "conflicting")


def _restated_option(text: str, choices: Sequence[str]) -> ParsedAnswer | None:
    """Find an option restated by its text after "answer is", or as the whole reply."""
    fragments = [match.group("clause") for match in _ANSWER_CLAUSE.finditer(text)]
    stripped = text.strip()
    if "\n" not in stripped and not fragments:
        fragments = [stripped]

    answers: list[int] = []
    for fragment in fragments:
        matched = match_option_text(fragment, choices)
        if len(matched) > 1:
            return ParsedAnswer(None, "conflicting")
        answers.extend(matched)
    if not answers:
        return None
    if len(set(answers)) > 1 and not _REVISION_CUE.search(text):
        return ParsedAnswer(None, "conflicting")
    return ParsedAnswer(answers[-1], "option_text")


_NON_WORD = re.compile(r"[^a-z0-9]+")
_MIN_OPTION_CHARS = 3
_MIN_FRAGMENT_CHARS = 12
_MIN_COVERED_SHARE = 0.6


def _normalise(text: str) -> str:
    return _NON_WORD.sub(" ", text.lower()).strip()


def match_option_text(fragment: str, choices: Sequence[str]) -> list[int]:
    """Return the 1-based options whose text `fragment` restates.

    Texts are compared in lower case without punctuation. An option matches when its whole text
    occurs in the fragment. It also matches when the fragment, at least 12 characters long, is a
    part of the option that covers at least 60 % of it (a shortened restatement).
    When one matching option contains another ("Golgi" and "Golgi and ER"), the longer one wins.
    """
    normalised_fragment = _normalise(fragment)
    matched: dict[int, str] = {}
    for number, choice in enumerate(choices, start=1):
        option = _normalise(choice)
        if len(option) < _MIN_OPTION_CHARS:
            continue
        contains = f" {option} " in f" {normalised_fragment} "
        covers = (
            len(normalised_fragment) >= _MIN_FRAGMENT_CHARS
            and normalised_fragment in option
            and len(normalised_fragment) >= _MIN_COVERED_SHARE * len(option)
        )
        if contains or covers:
            matched[number] = option
    longest = [
        number
        for number, option in matched.items()
        if not any(other != option and option in other for other in matched.values())
    ]
    return sorted(longest)
