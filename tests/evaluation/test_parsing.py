"""The reference and robust answer parsers over a table of real-looking replies."""

from __future__ import annotations

import pytest

from microvqa_pp.evaluation.parsing import match_option_text, parse_reference, parse_robust

CHOICES = ["Golgi apparatus", "Endoplasmic reticulum", "Mitochondrial matrix", "Nuclear envelope"]

# reply, option read by the reference regex (as matched), option read by the robust parser.
CASES = [
    # The forms the reference regex accepts.
    ("The answer is (3)", 3, 3),
    ("The answer is 3", 3, 3),
    ("Step by step: the staining is punctate.\nTherefore, the answer is **(3)**", 3, 3),
    ("So the answer is **3**.", 3, 3),
    ("The answer is (3).\n\nThis follows from the matrix staining.", 3, 3),
    ("The answer is 12 µm wide, so option (2) is correct.", 1, 2),
    # Forms only the robust parser reads.
    ("The Answer is (3)", None, 3),
    ("Answer: (2)", None, 2),
    ("Final answer: B", None, 2),
    ("The answer is B", None, 2),
    ("The answer is (B).", None, 2),
    ("**Answer:** **(4)**", None, 4),
    ("### Final Answer\n**(4) Nuclear envelope**", None, 4),
    ("The correct option is (2).", None, 2),
    ("I choose option 4.", None, 4),
    ("Option 1 is correct because the Golgi stacks are visible.", None, 1),
    ("Option 2 is incorrect. Option 3 is correct.", None, 3),
    ("Among the options, (1) is plausible, but the answer is (3).", 3, 3),
    ("\\boxed{3}", None, 3),
    ("$\\boxed{\\text{C}}$", None, 3),
    ("3", None, 3),
    ("(C)", None, 3),
    ("Reasoning about the cristae...\n\n**2**", None, 2),
    # Option text restated instead of its number.
    ("The answer is the endoplasmic reticulum.", None, 2),
    ("Answer: Mitochondrial matrix", None, 3),
    ("Nuclear envelope", None, 4),
    ("The answer is Golgi apparatus or nuclear envelope.", None, None),
    # Answers stated early, then revised.
    ("The answer is (2). Wait, on reflection, the answer is (4).", 2, 4),
    ("Initially the answer is (1). However, given the ER staining, the final answer is (2).", 1, 2),
    ("The answer is (3) because of the cristae. Actually, looking again at the stain, the answer is (1).", 3, 1),
    # Several answers that conflict, without a revision: unparsed, never the first.
    ("The answer is (2). The answer is (3).", 2, None),
    ("If the cells were fixed, the answer is (1); since they were live, the answer is (4).", 1, None),
    ("The answer is (2) or (3).", 2, None),
    # An option named as a distractor or as wrong is a remark, not a second answer.
    ("The answer is (2), since option 3 is the most likely distractor.", 2, 2),
    ("The answer is (4). Option 1 is the most plausible wrong answer.", 4, 4),
    ("Option 1 is the most likely to be wrong; the answer is (3).", 3, 3),
    ("Option (B) is the best distractor, but the answer is (C).", None, 3),
    # Several statements of the same answer.
    ("The answer is (2). To be sure, I checked again: the answer is (2).", 2, 2),
    # Out of range and no answer at all.
    ("The answer is (7)", 7, None),
    ("The answer is (0)", 0, None),
    ("I cannot determine the answer from the image.", None, None),
    ("The answer is not (1).", None, None),
    ("", None, None),
]


@pytest.mark.parametrize(("reply", "reference", "robust"), CASES)
def test_parsers_read_reply(reply: str, reference: int | None, robust: int | None) -> None:
    assert parse_reference(reply).option == reference
    assert parse_robust(reply, CHOICES).option == robust


def test_table_has_thirty_replies() -> None:
    assert len(CASES) >= 30


def test_reference_first_match_wins() -> None:
    reply = "The answer is (1). On reflection the answer is (2)."
    assert parse_reference(reply).option == 1


def test_reference_regex_is_case_sensitive() -> None:
    assert parse_reference("ANSWER IS (2)").option is None
    assert parse_reference("The answer is (2)").option == 2


def test_robust_reasons() -> None:
    assert parse_robust("The answer is (3)", CHOICES).reason == "statement"
    assert parse_robust("The answer is (2). Wait, actually the answer is (4).", CHOICES).reason == "revised"
    assert parse_robust("The answer is (2). The answer is (3).", CHOICES).reason == "conflicting"
    assert parse_robust("The answer is (7)", CHOICES).reason == "out_of_range"
    assert parse_robust("Nuclear envelope", CHOICES).reason == "option_text"
    assert parse_robust("(C)", CHOICES).reason == "bare"
    assert parse_robust("No idea.", CHOICES).reason == "no_answer"


def test_letter_beyond_options_is_a_word() -> None:
    # "I" would be option 9; with four options it is the pronoun, not a label.
    assert parse_robust("The answer is I think unclear.", CHOICES).option is None


def test_option_text_prefers_longer_option() -> None:
    choices = ["Golgi", "Golgi and endoplasmic reticulum", "Nucleus only"]
    assert match_option_text("It is the Golgi and endoplasmic reticulum.", choices) == [2]
    assert match_option_text("It is the Golgi.", choices) == [1]
