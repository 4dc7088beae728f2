"""k-nearest-neighbour graphs by cosine similarity, exact for small sets and approximate for large ones.

Exact search compares every pair in blocks, so its memory stays bounded but its time grows with the
square of the node count. Above `exact_below` nodes, `knn_graph` uses a random-projection forest
instead: each tree splits the points recursively at the median of a projection (on the line
through two random points of the node) until the leaves contain at most `leaf_size` points. The
exact neighbours are found within each leaf, the candidates of all trees are merged, and one
round of neighbour-of-neighbour search improves them. Time and memory then grow as N log N (the tree depth) times the
leaf size, which is close to linear for the sizes this tool meets.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

SIMILARITY_BLOCK = 1 << 24
"""Entries of one block of the similarity matrix (64 MiB of float32)."""



def normalise(x: Tensor) -> Tensor:
    """Scale rows to unit length (all-zero rows stay zero)."""
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def exact_knn(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Return the `k` most cosine-similar other rows of every row of `x` [N, D].

    Returns (indices [N, k], similarities [N, k]), best first. Time O(N^2 D), memory O(N + block).
    """
    x = normalise(x.float())
    num_nodes = x.size(0)
    block = max(1, SIMILARITY_BLOCK // max(num_nodes, 1))
    indices, similarities = [], []
    for start in range(0, num_nodes, block):
        stop = min(start + block, num_nodes)
        scores = x[start:stop] @ x.T
        rows = torch.arange(stop - start)
        scores[rows, rows + start] = -math.inf
        top = scores.topk(k, dim=1)
        indices.append(top.indices)
        similarities.append(top.values)
    return torch.cat(indices), torch.cat(similarities)


SKETCH_WIDTH = 32
"""Trees split a random projection of the points to this many dimensions (if they have more)."""


def _sketch(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Project points on SKETCH_WIDTH random Gaussian directions.

    Distances between points are roughly preserved (Johnson-Lindenstrauss), which is all a tree
    split needs, and each tree level then reads 32 values per point instead of all of them.
    """
    if points.shape[1] <= SKETCH_WIDTH:
        return points
    return points @ rng.standard_normal((points.shape[1], SKETCH_WIDTH)).astype(np.float32)


def tree_leaves(points: np.ndarray, leaf_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split points [N, D] into leaves of at most `leaf_size` by recursive median splits.

    Each tree node draws two of its points and splits at the median of the projection on the
    line through them. On clustered data that line tends to run between clusters, where a random
    direction would cut through them. Returns (order, leaf_starts): the points in
    leaf order, and the position where each leaf starts (plus N at the end).
    """
    num_nodes = points.shape[0]
    order = np.arange(num_nodes)
    starts = np.array([0, num_nodes])
    keys = np.empty(num_nodes, dtype=np.float32)
    block = max(1, SIMILARITY_BLOCK // max(points.shape[1], 1))
    while (np.diff(starts) > leaf_size).any():
        sizes = np.diff(starts)
        group = np.repeat(np.arange(sizes.size), sizes)
        first = order[starts[:-1] + rng.integers(0, sizes)]
        second = order[starts[:-1] + rng.integers(0, sizes)]
        directions = points[first] - points[second]
        for begin in range(0, num_nodes, block):
            stop = min(begin + block, num_nodes)
            keys[begin:stop] = np.einsum("nd,nd->n", points[order[begin:stop]], directions[group[begin:stop]])
        # Sort within each group by its key: lexsort orders by the last key first.
        order = order[np.lexsort((keys, group))]
        splits = sizes > leaf_size
        middles = starts[:-1][splits] + sizes[splits] // 2
        starts = np.union1d(starts, middles)
    return order, starts


def _leaf_knn(x: Tensor, order: np.ndarray, starts: np.ndarray, k: int) -> tuple[Tensor, Tensor]:
    """Exact neighbours of every point among the points of its leaf. Returns [N, k] indices, sims."""
    num_nodes = x.size(0)
    sizes = np.diff(starts)
    width = int(sizes.max())
    num_leaves = sizes.size
    # Pad every leaf to `width` slots; -1 marks an empty slot.
    slots = np.full((num_leaves, width), -1, dtype=np.int64)
    columns = np.arange(order.size) - np.repeat(starts[:-1], sizes)
    slots[np.repeat(np.arange(num_leaves), sizes), columns] = order
    slots_t = torch.from_numpy(slots)

    indices = torch.full((num_nodes, k), -1, dtype=torch.long)
    similarities = torch.full((num_nodes, k), -math.inf)
    chunk = max(1, SIMILARITY_BLOCK // (width * width))
    for begin in range(0, num_leaves, chunk):
        members = slots_t[begin : begin + chunk]
        valid = members >= 0
        vectors = x[members.clamp_min(0)] * valid.unsqueeze(-1)
        scores = vectors @ vectors.transpose(1, 2)
        scores.masked_fill_(~valid.unsqueeze(1), -math.inf)
        scores.diagonal(dim1=1, dim2=2).fill_(-math.inf)
        top = scores.topk(min(k, width), dim=2)
        neighbours = torch.gather(members.unsqueeze(1).expand(-1, width, -1), 2, top.indices)
        rows = members[valid]
        count = top.values.size(2)
        indices[rows, :count] = neighbours[valid]
        similarities[rows, :count] = top.values[valid]
    indices[similarities == -math.inf] = -1
    return indices, similarities


def _merge_candidates(indices: Tensor, similarities: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Keep the `k` best distinct candidates per row of [N, C] candidate lists."""
    order = indices.argsort(dim=1, stable=True)
    indices = indices.gather(1, order)
    similarities = similarities.gather(1, order)
    repeated = torch.zeros_like(indices, dtype=torch.bool)
    repeated[:, 1:] = indices[:, 1:] == indices[:, :-1]
    similarities = similarities.masked_fill(repeated | (indices < 0), -math.inf)
    top = similarities.topk(k, dim=1)
    return indices.gather(1, top.indices), top.values


def _refine(x: Tensor, indices: Tensor, similarities: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Improve neighbour lists by also trying the neighbours of neighbours (one NN-descent round).

    Costs O(N k^2 D) in blocks of rows; a neighbour of a neighbour is often a neighbour.
    """
    num_nodes = x.size(0)
    block = max(1, SIMILARITY_BLOCK // (k * k * x.size(1)))
    refined_indices, refined_similarities = [], []
    for start in range(0, num_nodes, block):
        stop = min(start + block, num_nodes)
        first = indices[start:stop]
        second = indices[first.clamp_min(0)].reshape(stop - start, k * k)
        second = second.masked_fill((first < 0).repeat_interleave(k, dim=1) | (second < 0), -1)
        rows = torch.arange(start, stop).unsqueeze(1)
        second = second.masked_fill(second == rows, -1)
        scores = torch.einsum("nd,ncd->nc", x[start:stop], x[second.clamp_min(0)])
        scores = scores.masked_fill(second < 0, -math.inf)
        merged = _merge_candidates(
            torch.cat([first, second], 1), torch.cat([similarities[start:stop], scores], 1), k
        )
        refined_indices.append(merged[0])
        refined_similarities.append(merged[1])
    return torch.cat(refined_indices), torch.cat(refined_similarities)


def approximate_knn(
    x: Tensor, k: int, *, trees: int = 4, leaf_size: int = 256, refine_rounds: int = 1, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Return approximate cosine neighbours [N, k] (indices, similarities) from a random-projection forest.

    The forest's candidates are then improved by `refine_rounds` rounds of neighbour-of-neighbour
    search. Rows with fewer than `k` candidates are padded with index -1 and similarity -inf.
    """
    x = normalise(x.float())
    rng = np.random.default_rng(seed)
    sketch = _sketch(x.numpy(), rng)
    leaf_size = max(leaf_size, 2 * k + 2)
    candidate_indices, candidate_similarities = [], []
    for _ in range(trees):
        order, starts = tree_leaves(sketch, leaf_size, rng)
        tree_indices, tree_similarities = _leaf_knn(x, order, starts, k)
        candidate_indices.append(tree_indices)
        candidate_similarities.append(tree_similarities)
    indices, similarities = _merge_candidates(torch.cat(candidate_indices, 1), torch.cat(candidate_similarities, 1), k)
    for _ in range(refine_rounds):
        indices, similarities = _refine(x, indices, similarities, k)
    return indices, similarities


def knn_graph(x: Tensor, k: int, *, exact_below: int = 20_000, trees: int = 4, seed: int = 0) -> Tensor:
    """Return the symmetric k-nearest-neighbour edges [2, E] of the rows of `x` by cosine similarity.

    Each row is linked to its `k` most similar other rows and every edge is added in both
    directions (duplicates removed), so a node has at least `k` neighbours when N > k.
    """
    num_nodes = x.size(0)
    k = min(k, num_nodes - 1)
    if k <= 0:
        return torch.empty(2, 0, dtype=torch.long)
    if num_nodes < exact_below:
        indices, _ = exact_knn(x, k)
    else:
        indices, _ = approximate_knn(x, k, trees=trees, seed=seed)
    targets = torch.arange(num_nodes).repeat_interleave(k)
    sources = indices.reshape(-1)
    keep = sources >= 0
    edges = torch.stack([sources[keep], targets[keep]])
    return _unique_undirected(edges, num_nodes)


def _unique_undirected(edges: Tensor, num_nodes: int) -> Tensor:
    both = torch.cat([edges, edges.flip(0)], dim=1)
    keys = torch.unique(both[0] * num_nodes + both[1])
    return torch.stack([keys // num_nodes, keys % num_nodes])
