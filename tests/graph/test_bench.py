"""`filter-bench`: the corruption suite, AUROC and the report."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
from click.testing import CliRunner

from microvqa_pp.cli import main
from microvqa_pp.graph import dataset
from microvqa_pp.graph.bench import CORRUPTIONS, auroc, corrupt, evaluate_scores


@pytest.fixture(scope="module")
def suite(sample):
    return corrupt(sample.figures, sample.qas, share=0.1, seed=0)


def test_suite_corrupts_each_type(suite, sample):
    counts = suite.counts()
    target = round(0.1 * len(sample.qas))
    for corruption in ("moved_qa", "foreign_answer", "altered_answer"):
        assert counts[corruption] == target
    assert target <= counts["swapped_caption"] <= target + 6
    assert counts["clean"] == len(sample.qas) - sum(counts[name] for name in CORRUPTIONS)
    assert len(suite.qas) == len(sample.qas)


def test_clean_qas_are_untouched(suite, sample):
    figures = {figure.figure_id: figure for figure in sample.figures}
    corrupted_figures = {figure.figure_id for figure in suite.figures if figure.caption != figures[figure.figure_id].caption}
    for original, changed, label in zip(sample.qas, suite.qas, suite.labels):
        if not label:
            assert changed == original
            assert changed.figure_id not in corrupted_figures


def test_each_corruption_changes_what_it_names(suite, sample):
    figures = {figure.figure_id: figure for figure in sample.figures}
    suite_figures = {figure.figure_id: figure for figure in suite.figures}
    other_answers = {qa.answer for qa in sample.qas}
    for original, changed, label in zip(sample.qas, suite.qas, suite.labels):
        if label == "moved_qa":
            assert changed.figure_id != original.figure_id
            assert (changed.question, changed.answer) == (original.question, original.answer)
        elif label == "foreign_answer":
            assert changed.answer in other_answers
            assert changed.answer != original.answer
            assert changed.figure_id == original.figure_id
            assert changed.question == original.question
        elif label == "swapped_caption":
            assert changed == original
            assert suite_figures[original.figure_id].caption != figures[original.figure_id].caption
            assert suite_figures[original.figure_id].image_path == figures[original.figure_id].image_path
        elif label == "altered_answer":
            assert changed.answer != original.answer
            assert changed.answer_span == changed.answer
            prefix = len(os.path.commonprefix([original.answer, changed.answer]))
            suffix = len(os.path.commonprefix([original.answer[::-1], changed.answer[::-1]]))
            replaced = changed.answer[prefix : len(changed.answer) - suffix]
            assert re.search(r"[0-9A-Z]", replaced), (original.answer, changed.answer)


def test_swapped_captions_are_exchanged_in_pairs(suite, sample):
    before = sorted(figure.caption for figure in sample.figures)
    after = sorted(figure.caption for figure in suite.figures)
    assert before == after


def test_suite_is_seeded(sample):
    first = corrupt(sample.figures, sample.qas, seed=3)
    second = corrupt(sample.figures, sample.qas, seed=3)
    other = corrupt(sample.figures, sample.qas, seed=4)
    assert first.labels == second.labels
    assert first.qas == second.qas
    assert first.labels != other.labels


def test_auroc_matches_scikit_learn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    clean = rng.normal(1.0, 1.0, 50).round(1)
    corrupted = rng.normal(0.0, 1.0, 30).round(1)
    expected = roc_auc_score([1] * 50 + [0] * 30, np.concatenate([clean, corrupted]))
    assert auroc(clean, corrupted) == pytest.approx(expected)
    assert auroc(np.array([1.0, 2.0]), np.array([0.0])) == 1.0
    assert auroc(np.array([0.5]), np.array([0.5])) == 0.5


def test_evaluate_scores_by_corruption():
    labels = ["", "", "", "", "moved_qa", "altered_answer", "", ""]
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.1, 0.65, 0.95, np.nan])
    result = evaluate_scores(scores, labels, keep_share=0.75)
    # The QA without a score counts as the lowest, and 5 of the 7 scored QAs are kept.
    assert result["by_corruption"]["moved_qa"] == {"auroc": pytest.approx(5 / 6), "removed_at_keep": 1.0, "count": 1}
    assert result["by_corruption"]["altered_answer"] == {"auroc": pytest.approx(4 / 6), "removed_at_keep": 0.0, "count": 1}
    assert result["removed_at_keep"] == 0.5
    assert result["clean_removed_at_keep"] == pytest.approx(2 / 6)


def test_filter_bench_json(make_scored_run, sample, tmp_path, monkeypatch):
    monkeypatch.setattr(dataset, "signals_function", lambda run, config: sample.score)
    run = make_scored_run(tmp_path / "run")
    settings = ["--set", "filter.epochs=20", "--set", "filter.hidden_channels=16"]
    result = CliRunner().invoke(main, ["filter-bench", str(run.root), "--json", "--seeds", "1", *settings])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"graph", "text", "lexical"} <= set(report["methods"])
    assert report["unavailable"] == ["clip", "nli"]
    for name, method in report["methods"].items():
        assert 0.0 <= method["auroc"] <= 1.0, name
        assert 0.0 <= method["removed_at_keep"] <= 1.0, name
        assert set(method["by_corruption"]) == set(CORRUPTIONS), name
    assert set(report["methods"]) == {"graph", "text", "lexical"}
    assert set(report["components"]) == {"graph:nli", "graph:alignment", "span_found"}
    assert report["methods"]["lexical"]["auroc"] > 0.8
    assert report["suite"]["seeds"] == [0]
    stored = json.loads((run.root / "manifest.json").read_text())["config"]["filter"]
    assert stored["epochs"] == 300

    table = CliRunner().invoke(main, ["filter-bench", str(run.root), "--seeds", "1", *settings])
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["method", "AUROC", "removed@keep"]
    assert "moved_qa AUROC/removed" in lines[0]
    lexical = report["methods"]["lexical"]["by_corruption"]["moved_qa"]
    lexical_row = next(line for line in lines if line.startswith("lexical "))
    assert f"{lexical['auroc']:.3f} / {lexical['removed_at_keep']:.2f}" in lexical_row
