"""Nearest-neighbour edges: exact search, the random-projection forest, and the edge list."""

from __future__ import annotations

import torch

from microvqa_pp.graph.knn import approximate_knn, exact_knn, knn_graph, normalise


def brute_force(x: torch.Tensor, k: int) -> torch.Tensor:
    x = normalise(x)
    scores = x @ x.T
    scores.fill_diagonal_(-float("inf"))
    return scores.topk(k, dim=1).indices


def clustered(count: int, dim: int = 32, clusters: int = 40, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    centers = torch.randn(clusters, dim, generator=generator)
    members = torch.randint(0, clusters, (count,), generator=generator)
    return centers[members] + 0.3 * torch.randn(count, dim, generator=generator)


def test_exact_knn_matches_brute_force():
    x = clustered(300)
    indices, similarities = exact_knn(x, 5)
    expected = brute_force(x, 5)
    assert torch.equal(indices.sort(dim=1).values, expected.sort(dim=1).values)
    assert (similarities[:, :-1] >= similarities[:, 1:]).all()


def test_exact_knn_never_returns_self():
    x = clustered(200)
    indices, _ = exact_knn(x, 7)
    assert not (indices == torch.arange(200).unsqueeze(1)).any()


def test_approximate_knn_recall_on_clustered_data():
    x = clustered(6000, dim=32, clusters=150)
    indices, _ = approximate_knn(x, 8, trees=4, leaf_size=128, seed=0)
    expected = brute_force(x, 8)
    recall = (indices.unsqueeze(2) == expected.unsqueeze(1)).any(2).float().mean().item()
    assert recall > 0.85
    assert not (indices == torch.arange(6000).unsqueeze(1)).any()


def test_approximate_knn_is_seeded():
    x = clustered(3000)
    first, _ = approximate_knn(x, 6, leaf_size=64, seed=3)
    second, _ = approximate_knn(x, 6, leaf_size=64, seed=3)
    assert torch.equal(first, second)


def test_knn_graph_is_symmetric_without_self_loops():
    x = clustered(120)
    edges = knn_graph(x, 4)
    pairs = set(map(tuple, edges.T.tolist()))
    assert all((target, source) in pairs for source, target in pairs)
    assert all(source != target for source, target in pairs)
    in_degree = torch.bincount(edges[1], minlength=120)
    assert int(in_degree.min()) >= 4


def test_knn_graph_forest_above_limit():
    x = clustered(500)
    edges = knn_graph(x, 4, exact_below=100)
    assert edges.size(1) >= 500 * 4
    assert int(torch.bincount(edges[1], minlength=500).min()) >= 4


def test_knn_graph_clamps_k_to_node_count():
    edges = knn_graph(torch.randn(3, 8), 10)
    assert edges.size(1) == 6
    assert knn_graph(torch.randn(1, 8), 10).size(1) == 0
