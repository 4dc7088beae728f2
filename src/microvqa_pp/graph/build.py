"""Build the HiCQA-Graph: a PyG `HeteroData` of image, caption and QA nodes.

Nodes (F figures, Q QAs):

    image    [F, D_image]  the figure's image embedding (CLIP, or a pixel descriptor without CLIP)
    caption  [F, D_text]   the caption's sentence embedding
    qa       [Q, D_text]   the QA's sentence embedding; its scalar signals are kept beside it
                           (`signal`, `present`) and joined to the input in `hiding.model_inputs`,
                           after the signals being predicted are hidden

Edges, each in both directions:

    image - caption   a figure's image and its caption; feature: CLIP image-caption similarity
    caption - qa      a QA and the caption of its figure; features: the caption-QA text signals
                      (NLI probabilities, text similarity, word overlap, span found)
    image - qa        a QA and the image of its figure; feature: the alignment signal (CLIP
                      image-QA similarity, or the text-similarity stand-in without CLIP)
    image - image     k nearest neighbours by image embedding
    qa - qa           k nearest neighbours by QA embedding

Features of caption-qa and image-qa edges belong to the QA at their end, so they are not stored
here but gathered from the QA's (possibly hidden) signals on every forward pass.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from microvqa_pp.graph.knn import knn_graph, normalise
from microvqa_pp.graph.signals import SignalSpec, signal_index

logger = logging.getLogger(__name__)

IMAGE_CAPTION = ("image", "has_caption", "caption")
CAPTION_IMAGE = ("caption", "describes", "image")
CAPTION_QA = ("caption", "grounds", "qa")
QA_CAPTION = ("qa", "grounded_in", "caption")
IMAGE_QA = ("image", "shows", "qa")
QA_IMAGE = ("qa", "asks_about", "image")
IMAGE_IMAGE = ("image", "similar_to", "image")
QA_QA = ("qa", "similar_to", "qa")

NODE_TYPES = ("image", "caption", "qa")
EDGE_TYPES = (IMAGE_CAPTION, CAPTION_IMAGE, CAPTION_QA, QA_CAPTION, IMAGE_QA, QA_IMAGE, IMAGE_IMAGE, QA_QA)
CROSS_MODAL = (IMAGE_CAPTION, CAPTION_IMAGE, CAPTION_QA, QA_CAPTION, IMAGE_QA, QA_IMAGE)
"""Relations between different node types; they carry edge features and use GATv2 layers."""

NUM_TASKS = 3
"""MicroVQA task types; a QA's task is one-hot encoded in its input (all zero when unknown)."""


@dataclass
class GraphArrays:
    """The inputs of one graph as arrays aligned with its figures and QAs.

    `qa_figure[i]` is the figure index of QA i. `signals` is the raw signal matrix, with the
    columns of `signals.SIGNALS` and NaN where a value is missing. `task` contains 0-based task
    ids, -1 when unknown.
    """

    image: np.ndarray
    caption: np.ndarray
    qa: np.ndarray
    qa_figure: np.ndarray
    signals: np.ndarray
    task: np.ndarray

    @property
    def num_figures(self) -> int:
        return self.image.shape[0]

    @property
    def num_qas(self) -> int:
        return self.qa.shape[0]


def _figure_mean(values: np.ndarray, qa_figure: np.ndarray, num_figures: int) -> np.ndarray:
    """Average a per-QA column per figure, ignoring NaN; NaN for figures without a value."""
    present = ~np.isnan(values)
    sums = np.bincount(qa_figure[present], weights=values[present], minlength=num_figures)
    counts = np.bincount(qa_figure[present], minlength=num_figures)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def build_graph(arrays: GraphArrays, spec: SignalSpec, *, knn_k: int = 8, exact_below: int = 20_000, trees: int = 4, seed: int = 0):
    """Build the HeteroData of one run (see the module docstring for its layout).

    Besides node features, `data["qa"]` contains `signal` and `present` [Q, S] (standardised signals
    and their presence), `task` [Q], `figure` [Q] and `y` [Q, 2], the soft weak labels of the
    `nli` and `alignment` heads (NaN where the source signal is missing).
    """
    from torch_geometric.data import HeteroData

    num_figures, num_qas = arrays.num_figures, arrays.num_qas
    data = HeteroData()
    data["image"].x = normalise(torch.as_tensor(arrays.image, dtype=torch.float32))
    data["caption"].x = normalise(torch.as_tensor(arrays.caption, dtype=torch.float32))
    data["qa"].x = normalise(torch.as_tensor(arrays.qa, dtype=torch.float32))

    signal, present = spec.standardise(arrays.signals)
    data["qa"].signal = torch.from_numpy(signal)
    data["qa"].present = torch.from_numpy(present)
    data["qa"].task = torch.as_tensor(arrays.task, dtype=torch.long)
    qa_figure = torch.as_tensor(arrays.qa_figure, dtype=torch.long)
    data["qa"].figure = qa_figure
    labels = spec.weak_labels(arrays.signals)
    data["qa"].y = torch.from_numpy(np.stack([labels["nli"], labels["alignment"]], axis=1))

    figures = torch.arange(num_figures)
    qas = torch.arange(num_qas)
    clip_caption = _figure_mean(arrays.signals[:, signal_index("clip_image_caption")], arrays.qa_figure, num_figures)
    clip_present = ~np.isnan(clip_caption)
    column = signal_index("clip_image_caption")
    clip_scaled = np.where(clip_present, (clip_caption - spec.mean[column]) / spec.std[column], 0.0)
    figure_attr = torch.from_numpy(np.stack([clip_scaled, clip_present], axis=1).astype(np.float32))

    data[IMAGE_CAPTION].edge_index = torch.stack([figures, figures])
    data[IMAGE_CAPTION].edge_attr = figure_attr
    data[CAPTION_IMAGE].edge_index = torch.stack([figures, figures])
    data[CAPTION_IMAGE].edge_attr = figure_attr.clone()
    data[CAPTION_QA].edge_index = torch.stack([qa_figure, qas])
    data[QA_CAPTION].edge_index = torch.stack([qas, qa_figure])
    data[IMAGE_QA].edge_index = torch.stack([qa_figure, qas])
    data[QA_IMAGE].edge_index = torch.stack([qas, qa_figure])
    data[IMAGE_IMAGE].edge_index = knn_graph(data["image"].x, knn_k, exact_below=exact_below, trees=trees, seed=seed)
    data[QA_QA].edge_index = knn_graph(data["qa"].x, knn_k, exact_below=exact_below, trees=trees, seed=seed + 1)
    logger.debug(
        "graph: %d images, %d captions, %d QAs, %d image-image and %d QA-QA similarity edges",
        num_figures,
        num_figures,
        num_qas,
        data[IMAGE_IMAGE].num_edges,
        data[QA_QA].num_edges,
    )
    return data


def describe(data) -> dict[str, int]:
    """Return node and edge counts by type, for logs and the run manifest."""
    counts = {f"nodes_{node_type}": int(data[node_type].num_nodes) for node_type in data.node_types}
    for edge_type in data.edge_types:
        counts[f"edges_{'__'.join(edge_type)}"] = int(data[edge_type].num_edges)
    return counts
