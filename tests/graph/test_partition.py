"""Partitions of whole figures for graphs larger than one batch."""

from __future__ import annotations

import numpy as np
import torch

from microvqa_pp.graph.build import GraphArrays, build_graph
from microvqa_pp.graph.partition import PartitionedGraph
from microvqa_pp.graph.signals import SIGNALS, SignalSpec, signal_index


def clustered_arrays(num_figures: int = 900, topics: int = 45, seed: int = 0) -> GraphArrays:
    """Three QAs per figure; figures of one topic have similar images, captions and QAs."""
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, topics, num_figures)
    qa_figure = np.repeat(np.arange(num_figures), 3)
    image_centres = rng.standard_normal((topics, 16)).astype(np.float32)
    text_centres = rng.standard_normal((topics, 24)).astype(np.float32)
    signals = np.full((qa_figure.size, len(SIGNALS)), np.nan, dtype=np.float32)
    signals[:, signal_index("text_similarity")] = rng.random(qa_figure.size)
    signals[:, signal_index("lexical_overlap")] = rng.random(qa_figure.size)
    return GraphArrays(
        image=image_centres[topic] + 0.3 * rng.standard_normal((num_figures, 16)).astype(np.float32),
        caption=text_centres[topic] + 0.3 * rng.standard_normal((num_figures, 24)).astype(np.float32),
        qa=text_centres[topic[qa_figure]] + 0.3 * rng.standard_normal((qa_figure.size, 24)).astype(np.float32),
        qa_figure=qa_figure,
        signals=signals,
        task=np.zeros(qa_figure.size, dtype=np.int64),
    )


def test_small_graph_is_one_partition():
    arrays = clustered_arrays(num_figures=30)
    data = build_graph(arrays, SignalSpec.fit(arrays.signals), knn_k=4)
    graph = PartitionedGraph(data, batch_qas=1000)
    assert len(graph) == 1
    assert graph[0] is data
    assert graph.kept_edge_share == 1.0


def test_partitions_keep_figures_whole_and_most_edges():
    arrays = clustered_arrays()
    data = build_graph(arrays, SignalSpec.fit(arrays.signals), knn_k=5)
    graph = PartitionedGraph(data, batch_qas=300)
    assert len(graph) == 9
    assert graph.kept_edge_share > 0.9

    seen = []
    for part in range(len(graph)):
        batch = graph[part]
        qa_ids = graph.qa_ids[part]
        figures = graph.members["image"][part]
        assert batch["qa"].num_nodes == qa_ids.numel() <= 300
        assert set(data["qa"].figure[qa_ids].tolist()) == set(figures.tolist())
        assert torch.equal(batch["qa"].x, data["qa"].x[qa_ids])
        assert torch.equal(batch["image"].x, data["image"].x[figures])
        own_figure = batch["caption", "grounds", "qa"].edge_index
        assert torch.equal(figures[own_figure[0]], data["qa"].figure[qa_ids[own_figure[1]]])
        seen.append(qa_ids)
    assert torch.equal(torch.cat(seen).sort().values, torch.arange(arrays.num_qas))


def test_halo_brings_every_neighbour_of_the_partition():
    arrays = clustered_arrays()
    data = build_graph(arrays, SignalSpec.fit(arrays.signals), knn_k=5)
    graph = PartitionedGraph(data, batch_qas=300)
    qa_qa = data["qa", "similar_to", "qa"].edge_index
    seen = []
    for part in range(len(graph)):
        batch, qa_ids, own = graph.with_halo(part)
        assert torch.equal(qa_ids[own].sort().values, graph.qa_ids[part].sort().values)
        assert torch.equal(batch["qa"].x, data["qa"].x[qa_ids])
        # Every QA-QA edge that touches the partition is in the subgraph, with its ends mapped.
        own_set = set(graph.qa_ids[part].tolist())
        expected = {(a, b) for a, b in qa_qa.t().tolist() if a in own_set or b in own_set}
        local = batch["qa", "similar_to", "qa"].edge_index
        present = {(int(qa_ids[a]), int(qa_ids[b])) for a, b in local.t().tolist()}
        assert expected <= present
        # Halo figures come whole: each QA node's figure has all its QAs in the subgraph.
        figures = set(data["qa"].figure[qa_ids].tolist())
        assert set(qa_ids.tolist()) == {q for q in range(arrays.num_qas) if int(arrays.qa_figure[q]) in figures}
        seen.append(qa_ids[own])
    assert torch.equal(torch.cat(seen).sort().values, torch.arange(arrays.num_qas))


def test_single_partition_halo_is_the_graph():
    arrays = clustered_arrays(num_figures=30)
    data = build_graph(arrays, SignalSpec.fit(arrays.signals), knn_k=4)
    batch, qa_ids, own = PartitionedGraph(data, batch_qas=1000).with_halo(0)
    assert batch is data
    assert torch.equal(qa_ids, torch.arange(arrays.num_qas))
    assert bool(own.all())


def test_halo_scores_match_whole_graph():
    # With one message-passing layer a QA's score depends only on its direct neighbours, which
    # the halo always brings, so partitioned scoring must reproduce whole-graph scoring.
    from microvqa_pp.config import FilterConfig
    from microvqa_pp.graph.train import build_model, predict_heads, score_folds

    arrays = clustered_arrays()
    spec = SignalSpec.fit(arrays.signals)
    data = build_graph(arrays, spec, knn_k=5)
    torch.manual_seed(0)
    model = build_model(data, FilterConfig(hidden_channels=16, num_layers=1, heads=2))
    folds = score_folds(arrays.num_qas, seed=0)

    partitioned = PartitionedGraph(data, batch_qas=300)
    assert partitioned.kept_edge_share < 1.0
    whole = predict_heads(model, PartitionedGraph(data, batch_qas=10_000), spec, folds)
    with_halo = predict_heads(model, partitioned, spec, folds, halo=True)
    without_halo = predict_heads(model, partitioned, spec, folds)
    assert np.allclose(with_halo, whole, atol=1e-5)
    assert not np.allclose(without_halo, whole, atol=1e-5)
