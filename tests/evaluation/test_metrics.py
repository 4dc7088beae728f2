"""Accuracy, unparsed share, groups and intervals against hand counts."""

from __future__ import annotations

from dataclasses import replace

import pytest

from microvqa_pp.evaluation.metrics import answer_of, disagreements, parser_summary, wilson_interval
from microvqa_pp.evaluation.records import EvalResult
from microvqa_pp.evaluation.report import build_summary, leaderboard_table, render_report

TASKS = {1: "Expert Visual Understanding", 2: "Hypothesis Generation", 3: "Experimental Proposal"}


def result(question_id: str, task: int, correct_option: int, reference: int | None, robust: int | None, blooms: int | None = None) -> EvalResult:
    return EvalResult(
        question_id=question_id,
        task=task,
        task_str=TASKS[task],
        blooms_level=blooms,
        blooms_name={2: "Comprehension", 4: "Analysis"}.get(blooms or 0, ""),
        correct_index=correct_option - 1,
        correct_option=correct_option,
        n_choices=6,
        n_images=1,
        prompt_hash="0" * 64,
        request_key="1" * 64,
        model="m",
        reply=f"reply {question_id}",
        error="",
        error_detail="",
        cached=False,
        reference_option=reference,
        reference_reason="statement" if reference is not None else "no_answer",
        reference_correct=reference == correct_option,
        robust_option=robust,
        robust_reason="statement" if robust is not None else "no_answer",
        robust_correct=robust == correct_option,
    )


# Hand count. Task 1: a right (both), b wrong (both), c unparsed by reference, right by robust.
# Task 2: d right (both), e replies 6 (right, but outside the reference's valid 1..5).
# Task 3: f unparsed by both, g wrong (both), h right (both).
RESULTS = [
    result("a", 1, 2, 2, 2, blooms=2),
    result("b", 1, 3, 1, 1, blooms=2),
    result("c", 1, 4, None, 4, blooms=4),
    result("d", 2, 1, 1, 1, blooms=4),
    result("e", 2, 6, 6, 6, blooms=4),
    result("f", 3, 2, None, None),
    result("g", 3, 1, 3, 3),
    result("h", 3, 5, 5, 5),
]


def test_overall_scores() -> None:
    reference = parser_summary(RESULTS, "reference")
    robust = parser_summary(RESULTS, "robust")
    assert reference["n"] == 8
    assert reference["accuracy"] == pytest.approx(4 / 8)  # a, d, e, h
    assert reference["unparsed"] == pytest.approx(3 / 8)  # c, f, and e (6 is outside 1..5)
    assert robust["accuracy"] == pytest.approx(5 / 8)  # a, c, d, e, h
    assert robust["unparsed"] == pytest.approx(1 / 8)  # f


def test_per_task_equals_hand_count() -> None:
    reference = parser_summary(RESULTS, "reference")["per_task"]
    robust = parser_summary(RESULTS, "robust")["per_task"]
    assert list(reference) == list(TASKS.values())
    assert reference["Expert Visual Understanding"]["accuracy"] == pytest.approx(1 / 3)
    assert reference["Hypothesis Generation"]["accuracy"] == pytest.approx(2 / 2)
    assert reference["Experimental Proposal"]["accuracy"] == pytest.approx(1 / 3)
    assert reference["Expert Visual Understanding"]["unparsed"] == pytest.approx(1 / 3)
    assert robust["Expert Visual Understanding"]["accuracy"] == pytest.approx(2 / 3)
    assert robust["Experimental Proposal"]["unparsed"] == pytest.approx(1 / 3)
    assert [entry["n"] for entry in reference.values()] == [3, 2, 3]


def test_per_task_groups_by_task_id() -> None:
    # The same hand count, with task_str spelled the way another data set might spell it.
    spelled = {1: "expert_visual_understanding", 2: "hypothesis-generation", 3: "EXPERIMENTAL PROPOSAL"}
    respelled = [replace(item, task_str=spelled[item.task]) for item in RESULTS]

    reference = parser_summary(respelled, "reference")["per_task"]

    assert list(reference) == list(TASKS.values())
    assert reference["Expert Visual Understanding"]["accuracy"] == pytest.approx(1 / 3)
    assert reference["Hypothesis Generation"]["accuracy"] == pytest.approx(2 / 2)
    assert reference["Experimental Proposal"]["accuracy"] == pytest.approx(1 / 3)
    table = leaderboard_table(build_summary(respelled, {}), "tiny")
    assert "| **tiny** (reference parser) | 50.0 | 33.3 | 100.0 | 33.3 | 37.5 |" in table


def test_per_task_without_id_uses_task_str() -> None:
    unnumbered = [replace(item, task=None, task_str=f"custom {item.task}") for item in RESULTS]
    unnumbered[0] = replace(unnumbered[0], task_str="")

    reference = parser_summary(unnumbered, "reference")["per_task"]

    assert list(reference) == ["custom 1", "custom 2", "custom 3", "unlabelled"]
    assert reference["custom 1"]["n"] == 2
    assert reference["custom 1"]["accuracy"] == pytest.approx(0 / 2)  # b wrong, c unparsed
    assert reference["custom 2"]["accuracy"] == pytest.approx(2 / 2)
    assert reference["unlabelled"]["n"] == 1
    table = leaderboard_table(build_summary(unnumbered, {}), "tiny")
    assert "| **tiny** (reference parser) | 50.0 | – | – | – | 37.5 |" in table


def test_per_blooms_only_where_labelled() -> None:
    per_blooms = parser_summary(RESULTS, "robust")["per_blooms"]
    assert list(per_blooms) == ["2 Comprehension", "4 Analysis", "unlabelled"]
    assert per_blooms["2 Comprehension"]["accuracy"] == pytest.approx(1 / 2)
    assert per_blooms["4 Analysis"]["accuracy"] == pytest.approx(3 / 3)
    assert per_blooms["unlabelled"]["n"] == 3
    unlabelled = [result(f"x{index}", 1, 1, 1, 1) for index in range(3)]
    assert "per_blooms" not in parser_summary(unlabelled, "robust")


def test_wilson_interval_values() -> None:
    assert wilson_interval(0, 0) == (0.0, 0.0)
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4)
    assert high == pytest.approx(0.7634, abs=1e-4)
    low, high = wilson_interval(0, 10)
    assert low == 0.0
    assert high == pytest.approx(0.2775, abs=1e-4)
    assert parser_summary(RESULTS, "reference")["ci95"] == list(wilson_interval(4, 8))


def test_disagreements_compare_counted_answers() -> None:
    # c: reference unparsed, robust 4. e: reference 6 counts as unparsed, robust 6.
    assert [item.question_id for item in disagreements(RESULTS)] == ["c", "e"]
    assert answer_of(RESULTS[4], "reference") is None


def test_summary_shape_and_report() -> None:
    summary = build_summary(RESULTS, {"model": "tiny", "dataset": "d.parquet", "layout": "microvqa"})
    assert summary["n"] == 8
    assert set(summary["parsers"]) == {"reference", "robust"}
    for parser in ("reference", "robust"):
        assert {"accuracy", "unparsed", "per_task", "ci95"} <= set(summary["parsers"][parser])
    assert summary["disagreements"] == 2

    table = leaderboard_table(summary, "tiny")
    assert "| **tiny** (reference parser) | 50.0 | 33.3 | 100.0 | 33.3 | 37.5 |" in table
    assert "| **tiny** (robust parser) | 62.5 | 66.7 | 100.0 | 33.3 | 12.5 |" in table
    assert "| o1 (published) | 52.8 | 55.4 | 50.2 | 53.0 | | |" in table
    assert "| Random (published) | 22.0 | 21.9 | 21.8 | 21.9 | | |" in table

    report = render_report(summary, RESULTS, [], "tiny")
    assert "## Questions where the parsers disagree (2)" in report
    assert "| c | 4 | – | 4 (statement) | reply c |" in report
    assert "| e | 6 | – | 6 (statement) | reply e |" in report
