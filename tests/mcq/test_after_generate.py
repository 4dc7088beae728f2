"""The mcq stage on the real output of stage 1 (the offline `generate` stage) for the bundled figures."""

from __future__ import annotations

import shutil
from collections import Counter

import pytest

from microvqa_pp.config import load_config
from microvqa_pp.mcq.stage import McqStage
from microvqa_pp.mcq.validation import McqDraft, ValidationSettings, validate_draft
from microvqa_pp.pipeline import run_stages
from microvqa_pp.records import MCQ, QA, FilterDecision, Figure, Rejection, to_table
from microvqa_pp.run.rundir import RunDir
from microvqa_pp.run.stage import read_records, run_stage, write_parquet


@pytest.fixture(scope="module")
def generated(tmp_path_factory, ingested_run):
    """A run where `generate` wrote QAs offline, the filter kept them all, and `mcq` ran offline."""
    root = tmp_path_factory.mktemp("generated") / "run"
    shutil.copytree(ingested_run, root, ignore=shutil.ignore_patterns("images"))
    (root / "images").symlink_to(ingested_run / "images", target_is_directory=True)
    run = RunDir(root)
    config = load_config("offline", {})
    run_stages(["generate"], run, config)

    qas = read_records(run.stage_output("generate"), QA)
    decisions = [FilterDecision(qa.qa_id, qa.figure_id, "", qa.question, 1.0, True, "", "text", rank) for rank, qa in enumerate(qas)]
    write_parquet(run.stage_output("filter"), to_table(decisions, FilterDecision))
    run.set_stage("filter", state="done", fingerprint="fixture-filter", count=len(decisions))

    result = run_stage(McqStage(run, config))
    return run, qas, result


def test_every_kept_qa_accounted_for(generated):
    run, qas, result = generated
    records = read_records(run.stage_output("mcq"), MCQ)
    rejections = read_records(run.stage_rejected("mcq"), Rejection)
    assert len(qas) > 50
    assert len(records) + len(rejections) == len(qas)
    assert {record.qa_id for record in records} | {rejection.item_id for rejection in rejections} == {qa.qa_id for qa in qas}
    # On 35 figures, some answers of open kinds (treatments, conclusions) have too few others of their kind.
    assert {rejection.reason for rejection in rejections} <= {"too_few_distractors"}
    assert len(records) >= 0.85 * len(qas)
    assert result.count == len(records)


def test_generated_mcqs_pass_validation(generated):
    run, qas, _ = generated
    captions = {figure.figure_id: figure.caption for figure in read_records(run.stage_output("ingest"), Figure)}
    by_id = {qa.qa_id: qa for qa in qas}
    for record in read_records(run.stage_output("mcq"), MCQ):
        draft = McqDraft(record.question, record.choices, record.correct_answer, record.cot)
        assert validate_draft(draft, ValidationSettings(), captions[record.figure_id]) is None, record.question
        assert record.task == by_id[record.qa_id].task
        assert record.task_str == by_id[record.qa_id].task_str


def test_generated_kinds_and_outcomes(generated):
    run, _, result = generated
    records = read_records(run.stage_output("mcq"), MCQ)
    kinds = Counter(record.span_kind.partition(":")[0] for record in records)
    for kind in ("stain", "organism", "quantity", "technique"):
        assert kinds[kind] > 0, kind
    assert kinds["other"] < len(records) / 4
    outcomes = Counter(record.no_image_outcome for record in records)
    assert outcomes["passed"] + outcomes["rewritten-passed"] >= 0.9 * len(records)
    counts = result.stats["correct_index_counts"]
    assert max(counts.values()) - min(counts.values()) <= 1
