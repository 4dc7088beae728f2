"""The grounding check of proposed QAs against the original caption."""

from __future__ import annotations

import pytest

from microvqa_pp.generate.grounding import CaptionChecker, GroundedQA, Rejected
from microvqa_pp.generate.schema import ProposedQA

CAPTION = (
    "Rad51 focus formation in BRCA2-mutated cell lines. a. Cells were treated for 8 hours with MMC "
    "(2.4 μg/mL) and immunolabeled for RAD51 (green) and DAPI (blue). Scale bar: 20\u00a0µm."
)


def proposed(**fields) -> ProposedQA:
    values = {"question": "Which stain labels the nuclei?", "answer": "DAPI", "answer_span": "DAPI", "support_sentence": "", "task": 1}
    values.update(fields)
    return ProposedQA(**values)


def test_grounded_qa_has_original_offsets():
    checked = CaptionChecker(CAPTION).check(proposed(question="What concentration of MMC was used?", answer="2.4 ug/ml", answer_span="2.4 ug/ml", task=3, answer_kind="Concentration"))
    assert isinstance(checked, GroundedQA)
    assert checked.answer_span == "2.4 μg/mL"
    assert CAPTION[checked.span_start : checked.span_end] == "2.4 μg/mL"
    assert checked.answer == "2.4 ug/ml"
    assert checked.support_sentence.startswith("a. Cells were treated for 8 hours")
    assert checked.panel == "a"
    assert checked.answer_kind == "concentration"


def test_variant_spelling_of_span_is_accepted():
    checked = CaptionChecker(CAPTION).check(proposed(question="What length is the scale bar?", answer="20 um", answer_span="20 um"))
    assert isinstance(checked, GroundedQA)
    assert checked.answer_span == "20\u00a0µm"


def test_support_sentence_from_reply_is_kept_when_found():
    support = "a. cells were treated for 8 hours with MMC (2.4 µg/mL) and immunolabeled for RAD51 (green) and DAPI (blue)."
    checked = CaptionChecker(CAPTION).check(proposed(support_sentence=support))
    assert isinstance(checked, GroundedQA)
    assert checked.support_sentence == CAPTION[CAPTION.index("a. Cells") : CAPTION.index(" Scale")]


def test_unknown_kind_becomes_other():
    checked = CaptionChecker(CAPTION).check(proposed(answer_kind="dye"))
    assert checked.answer_kind == "other"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"answer_span": "Hoechst"}, "span_not_in_caption"),
        ({"answer_span": "DAPI stain"}, "span_not_in_caption"),
        ({"question": "Is DAPI the stain that labels the nuclei?"}, "answer_in_question"),
        ({"question": "Which dapi-like stain is blue?"}, "answer_in_question"),
        ({"question": "Is the blue stain DAPI (blue) or Hoechst?", "answer": "the first", "answer_span": "DAPI (blue)"}, "answer_in_question"),
        ({"question": " "}, "empty_field"),
        ({"answer_span": ""}, "empty_field"),
    ],
)
def test_rejections(fields, reason):
    checked = CaptionChecker(CAPTION).check(proposed(**fields))
    assert isinstance(checked, Rejected)
    assert checked.reason == reason


def test_question_containing_answer_text_is_rejected():
    checked = CaptionChecker(CAPTION).check(proposed(question="Which protein, RAD51, is green?", answer="RAD51", answer_span="RAD51"))
    assert checked == Rejected("answer_in_question", "the question contains the answer span 'RAD51'")


def test_repeated_question_is_rejected():
    checker = CaptionChecker(CAPTION)
    assert isinstance(checker.check(proposed()), GroundedQA)
    repeated = checker.check(proposed(question="which stain labels the  nuclei?"))
    assert isinstance(repeated, Rejected)
    assert repeated.reason == "duplicate_question"
