"""The correct option's position: balanced over the data set, seeded, and random within the balance."""

from __future__ import annotations

from collections import Counter

import pytest
from scipy.stats import chisquare

from microvqa_pp.config import load_config
from microvqa_pp.mcq.positions import correct_position, place_options
from microvqa_pp.mcq.stage import McqStage
from microvqa_pp.records import MCQ, from_table, to_table
from microvqa_pp.run.rundir import RunDir


def placeholder_mcq(number: int) -> MCQ:
    """An MCQ as a work unit writes it: the correct option first."""
    return MCQ(
        mcq_id=f"mcq-{number}",
        qa_id=f"qa-{number}",
        figure_id=f"figure-{number // 3}",
        question=f"Question {number}?",
        choices=[f"correct {number}", f"wrong a {number}", f"wrong b {number}", f"wrong c {number}"],
        correct_index=0,
        correct_answer=f"correct {number}",
        cot="Because.",
        task=1,
        task_str="Expert Visual Understanding",
        blooms_level=2,
        blooms_name="Comprehension",
        blooms_source="classifier:logreg-embedding",
        no_image_outcome="passed",
        no_image_accuracy=0.25,
        rewrite_rounds=0,
        consistency_score=0.9,
        generator="offline-template",
        prompt_version="mcq_write@1",
    )


@pytest.fixture
def placed(tmp_path) -> tuple[McqStage, list[MCQ]]:
    """400 questions in units of 37, merged through the stage's `finish` at seed 7."""
    run = RunDir(tmp_path / "run")
    run.create()
    stage = McqStage(run, load_config("offline", {"seed": 7}))
    records = [placeholder_mcq(number) for number in range(400)]
    tables = (to_table(records[start : start + 37], MCQ) for start in range(0, 400, 37))
    merged = [record for table in stage.finish(tables, []) for record in from_table(table, MCQ)]
    return stage, merged


def test_positions_uniform_chi_square(placed):
    stage, records = placed
    counts = Counter(record.correct_index for record in records)
    assert sorted(counts) == [0, 1, 2, 3]
    statistic, p_value = chisquare([counts[position] for position in range(4)])
    assert p_value > 0.99
    assert max(counts.values()) - min(counts.values()) <= 1
    assert stage.position_counts == counts


def test_block_permutations_vary(placed):
    # The position of the first question of each block is itself uniform, not a fixed pattern.
    _, records = placed
    firsts = Counter(records[index].correct_index for index in range(0, 400, 4))
    assert len(firsts) == 4
    statistic, p_value = chisquare([firsts[position] for position in range(4)])
    assert p_value > 0.01


def test_options_moved_not_changed(placed):
    _, records = placed
    for number, record in enumerate(records):
        assert record.choices[record.correct_index] == record.correct_answer == f"correct {number}"
        distractors = [choice for index, choice in enumerate(record.choices) if index != record.correct_index]
        assert distractors == [f"wrong a {number}", f"wrong b {number}", f"wrong c {number}"]


def test_positions_depend_on_seed():
    first = [correct_position(ordinal, 4, seed=0) for ordinal in range(40)]
    assert first == [correct_position(ordinal, 4, seed=0) for ordinal in range(40)]
    assert first != [correct_position(ordinal, 4, seed=1) for ordinal in range(40)]
    for start in range(0, 40, 4):
        assert sorted(first[start : start + 4]) == [0, 1, 2, 3]


def test_positions_for_five_options():
    positions = [correct_position(ordinal, 5, seed=3) for ordinal in range(500)]
    assert Counter(positions) == {0: 100, 1: 100, 2: 100, 3: 100, 4: 100}


def test_place_options():
    options = place_options("DAPI", ["Hoechst", "SYTO 9", "PI"], 2, seed=0, item_id="qa-1")
    assert options[2] == "DAPI"
    assert sorted(options) == sorted(["DAPI", "Hoechst", "SYTO 9", "PI"])
    assert options == place_options("DAPI", ["Hoechst", "SYTO 9", "PI"], 2, seed=0, item_id="qa-1")
    with pytest.raises(ValueError):
        place_options("DAPI", ["Hoechst"], 2, seed=0, item_id="qa-1")
    with pytest.raises(ValueError):
        correct_position(-1, 4, seed=0)
