"""The `filter` stage on a scored run: decisions, keep share, reasons, saved model and notes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from microvqa_pp.config import load_config
from microvqa_pp.errors import ConfigError
from microvqa_pp.graph.checkpoint import load_checkpoint
from microvqa_pp.graph.stage import FilterStage
from microvqa_pp.pipeline import open_run
from microvqa_pp.records import FilterDecision, Rejection
from microvqa_pp.run.stage import read_records, run_stage

FAST = {"filter": {"hidden_channels": 16, "epochs": 30, "patience": 10, "knn_k": 5}}


@pytest.fixture(scope="module")
def filtered(make_scored_run, tmp_path_factory):
    run = make_scored_run(tmp_path_factory.mktemp("filtered") / "run", FAST)
    _, config = open_run(str(run.root))
    result = run_stage(FilterStage(run, config))
    return run, config, result


def test_one_decision_per_qa(filtered, sample):
    run, _, _ = filtered
    decisions = read_records(run.stage_output("filter"), FilterDecision)
    assert [decision.qa_id for decision in decisions] == [qa.qa_id for qa in sample.qas]
    assert [decision.question for decision in decisions] == [qa.question for qa in sample.qas]
    figure_format = {figure.figure_id: figure.image_format for figure in sample.figures}
    assert all(decision.image_name == f"{decision.figure_id}.{figure_format[decision.figure_id]}" for decision in decisions)
    assert all(decision.method == "graph" for decision in decisions)


def test_keeps_the_default_share_with_reasons(filtered, sample):
    run, _, result = filtered
    decisions = read_records(run.stage_output("filter"), FilterDecision)
    expected = int(np.floor(0.75 * len(sample.qas) + 0.5))
    assert sum(decision.keep for decision in decisions) == expected
    assert result.count == expected
    assert result.rejected == {"below_keep_share": len(sample.qas) - expected}
    for decision in decisions:
        assert (decision.reason == "") == decision.keep
    lowest_kept = min(decision.score for decision in decisions if decision.keep)
    assert all(decision.score <= lowest_kept for decision in decisions if not decision.keep)


def test_dropped_qas_keep_their_scores(filtered):
    run, _, _ = filtered
    decisions = read_records(run.stage_output("filter"), FilterDecision)
    for decision in decisions:
        assert 0 < decision.score < 1
        assert decision.head_nli is not None and 0 < decision.head_nli < 1
        assert decision.head_alignment is not None and 0 < decision.head_alignment < 1
        assert decision.baseline_text is not None
        assert decision.baseline_lexical is not None
        assert decision.baseline_clip is None
        assert decision.baseline_nli is None
        assert decision.judge_score is None
    ranks = sorted(decision.rank for decision in decisions)
    assert ranks == list(range(1, len(decisions) + 1))


def test_rejections_name_reason_and_cutoff(filtered):
    run, _, _ = filtered
    rejections = read_records(run.stage_rejected("filter"), Rejection)
    decisions = {decision.qa_id: decision for decision in read_records(run.stage_output("filter"), FilterDecision)}
    assert rejections
    for rejection in rejections:
        assert rejection.stage == "filter"
        assert rejection.reason == "below_keep_share"
        assert not decisions[rejection.item_id].keep
        assert "outside the top 75% of all QAs" in rejection.detail


def test_manifest_and_note(filtered):
    run, _, _ = filtered
    entry = run.stage_entry("filter")
    assert entry["state"] == "done"
    assert entry["output"] == "stages/filter.parquet"
    assert entry["stats"]["method"] == "graph"
    note = run.read_manifest()["notes"]["filter"]
    assert note.startswith("HiCQA-Graph weak labels: NLI probabilities are unavailable, so the NLI head predicts")
    assert note.count("lexical_overlap") == 1
    assert note.count("text_similarity") == 1


def test_model_is_saved_and_reloads(filtered, sample):
    run, config, _ = filtered
    folder = run.root / "models" / "filter"
    model, spec, saved = load_checkpoint(folder)
    assert saved["filter"]["hidden_channels"] == 16
    assert saved["seed"] == config.seed
    assert spec.label_sources == {"nli": "lexical_overlap", "alignment": "text_similarity"}
    assert saved["graph"]["nodes_qa"] == len(sample.qas)
    history = json.loads((folder / "training.json").read_text())
    assert 1 <= history["best_epoch"] <= len(history["epochs"])
    assert set(history["fusion_weights"]) == {"nli", "alignment"}
    state = torch.load(folder / "model.pt", weights_only=True)
    assert set(state) == set(model.state_dict())


def test_rerun_with_same_settings_is_skipped(filtered):
    run, config, result = filtered
    again = run_stage(FilterStage(run, config))
    assert again.count == result.count


def test_baseline_method_ranks_by_its_signal(sample, make_scored_run, tmp_path):
    run = make_scored_run(tmp_path / "run", {"filter": {"method": "text", "keep_share": 0.5}})
    _, config = open_run(str(run.root))
    run_stage(FilterStage(run, config))
    decisions = read_records(run.stage_output("filter"), FilterDecision)
    by_qa = {record.qa_id: record.text_similarity for record in sample.signals}
    for decision in decisions:
        assert decision.score == pytest.approx(by_qa[decision.qa_id])
        assert decision.head_nli is None
    kept = [decision.score for decision in decisions if decision.keep]
    dropped = [decision.score for decision in decisions if not decision.keep]
    assert min(kept) >= max(dropped)
    assert not (run.root / "models" / "filter").exists()
    assert run.read_manifest()["notes"]["filter"] == "QAs were ranked by one signal alone (filter.method=text, a baseline), not by HiCQA-Graph."


def test_threshold_and_per_task(sample, make_scored_run, tmp_path):
    settings = {"filter": {"method": "lexical", "per_task": True, "keep_share": 0.5}}
    run = make_scored_run(tmp_path / "run", settings)
    _, config = open_run(str(run.root))
    run_stage(FilterStage(run, config))
    decisions = read_records(run.stage_output("filter"), FilterDecision)
    tasks = {qa.qa_id: qa.task_str for qa in sample.qas}
    for task in set(tasks.values()):
        group = [decision for decision in decisions if tasks[decision.qa_id] == task]
        assert sum(decision.keep for decision in group) == int(np.floor(0.5 * len(group) + 0.5))
    assert {decision.reason for decision in decisions if not decision.keep} == {"below_task_keep_share"}

    _, config = open_run(str(run.root), layers={"overrides": ["filter.threshold=0.9", "filter.per_task=false"]})
    run_stage(FilterStage(run, config))
    decisions = read_records(run.stage_output("filter"), FilterDecision)
    for decision in decisions:
        assert decision.keep == (decision.score >= 0.9)
        assert decision.reason == ("" if decision.keep else "below_threshold")


def test_unavailable_baseline_is_rejected_when_built(sample, make_scored_run, tmp_path):
    run = make_scored_run(tmp_path / "run")
    config = load_config("offline", {"filter": {"method": "clip"}})
    with pytest.raises(ConfigError, match="signals.clip_model is not set"):
        FilterStage(run, config)
    with pytest.raises(ConfigError, match="not divisible"):
        FilterStage(run, load_config("offline", {"filter": {"hidden_channels": 30, "heads": 4}}))


def test_missing_inputs_are_reported(sample, make_scored_run, tmp_path):
    from microvqa_pp.records import QA, QASignals, to_table
    from microvqa_pp.run.stage import write_parquet

    run = make_scored_run(tmp_path / "run", FAST)
    orphan = QA("orphan", "no-such-figure", "What is shown?", "cells", "cells", -1, -1, "", 1, "Expert Visual Understanding", "test", True, "test")
    empty = QA("empty", sample.figures[0].figure_id, " ", "", "", -1, -1, "", 1, "Expert Visual Understanding", "test", True, "test")
    write_parquet(run.stage_output("generate"), to_table(sample.qas + [orphan, empty], QA))
    write_parquet(run.stage_output("score"), to_table(sample.signals[1:], QASignals))
    _, config = open_run(str(run.root))
    result = run_stage(FilterStage(run, config))

    decisions = {decision.qa_id: decision for decision in read_records(run.stage_output("filter"), FilterDecision)}
    assert len(decisions) == len(sample.qas) + 2
    assert decisions["orphan"].reason == "missing_figure"
    assert math.isnan(decisions["orphan"].score)
    assert decisions["empty"].reason == "empty_qa"
    assert not decisions["empty"].keep
    assert not math.isnan(decisions[sample.qas[0].qa_id].score)
    assert result.rejected["missing_figure"] == 1
    assert result.count == int(np.floor(0.75 * len(sample.qas) + 0.5))


def test_full_profile_signals(sample, make_scored_run, tmp_path):
    """With NLI and CLIP signals the heads learn them, and the CLIP baseline ranks by calibrated CLIP."""
    import dataclasses

    from microvqa_pp.records import QASignals, to_table
    from microvqa_pp.run.stage import write_parquet

    rng = np.random.default_rng(0)
    signals = []
    for record in sample.signals:
        entailment, neutral, contradiction = rng.dirichlet([2, 1, 1])
        signals.append(
            dataclasses.replace(
                record,
                nli_entailment=float(entailment),
                nli_neutral=float(neutral),
                nli_contradiction=float(contradiction),
                clip_image_caption=float(rng.normal(0.3, 0.03)),
                clip_image_qa=float(rng.normal(0.25, 0.04)),
            )
        )
    models = {"signals": {"nli_model": "local-nli", "clip_model": "local-clip"}}
    run = make_scored_run(tmp_path / "run", {**models, **FAST})
    write_parquet(run.stage_output("score"), to_table(signals, QASignals))

    _, config = open_run(str(run.root))
    run_stage(FilterStage(run, config))
    note = run.read_manifest()["notes"]["filter"]
    assert note == "HiCQA-Graph weak labels: the nli head predicts nli_entailment; the alignment head predicts clip_image_qa."

    _, config = open_run(str(run.root), layers={"overrides": ["filter.method=clip"]})
    run_stage(FilterStage(run, config))
    decisions = read_records(run.stage_output("filter"), FilterDecision)
    clip = {record.qa_id: record.clip_image_qa for record in signals}
    order = sorted(decisions, key=lambda decision: clip[decision.qa_id])
    assert [decision.score for decision in order] == sorted(decision.score for decision in decisions)
    assert all(0 < decision.score < 1 for decision in decisions)
    assert all(decision.baseline_nli is not None for decision in decisions)
