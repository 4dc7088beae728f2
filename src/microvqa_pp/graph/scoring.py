"""Score the QAs of one graph: train the HiCQA-Graph, predict both heads, fuse, and score baselines."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from microvqa_pp.config import FilterConfig
from microvqa_pp.graph.baselines import baseline_scores
from microvqa_pp.graph.build import GraphArrays, build_graph, describe
from microvqa_pp.graph.partition import PartitionedGraph
from microvqa_pp.graph.signals import SignalSpec, signal_index
from microvqa_pp.graph.train import TrainingResult, fit, fuse, predict_heads, score_folds

logger = logging.getLogger(__name__)

SINGLE_THREAD_BELOW = 20_000
"""QA count under which training runs on one CPU thread, unless `filter.threads` is set."""


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with `count` PyTorch CPU threads (None: leave the setting alone)."""
    import torch

    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass
class GraphScores:
    """Per-QA scores of one graph, aligned with its QA nodes.

    `heads` [Q, 2] contains the `nli` and `alignment` head probabilities and `fused` [Q] the
    consistency score; both are None when only baselines were computed. `baselines` maps each
    baseline method to its scores (NaN where its signal is missing).
    """

    spec: SignalSpec
    baselines: dict[str, np.ndarray]
    judge: np.ndarray
    heads: np.ndarray | None = None
    fused: np.ndarray | None = None
    training: TrainingResult | None = None
    graph_counts: dict[str, int] | None = None

    def method_scores(self, method: str) -> np.ndarray:
        """Return the scores that rank QAs under a filter method (`graph` or a baseline)."""
        if method == "graph":
            if self.fused is None:
                raise ValueError("the graph was not trained for these scores")
            return self.fused
        return self.baselines[method]


def score_graph(arrays: GraphArrays, settings: FilterConfig, seed: int = 0, *, train_graph: bool = True) -> GraphScores:
    """Compute baseline scores and, with `train_graph`, train the graph and compute its scores."""
    spec = SignalSpec.fit(arrays.signals)
    result = GraphScores(
        spec=spec,
        baselines=baseline_scores(arrays.signals),
        judge=arrays.signals[:, signal_index("judge_score")].astype(np.float64),
    )
    if not train_graph:
        return result
    if arrays.num_qas == 0:
        result.heads = np.zeros((0, 2), dtype=np.float32)
        result.fused = np.zeros(0)
        return result

    data = build_graph(
        arrays,
        spec,
        knn_k=settings.knn_k,
        exact_below=settings.knn_exact_below,
        trees=settings.knn_trees,
        seed=seed,
    )
    result.graph_counts = describe(data)
    logger.info(
        "filter: graph of %d images, %d captions and %d QAs with %d edges",
        data["image"].num_nodes,
        data["caption"].num_nodes,
        data["qa"].num_nodes,
        sum(data[edge_type].num_edges for edge_type in data.edge_types),
    )
    graph = PartitionedGraph(data, settings.batch_qas)
    with torch_threads(settings.threads or (1 if arrays.num_qas < SINGLE_THREAD_BELOW else None)):
        result.training = fit(graph, spec, settings, seed=seed)
        result.heads = predict_heads(result.training.model, graph, spec, score_folds(arrays.num_qas, seed), halo=settings.score_halo)
    result.fused = fuse(result.heads, result.judge, settings, result.training.explained_variance)
    return result
