"""The offline question writer on the 35 bundled real captions."""

from __future__ import annotations

import re
from collections import Counter

from microvqa_pp.generate.grounding import CaptionChecker, GroundedQA
from microvqa_pp.generate.offline import write_questions
from microvqa_pp.generate.spans import SPAN_KINDS
from microvqa_pp.generate.text import contains_phrase


def all_questions(bundled_captions, count=3):
    return [(caption_id, caption, qa) for caption_id, caption in bundled_captions for qa in write_questions(caption, count).questions]


def test_every_span_is_found_in_its_caption(bundled_captions):
    questions = all_questions(bundled_captions)
    assert len(questions) >= 60
    for caption_id, caption, qa in questions:
        checked = CaptionChecker(caption).check(qa)
        assert isinstance(checked, GroundedQA), (caption_id, qa.question, checked)
        assert caption[checked.span_start : checked.span_end] == qa.answer_span
        assert checked.support_sentence == qa.support_sentence


def test_all_three_task_types_appear(bundled_captions):
    tasks = Counter(qa.task for _, _, qa in all_questions(bundled_captions))
    assert set(tasks) == {1, 2, 3}
    assert tasks[2] >= 8
    assert tasks[3] >= 8


def test_no_question_contains_its_answer(bundled_captions):
    for caption_id, _, qa in all_questions(bundled_captions):
        assert not contains_phrase(qa.question, qa.answer_span), (caption_id, qa.question)
        assert qa.answer.lower() not in qa.question.lower(), (caption_id, qa.question)


def test_questions_read_as_sentences(bundled_captions):
    for caption_id, _, qa in all_questions(bundled_captions):
        question = qa.question
        assert question[0].isupper(), question
        assert question.endswith("?"), question
        assert "  " not in question, question
        assert " ?" not in question and " ," not in question, question
        assert "()" not in question, question
        assert not re.search(r"\b(\w+) \1\b", question), question
        assert 20 <= len(question) <= 320, question
        assert qa.answer_kind in SPAN_KINDS, qa.answer_kind


def test_most_figures_get_questions_of_several_types(bundled_captions):
    results = {caption_id: write_questions(caption, 3).questions for caption_id, caption in bundled_captions}
    with_questions = [caption_id for caption_id, questions in results.items() if questions]
    assert len(with_questions) >= 31
    assert all(len(questions) <= 3 for questions in results.values())
    several_types = [caption_id for caption_id, questions in results.items() if len({qa.task for qa in questions}) >= 2]
    assert len(several_types) >= 15


def test_output_is_deterministic(bundled_captions):
    for _, caption in bundled_captions[:10]:
        assert write_questions(caption, 3) == write_questions(caption, 3)


def test_pinned_questions_for_known_captions():
    rad51 = (
        "Rad51 focus formation in BRCA2-mutated cell lines. a. Cells were treated for 8 hours with MMC "
        "(2.4 μg/mL) and immunolabeled for RAD51 (green) and DAPI (blue). MIP101 and RKO are colorectal "
        "MSI cancer cells harboring BRCA2 frameshift mutations (see text)."
    )
    pairs = [(qa.task, qa.question, qa.answer) for qa in write_questions(rad51, 3).questions]
    assert pairs == [
        (1, "What is labelled in green in panel a?", "RAD51"),
        (1, "Which stain is shown in blue in panel a?", "DAPI"),
        (3, "What concentration of MMC would you use to reproduce this experiment?", "2.4 μg/mL"),
    ]

    fasudil = (
        "Fasudil increases endplate (EP) area in the tibialis anterior (TA) and transversus abdominis (TVA) "
        "muscles. (A) Representative images of TA and TVA EPs stained with α-bungarotoxin (BTX). Scale bars = "
        "25 μm (TA) and 30 μm (TVA). (B) Quantification of EP area shows that fasudil-treated Smn2B/- TA and "
        "TVA muscles display significantly larger EPs when compared to vehicle-treated Smn2B/- muscles."
    )
    pairs = [(qa.task, qa.question, qa.answer) for qa in write_questions(fasudil, 3).questions]
    assert pairs == [
        (1, "Which stain labels the TVA EPs in panel A?", "α-bungarotoxin"),
        (2, "Based on this figure, how does fasudil affect endplate (EP) area?", "increases"),
        (3, "Which agent would you apply to increase endplate (EP) area, based on this figure?", "Fasudil"),
    ]


def test_count_limits_questions(bundled_captions):
    _, caption = next(item for item in bundled_captions if item[0].endswith("PMC1382246-0-1471-2156-7-3-1"))
    assert len(write_questions(caption, 1).questions) == 1
    assert len(write_questions(caption, 5).questions) == 5
