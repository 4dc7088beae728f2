"""The mcq stage end to end with the offline agent, on QAs grounded in the real bundled captions."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from microvqa_pp.cli import main
from microvqa_pp.config import load_config
from microvqa_pp.mcq.stage import McqStage
from microvqa_pp.mcq.validation import McqDraft, ValidationSettings, validate_draft
from microvqa_pp.records import MCQ, arrow_schema
from microvqa_pp.run.stage import read_records, run_stage


def test_offline_mcqs_pass_validation(offline):
    mcq_run, result, records, rejections = offline.mcq_run, offline.result, offline.records, offline.rejections

    assert rejections == []
    assert len(records) == len(mcq_run.qas)
    assert result.count == len(mcq_run.qas)
    settings = ValidationSettings()
    for record in records:
        caption = mcq_run.captions[record.figure_id]
        draft = McqDraft(record.question, record.choices, record.correct_answer, record.cot)
        assert validate_draft(draft, settings, caption) is None, record.question
        assert len(record.choices) == 4
        assert record.choices[record.correct_index] == record.correct_answer
        assert record.no_image_outcome in ("passed", "rewritten-passed", "failed")
        assert 1 <= record.blooms_level <= 6
        assert record.blooms_source == "classifier:logreg-embedding"
        assert record.blooms_level_classifier == record.blooms_level
        assert record.generator == "offline-template"


def test_offline_records_carry_qa_fields(offline):
    mcq_run, records = offline.mcq_run, offline.records

    by_qa = {qa.qa_id: qa for qa in mcq_run.qas}
    for record in records:
        qa = by_qa[record.qa_id]
        assert record.mcq_id == f"mcq-{qa.qa_id}"
        assert record.figure_id == qa.figure_id
        assert record.task == qa.task
        assert record.task_str == qa.task_str
        assert record.correct_answer == qa.answer.replace("–", "-")
        assert 0.6 < record.consistency_score <= 1.0


def test_offline_distractors_are_same_kind(offline):
    by_answer = {record.correct_answer: record for record in offline.records}

    stain = by_answer["DAPI"]
    assert stain.span_kind == "stain"
    micromolar = by_answer["10 μM"]
    assert micromolar.span_kind == "quantity:μM"
    assert all(choice.endswith(" μM") for choice in micromolar.choices)
    organism = by_answer["Actinomadura madurae"]
    assert organism.span_kind == "organism"
    assert "Desulfovibrio vulgaris" in organism.choices or "Escherichia coli" in organism.choices
    other = by_answer["crypt abscesses"]
    assert other.span_kind == "other"
    assert other.distractor_source == "other-answers"


def test_rationale_cites_support_sentence(offline):
    record = next(record for record in offline.records if record.correct_answer == "2.4 μg/mL")
    assert "Cells were treated for 8 hours with MMC (2.4 μg/mL)" in record.cot
    assert record.cot.count("2.4 μg/mL") >= 2
    assert "Cells were treated" not in record.question


def test_correct_positions_balanced_in_stats(offline):
    mcq_run, result, records = offline.mcq_run, offline.result, offline.records

    counts = result.stats["correct_index_counts"]
    assert sum(counts.values()) == len(records)
    assert max(counts.values()) - min(counts.values()) <= 1
    from_records = {str(position): sum(record.correct_index == position for record in records) for position in range(4)}
    assert counts == from_records
    manifest = json.loads(mcq_run.run.manifest_path.read_text())
    assert manifest["stages"]["mcq"]["stats"]["correct_index_counts"] == counts
    assert "mcq" in manifest["notes"]


def test_no_image_outcomes_counted(offline):
    stats = offline.result.stats
    outcomes = Counter(record.no_image_outcome for record in offline.records)
    assert stats.get("no_image_passed", 0) == outcomes["passed"]
    assert stats.get("no_image_rewritten_passed", 0) == outcomes["rewritten-passed"]
    assert stats.get("no_image_failed", 0) == outcomes["failed"]
    assert outcomes["passed"] > len(offline.records) / 2
    for record in offline.records:
        assert record.no_image_accuracy is not None
        if record.no_image_outcome == "passed":
            assert record.rewrite_rounds == 0
            assert record.no_image_accuracy <= 0.5
        if record.no_image_outcome == "rewritten-passed":
            assert record.rewrite_rounds >= 1
            assert record.no_image_accuracy <= 0.5


def test_blooms_levels_counted(offline):
    stats = offline.result.stats
    levels = Counter(record.blooms_level for record in offline.records)
    for level, count in levels.items():
        assert stats[f"blooms_level_{level}"] == count
        assert all(record.blooms_name for record in offline.records if record.blooms_level == level)


def test_dropped_qas_are_skipped(make_mcq_run, run_mcq, small_questions):
    mcq_run = make_mcq_run(small_questions, dropped=("qa-000", "qa-003"))
    outcome = run_mcq(mcq_run)
    assert {record.qa_id for record in outcome.records} == {qa.qa_id for qa in mcq_run.qas} - {"qa-000", "qa-003"}
    assert outcome.rejections == []
    assert outcome.result.stats["qas_in"] == len(small_questions) - 2


def test_too_few_distractors_rejected(make_mcq_run, run_mcq):
    # Only two QAs of no known kind: each has one other answer to draw from, three are needed.
    questions = [
        ("filelist_noncommercial_batch_123_43-PMC9762925-0-ac9-9-e00900-g001", "crypt abscesses", "What do the dilated crypts contain?", 1),
        ("elife-01222-fig2s2", "bleomycin", "Which drug induced the foci in panel B?", 1),
    ]
    outcome = run_mcq(make_mcq_run(questions))
    assert outcome.records == []
    assert sorted(rejection.reason for rejection in outcome.rejections) == ["too_few_distractors", "too_few_distractors"]
    assert outcome.result.rejected == {"too_few_distractors": 2}
    assert "1 same-kind spans (other)" in outcome.rejections[0].detail


def test_rerun_skips_and_force_repeats(make_mcq_run, run_mcq, small_questions):
    mcq_run = make_mcq_run(small_questions)
    run_mcq(mcq_run, chunk_size=2)
    first = pq.read_table(mcq_run.run.stage_output("mcq"))
    assert first.schema.equals(arrow_schema(MCQ))
    assert first.num_rows == len(small_questions)

    # Unchanged settings: the stage is skipped and the output stays as it was.
    assert run_mcq(mcq_run, chunk_size=2).result.count == len(small_questions)
    assert pq.read_table(mcq_run.run.stage_output("mcq")).equals(first)

    # Forced: the same seed gives the same questions, options and positions.
    config = load_config("offline", {"mcq": {"chunk_size": 2}})
    run_stage(McqStage(mcq_run.run, config), force=True)
    assert pq.read_table(mcq_run.run.stage_output("mcq")).to_pylist() == first.to_pylist()


def test_resume_after_crash(make_mcq_run, small_questions, monkeypatch):
    mcq_run = make_mcq_run(small_questions)
    config = load_config("offline", {"mcq": {"chunk_size": 2}})
    original = McqStage.process
    calls = []

    def crash_on_third_unit(self, unit, progress):
        calls.append(unit.unit_id)
        if unit.unit_id == "00002":
            raise RuntimeError("simulated crash")
        return original(self, unit, progress)

    monkeypatch.setattr(McqStage, "process", crash_on_third_unit)
    with pytest.raises(RuntimeError):
        run_stage(McqStage(mcq_run.run, config))
    monkeypatch.setattr(McqStage, "process", original)

    result = run_stage(McqStage(mcq_run.run, config))
    records = read_records(mcq_run.run.stage_output("mcq"), MCQ)
    assert calls == ["00000", "00001", "00002"]
    assert sorted(record.qa_id for record in records) == sorted(qa.qa_id for qa in mcq_run.qas)
    assert result.stats["qas_in"] == len(small_questions)


def test_cli_runs_stage(make_mcq_run, small_questions):
    mcq_run = make_mcq_run(small_questions)
    outcome = CliRunner().invoke(main, ["mcq", str(mcq_run.run.root)])
    assert outcome.exit_code == 0, outcome.output
    assert "mcq" in outcome.output
    assert len(read_records(mcq_run.run.stage_output("mcq"), MCQ)) == len(small_questions)


def test_stage1_answer_kinds_used(make_mcq_run, run_mcq, small_questions):
    kinds = ["stain", "concentration", "stain", "organism", "stain", "organism"]
    questions = [question + (kind,) for question, kind in zip(small_questions, kinds)]
    questions.append(
        ("filelist_commercial_batch_10_13-PMC3310724-1-1741-7015-10-24-6", "increases", "Based on this figure, how does fasudil affect endplate area?", 2, "outcome")
    )
    mcq_run = make_mcq_run(questions)

    outcome = run_mcq(mcq_run)
    by_answer = {record.correct_answer: record for record in outcome.records}
    effect = by_answer["increases"]
    assert effect.span_kind == "outcome"
    assert effect.question.endswith("Based on this figure, how does fasudil affect endplate area?")
    assert not set(effect.choices) & {"promotes", "induces", "enhances", "stimulates"}
    [pool_file] = mcq_run.run.cache_dir.glob("mcq-span-pool-*.json")
    pool = json.loads(pool_file.read_text())
    assert {row["kind"] for row in pool["answers"]} == set(kinds) | {"outcome"}
