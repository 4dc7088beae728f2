"""Weakly supervised training of the HiCQA-Graph and scoring of every QA.

Training is masked prediction. On every step the QA nodes are split at random into two disjoint
halves: the first half has its NLI signals hidden and trains the `nli` head, the second has its
alignment signal hidden and trains the `alignment` head (see `hiding.model_inputs`). A head
therefore only predicts values that are hidden from its input, while that QA's other signals
and its neighbours' values stay visible. A share of QA nodes (`held_out_share`) never enters the loss;
their loss decides early stopping, and the weights of the best epoch are kept.

Scoring repeats the same split with a fixed, seeded assignment of QAs to two folds, in two passes,
so every QA gets both head predictions while the predicted signal is hidden.

The fused consistency score pools the two head probabilities and, for QAs that have one, the
agent judge's score as a weighted logarithmic opinion pool: the weighted mean of their log-odds,
mapped back to (0, 1). Each head's weight is its configured weight times the inverse of the share
of its weak label's variance that it leaves unexplained on the held-out QAs, 1 / (1 - R^2)
(inverse-variance weighting), so a head whose label the graph predicts well counts more than one
whose label is mostly noise.

Everything random draws from generators seeded by `seed`, so the same inputs and seed give
bitwise-identical scores on the same machine and thread count.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from microvqa_pp.config import FilterConfig
from microvqa_pp.graph.build import EDGE_TYPES
from microvqa_pp.graph.hiding import edge_dims, model_inputs, qa_input_width
from microvqa_pp.graph.nn import HEAD_NAMES, HiCQAGraph
from microvqa_pp.graph.partition import PartitionedGraph
from microvqa_pp.graph.signals import SignalSpec

logger = logging.getLogger(__name__)


@dataclass
class TrainingResult:
    """The trained model (weights of the best epoch) and the per-epoch losses."""

    model: HiCQAGraph
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_loss: float = math.inf
    stopped_early: bool = False
    held_out: int = 0
    held_out_mask: Tensor | None = None
    explained_variance: list[float] = field(default_factory=lambda: [0.0, 0.0])
    """Held-out R^2 of each head's predictions against its weak label (0 when unmeasured)."""


def build_model(data, settings: FilterConfig) -> HiCQAGraph:
    """Create an untrained model whose input widths match the graph `data`."""
    in_channels = {
        "image": int(data["image"].x.size(1)),
        "caption": int(data["caption"].x.size(1)),
        "qa": qa_input_width(int(data["qa"].x.size(1))),
    }
    return HiCQAGraph(
        in_channels,
        list(EDGE_TYPES),
        edge_dims(),
        hidden_channels=settings.hidden_channels,
        num_layers=settings.num_layers,
        heads=settings.heads,
        dropout=settings.dropout,
    )


def _masked_loss(logits: Tensor, labels: Tensor, mask: Tensor) -> tuple[Tensor, int]:
    """Binary cross-entropy with soft labels over the masked entries; (sum, count)."""
    mask = mask & ~torch.isnan(labels)
    count = int(mask.sum())
    if count == 0:
        return logits.sum() * 0.0, 0
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits[mask], labels[mask], reduction="sum")
    return loss, count


def _random_halves(num_qas: int, generator: torch.Generator) -> Tensor:
    """Return a boolean mask selecting a random half of `num_qas` nodes."""
    mask = torch.zeros(num_qas, dtype=torch.bool)
    mask[torch.randperm(num_qas, generator=generator)[: (num_qas + 1) // 2]] = True
    return mask


def fit(graph: PartitionedGraph, spec: SignalSpec, settings: FilterConfig, seed: int = 0) -> TrainingResult:
    """Train a model on the graph's weak labels with early stopping on held-out QA nodes."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    data = graph.data
    num_qas = data["qa"].num_nodes
    labelled = ~torch.isnan(data["qa"].y).all(dim=1)

    candidates = labelled.nonzero().squeeze(1)
    candidates = candidates[torch.randperm(candidates.numel(), generator=generator)]
    held_out_count = int(round(settings.held_out_share * candidates.numel()))
    if candidates.numel() - held_out_count < 1:
        held_out_count = 0
    held_out = torch.zeros(num_qas, dtype=torch.bool)
    held_out[candidates[:held_out_count]] = True
    train_mask = labelled & ~held_out
    folds = _random_halves(num_qas, generator)

    model = build_model(data, settings)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    result = TrainingResult(model=model, held_out=held_out_count, held_out_mask=held_out)
    best_state = copy.deepcopy(model.state_dict())
    epochs_without_gain = 0
    logger.info(
        "filter: training on %d QAs (%d held out for early stopping), %d partition(s), up to %d epochs",
        int(train_mask.sum()),
        held_out_count,
        len(graph),
        settings.epochs,
    )

    for epoch in range(1, settings.epochs + 1):
        train_loss = train_epoch(model, optimizer, graph, spec, train_mask, generator)

        if held_out_count:
            probabilities = predict_heads(model, graph, spec, folds)
            held_out_loss = _probability_loss(probabilities, data["qa"].y, held_out)
        else:
            held_out_loss = train_loss
        improved = held_out_loss < result.best_loss - 1e-6
        if improved:
            result.best_loss = held_out_loss
            result.best_epoch = epoch
            best_state = copy.deepcopy(model.state_dict())
            epochs_without_gain = 0
        else:
            epochs_without_gain += 1
        result.history.append({"epoch": epoch, "train_loss": train_loss, "held_out_loss": held_out_loss})
        logger.info(
            "filter: epoch %3d/%d  train loss %.4f  held-out loss %.4f%s",
            epoch,
            settings.epochs,
            train_loss,
            held_out_loss,
            "  (best)" if improved else "",
        )
        if epochs_without_gain >= settings.patience:
            result.stopped_early = True
            logger.info("filter: no held-out improvement for %d epochs; stopping at epoch %d", settings.patience, epoch)
            break

    model.load_state_dict(best_state)
    model.eval()
    if held_out_count:
        probabilities = predict_heads(model, graph, spec, folds)
        result.explained_variance = explained_variance(probabilities, data["qa"].y.numpy(), held_out.numpy())
    logger.info(
        "filter: kept the weights of epoch %d (held-out loss %.4f, held-out R^2 of the heads: nli %.3f, alignment %.3f)",
        result.best_epoch,
        result.best_loss,
        *result.explained_variance,
    )
    return result


def explained_variance(predicted: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> list[float]:
    """Return R^2 of each column of `predicted` against `labels` over the masked rows, floored at 0."""
    values = []
    for column in range(predicted.shape[1]):
        rows = mask & ~np.isnan(labels[:, column])
        variance = float(labels[rows, column].var()) if rows.sum() > 1 else 0.0
        if variance <= 1e-12:
            values.append(0.0)
            continue
        error = float(((predicted[rows, column] - labels[rows, column]) ** 2).mean())
        values.append(max(0.0, 1.0 - error / variance))
    return values


def train_epoch(
    model: HiCQAGraph,
    optimizer: torch.optim.Optimizer,
    graph: PartitionedGraph,
    spec: SignalSpec,
    train_mask: Tensor,
    generator: torch.Generator,
) -> float:
    """Run one pass over the partitions in random order; return the mean loss per predicted label."""
    model.train()
    total_loss, total_count = 0.0, 0
    parts = torch.randperm(len(graph), generator=generator).tolist()
    for part in tqdm(parts, desc="filter: epoch", unit="partition", leave=False, disable=len(parts) < 2):
        batch = graph[part]
        qa_ids = graph.qa_ids[part]
        hide_nli = _random_halves(qa_ids.numel(), generator)
        x_dict, edge_index_dict, edge_attr_dict = model_inputs(batch, spec, {"nli": hide_nli, "alignment": ~hide_nli})
        logits = model(x_dict, edge_index_dict, edge_attr_dict)
        labels = batch["qa"].y
        trainable = train_mask[qa_ids]
        nli_loss, nli_count = _masked_loss(logits[:, 0], labels[:, 0], hide_nli & trainable)
        alignment_loss, alignment_count = _masked_loss(logits[:, 1], labels[:, 1], ~hide_nli & trainable)
        count = nli_count + alignment_count
        if count == 0:
            continue
        loss = (nli_loss + alignment_loss) / count
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * count
        total_count += count
    return total_loss / max(total_count, 1)


def _probability_loss(probabilities: np.ndarray, labels: Tensor, mask: Tensor) -> float:
    """Mean binary cross-entropy of predicted probabilities against soft labels over masked QAs."""
    predicted = torch.from_numpy(probabilities).clamp(1e-6, 1 - 1e-6)
    selected = mask.unsqueeze(1) & ~torch.isnan(labels)
    if not selected.any():
        return math.inf
    target = labels[selected]
    predicted = predicted[selected]
    loss = -(target * predicted.log() + (1 - target) * (1 - predicted).log())
    return float(loss.mean())


def score_folds(num_qas: int, seed: int) -> Tensor:
    """Return the fixed assignment of QAs to the two scoring folds (True: fold 0)."""
    return _random_halves(num_qas, torch.Generator().manual_seed(seed))


@torch.no_grad()
def predict_heads(model: HiCQAGraph, graph: PartitionedGraph, spec: SignalSpec, folds: Tensor, *, halo: bool = False) -> np.ndarray:
    """Return both heads' probabilities [Q, 2] for every QA, each predicted with its signal hidden.

    `folds` [Q] assigns QAs to two folds. Pass one hides the NLI signals of fold 0 and the
    alignment signal of fold 1, and pass two the reverse. Each prediction is read from the pass
    that hid its own signal.

    With `halo`, each partition is predicted together with the figures that similarity edges join
    to it (see `PartitionedGraph.with_halo`), so no QA loses a neighbour to the cut. The final
    scores use it when `filter.score_halo` is set. It costs more (at 1 M QAs in 20 partitions about
    ten times the plain pass, see benchmarks/README.md), so the held-out loss of early stopping,
    which only compares epochs with each other, always uses the plain partitions.
    """
    was_training = model.training
    model.eval()
    num_qas = graph.data["qa"].num_nodes
    probabilities = np.zeros((num_qas, len(HEAD_NAMES)), dtype=np.float32)
    for part in tqdm(range(len(graph)), desc="filter: scoring", unit="partition", leave=False, disable=len(graph) < 2):
        # Only the partition's own QAs are read; halo QAs are context.
        if halo:
            batch, qa_ids, own = graph.with_halo(part)
        else:
            batch, qa_ids = graph[part], graph.qa_ids[part]
            own = torch.ones(qa_ids.numel(), dtype=torch.bool)
        fold = folds[qa_ids]
        rows = qa_ids.numpy()
        own_rows = own.numpy()
        for hide_nli in (fold, ~fold):
            x_dict, edge_index_dict, edge_attr_dict = model_inputs(batch, spec, {"nli": hide_nli, "alignment": ~hide_nli})
            predicted = torch.sigmoid(model(x_dict, edge_index_dict, edge_attr_dict)).numpy()
            nli_rows = hide_nli.numpy() & own_rows
            alignment_rows = ~hide_nli.numpy() & own_rows
            probabilities[rows[nli_rows], 0] = predicted[nli_rows, 0]
            probabilities[rows[alignment_rows], 1] = predicted[alignment_rows, 1]
    model.train(was_training)
    return probabilities


MAX_EXPLAINED_VARIANCE = 0.95
"""R^2 is capped here before weighting, so one head's weight is at most 20 times its base weight."""

PROBABILITY_EPSILON = 1e-4
"""Probabilities are clipped to [eps, 1 - eps] before taking log-odds."""


def head_weights(settings: FilterConfig, explained: list[float]) -> np.ndarray:
    """Return the fusion weight of the `nli` and `alignment` heads (see the module docstring)."""
    base = np.array([settings.nli_weight, settings.alignment_weight], dtype=np.float64)
    if not settings.reliability_weighting:
        return base
    unexplained = 1.0 - np.minimum(np.asarray(explained, dtype=np.float64), MAX_EXPLAINED_VARIANCE)
    return base / unexplained


def _log_odds(probabilities: np.ndarray) -> np.ndarray:
    clipped = np.clip(probabilities.astype(np.float64), PROBABILITY_EPSILON, 1 - PROBABILITY_EPSILON)
    return np.log(clipped / (1 - clipped))


def fuse(heads: np.ndarray, judge: np.ndarray, settings: FilterConfig, explained: list[float] | None = None) -> np.ndarray:
    """Return the consistency score in (0, 1): a weighted logarithmic opinion pool.

    `heads` [Q, 2] are the `nli` and `alignment` probabilities. `judge` [Q] is the agent judge's
    score in [0, 1], NaN where there is none, in which case that QA's pool leaves the judge out.
    `explained` is each head's held-out R^2, for reliability weighting.
    """
    weights = head_weights(settings, explained if explained is not None else [0.0, 0.0])
    total = _log_odds(heads) @ weights
    weight_sum = np.full(heads.shape[0], weights.sum())
    has_judge = ~np.isnan(judge)
    total[has_judge] += settings.judge_weight * _log_odds(judge[has_judge])
    weight_sum[has_judge] += settings.judge_weight
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = np.where(weight_sum > 0, total / weight_sum, np.nan)
    return 1.0 / (1.0 + np.exp(-pooled))
