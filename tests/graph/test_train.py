"""Training: seeded runs are bitwise identical, hiding stops the identity, partitions and fusion."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from microvqa_pp.config import FilterConfig
from microvqa_pp.graph.build import build_graph
from microvqa_pp.graph.inputs import FilterInputs, embedding_tables, place
from microvqa_pp.graph.partition import PartitionedGraph
from microvqa_pp.graph.scoring import score_graph
from microvqa_pp.graph.signals import SignalSpec, signal_index
from microvqa_pp.graph.train import fit, fuse, predict_heads, score_folds

SETTINGS = FilterConfig(hidden_channels=32, epochs=40, patience=15, knn_k=5)
LEARNING = FilterConfig(hidden_channels=32, epochs=80, patience=30, knn_k=5, learning_rate=5e-3, dropout=0.1)
"""Settings that fit the small sample within 80 epochs, for tests of what the heads learn."""


@pytest.fixture(scope="module")
def arrays(sample):
    by_qa = {record.qa_id: record for record in sample.signals}
    inputs = FilterInputs(sample.figures, sample.qas, [by_qa[qa.qa_id] for qa in sample.qas], embedding_tables(sample.embeddings))
    return place(inputs).arrays


def test_seeded_training_gives_identical_scores(arrays):
    first = score_graph(arrays, SETTINGS, seed=7)
    second = score_graph(arrays, SETTINGS, seed=7)
    assert first.fused is not None
    assert np.array_equal(first.heads, second.heads)
    assert np.array_equal(first.fused, second.fused)
    assert [row["train_loss"] for row in first.training.history] == [row["train_loss"] for row in second.training.history]


def test_another_seed_gives_other_scores(arrays):
    first = score_graph(arrays, SETTINGS, seed=7)
    other = score_graph(arrays, SETTINGS, seed=8)
    assert not np.array_equal(first.fused, other.fused)


def test_training_logs_one_line_per_epoch(arrays, caplog):
    caplog.set_level("INFO", logger="microvqa_pp.graph.train")
    result = score_graph(arrays, SETTINGS, seed=1).training
    epoch_lines = [record for record in caplog.records if "epoch" in record.getMessage() and "train loss" in record.getMessage()]
    assert len(epoch_lines) == len(result.history)
    assert 1 <= result.best_epoch <= len(result.history) <= SETTINGS.epochs
    assert result.held_out == round(SETTINGS.held_out_share * arrays.num_qas)


def test_heads_learn_the_weak_labels(arrays):
    scores = score_graph(arrays, LEARNING, seed=0)
    labels = SignalSpec.fit(arrays.signals).weak_labels(arrays.signals)
    for column, head in enumerate(("nli", "alignment")):
        correlation = np.corrcoef(scores.heads[:, column], labels[head])[0, 1]
        assert correlation > 0.4, head


def _shuffled_signal_run(arrays, signal: str, head: str, seed: int, spec_update: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle one signal across QAs, train, and return (head predictions, shuffled labels) on probes.

    Probe QAs have their weak labels removed from training and early stopping, but keep their
    signals in the graph. A head that could read its own signal would copy it there, while
    neither fitting nor the choice of epoch can explain a correlation on them.
    """
    signals = arrays.signals.copy()
    column = signal_index(signal)
    signals[:, column] = np.random.default_rng(seed).permutation(signals[:, column])
    shuffled = dataclasses.replace(arrays, signals=signals)
    spec = SignalSpec.fit(signals)
    if spec_update:
        spec = dataclasses.replace(spec, **spec_update)
    data = build_graph(shuffled, spec, knn_k=5)
    labels = data["qa"].y.clone()
    probe = torch.zeros(arrays.num_qas, dtype=torch.bool)
    probe[torch.randperm(arrays.num_qas, generator=torch.Generator().manual_seed(seed))[: arrays.num_qas // 2]] = True
    data["qa"].y[probe] = float("nan")

    graph = PartitionedGraph(data, batch_qas=10_000)
    result = fit(graph, spec, LEARNING, seed=seed)
    predicted = predict_heads(result.model, graph, spec, score_folds(arrays.num_qas, seed))
    column = ("nli", "alignment").index(head)
    return predicted[probe.numpy(), column], labels[probe, column].numpy()


@pytest.mark.parametrize(("signal", "head"), [("text_similarity", "alignment"), ("lexical_overlap", "nli")])
def test_hidden_signal_is_not_reproduced_when_shuffled(arrays, signal, head):
    """Pooled over three shuffles (about 130 probe QAs), the correlation stays near zero."""
    runs = [_shuffled_signal_run(arrays, signal, head, seed) for seed in range(3)]
    predicted = np.concatenate([run[0] for run in runs])
    labels = np.concatenate([run[1] for run in runs])
    assert abs(np.corrcoef(predicted, labels)[0, 1]) < 0.3


@pytest.mark.parametrize(("signal", "head"), [("text_similarity", "alignment"), ("lexical_overlap", "nli")])
def test_without_hiding_the_head_reproduces_the_shuffled_signal(arrays, signal, head):
    """The control of the test above: a head that can see its own signal copies it."""
    predicted, labels = _shuffled_signal_run(arrays, signal, head, 0, {"hidden": {"nli": [], "alignment": []}})
    assert np.corrcoef(predicted, labels)[0, 1] > 0.8


@pytest.fixture(scope="module")
def full_arrays(arrays):
    """The sample's arrays with NLI probabilities and CLIP similarities filled in, as the full profile has."""
    rng = np.random.default_rng(11)
    signals = arrays.signals.copy()
    probabilities = rng.dirichlet((2.0, 1.0, 1.0), arrays.num_qas)
    for column, name in enumerate(("nli_entailment", "nli_neutral", "nli_contradiction")):
        signals[:, signal_index(name)] = probabilities[:, column]
    signals[:, signal_index("clip_image_caption")] = rng.normal(0.3, 0.04, arrays.num_qas)
    signals[:, signal_index("clip_image_qa")] = rng.normal(0.25, 0.04, arrays.num_qas)
    return dataclasses.replace(arrays, signals=signals)


@pytest.mark.parametrize(("signal", "head"), [("nli_entailment", "nli"), ("clip_image_qa", "alignment")])
def test_full_profile_hidden_signal_is_not_reproduced(full_arrays, signal, head):
    """With NLI and CLIP present they become the weak labels; hiding must keep them from the heads."""
    assert SignalSpec.fit(full_arrays.signals).label_sources[head] == signal
    runs = [_shuffled_signal_run(full_arrays, signal, head, seed) for seed in range(3)]
    predicted = np.concatenate([run[0] for run in runs])
    labels = np.concatenate([run[1] for run in runs])
    assert abs(np.corrcoef(predicted, labels)[0, 1]) < 0.3


@pytest.mark.parametrize(("signal", "head"), [("nli_entailment", "nli"), ("clip_image_qa", "alignment")])
def test_full_profile_control_without_hiding(full_arrays, signal, head):
    predicted, labels = _shuffled_signal_run(full_arrays, signal, head, 0, {"hidden": {"nli": [], "alignment": []}})
    assert np.corrcoef(predicted, labels)[0, 1] > 0.8


def test_partitioned_training_scores_every_qa_once(arrays):
    spec = SignalSpec.fit(arrays.signals)
    data = build_graph(arrays, spec, knn_k=5)
    graph = PartitionedGraph(data, batch_qas=30)
    assert len(graph) >= 3
    qa_ids = torch.cat(graph.qa_ids)
    assert torch.equal(qa_ids.sort().values, torch.arange(arrays.num_qas))
    for part in range(len(graph)):
        batch = graph[part]
        figures_of_qas = set(data["qa"].figure[graph.qa_ids[part]].tolist())
        assert figures_of_qas == set(graph.members["image"][part].tolist())
        assert batch["qa"].num_nodes <= 30 + 10
        caption_edges = batch["caption", "grounds", "qa"].edge_index
        assert int(caption_edges[0].max()) < batch["caption"].num_nodes
        assert int(caption_edges[1].max()) < batch["qa"].num_nodes

    result = fit(graph, spec, FilterConfig(hidden_channels=16, epochs=5, patience=5), seed=0)
    predicted = predict_heads(result.model, graph, spec, score_folds(arrays.num_qas, 0))
    assert predicted.shape == (arrays.num_qas, 2)
    assert np.isfinite(predicted).all()
    assert ((predicted > 0) & (predicted < 1)).all()


def test_fusion_is_a_weighted_log_odds_pool():
    heads = np.array([[0.9, 0.5], [0.2, 0.2], [0.5, 0.5]])
    judge = np.array([np.nan, 0.8, np.nan])
    settings = FilterConfig(reliability_weighting=False)
    fused = fuse(heads, judge, settings)
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    expected_first = 1 / (1 + np.exp(-(logit(0.9) + logit(0.5)) / 2))
    expected_second = 1 / (1 + np.exp(-(2 * logit(0.2) + logit(0.8)) / 3))
    assert fused[0] == pytest.approx(expected_first)
    assert fused[1] == pytest.approx(expected_second)
    assert fused[2] == pytest.approx(0.5)


def test_fusion_weights_reliable_heads_more():
    heads = np.array([[0.9, 0.1]])
    judge = np.array([np.nan])
    balanced = fuse(heads, judge, FilterConfig(), [0.5, 0.5])
    nli_reliable = fuse(heads, judge, FilterConfig(), [0.9, 0.0])
    assert balanced[0] == pytest.approx(0.5)
    assert nli_reliable[0] > 0.75


def test_graph_without_qas_scores_nothing(arrays):
    empty = dataclasses.replace(
        arrays,
        qa=arrays.qa[:0],
        qa_figure=arrays.qa_figure[:0],
        signals=arrays.signals[:0],
        task=arrays.task[:0],
    )
    scores = score_graph(empty, SETTINGS, seed=0)
    assert scores.fused.shape == (0,)
    assert scores.training is None


def test_score_halo_changes_only_the_final_scores(arrays):
    plain = SETTINGS.model_copy(update={"batch_qas": 30})
    with_halo = SETTINGS.model_copy(update={"batch_qas": 30, "score_halo": True})
    first = score_graph(arrays, plain, seed=3)
    second = score_graph(arrays, with_halo, seed=3)
    assert first.training.history == second.training.history
    assert not np.allclose(first.heads, second.heads)
