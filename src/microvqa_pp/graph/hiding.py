"""Model inputs with the predicted signals hidden: the one place where signals enter the model.

A head that predicts a QA's NLI entailment must not see that entailment, or it learns the
identity. `model_inputs` therefore removes, for every QA in a head's mask, the signals listed in
`SignalSpec.hidden[head]` before anything is built from them. The QA node's input and the features
of all its incident edges (caption-QA and image-QA, both directions) come from that one masked
signal matrix, so no copy of a hidden value reaches the model. A hidden value looks exactly like a
missing one (value 0, presence 0).

Other QAs keep their signals, so a head still learns from its neighbours' evidence, from the
graph structure and from the QA's other signals.
"""

from __future__ import annotations

import torch
from torch import Tensor

from microvqa_pp.graph.build import (
    CAPTION_IMAGE,
    CAPTION_QA,
    IMAGE_CAPTION,
    IMAGE_QA,
    NUM_TASKS,
    QA_CAPTION,
    QA_IMAGE,
)
from microvqa_pp.graph.signals import SIGNALS, TEXT_PAIR_SIGNALS, SignalSpec, signal_index

TEXT_EDGE_WIDTH = 2 * len(TEXT_PAIR_SIGNALS)
ALIGNMENT_EDGE_WIDTH = 2
_TEXT_COLUMNS = [signal_index(name) for name in TEXT_PAIR_SIGNALS]


def qa_input_width(embedding_width: int) -> int:
    """Return the width of a QA node's input: embedding, signals, presence flags and task."""
    return embedding_width + 2 * len(SIGNALS) + NUM_TASKS


def edge_dims() -> dict[tuple[str, str, str], int]:
    """Return the feature width of every cross-modal relation (a value and a presence flag per signal)."""
    return {
        IMAGE_CAPTION: 2,
        CAPTION_IMAGE: 2,
        CAPTION_QA: TEXT_EDGE_WIDTH,
        QA_CAPTION: TEXT_EDGE_WIDTH,
        IMAGE_QA: ALIGNMENT_EDGE_WIDTH,
        QA_IMAGE: ALIGNMENT_EDGE_WIDTH,
    }


def hide_signals(signal: Tensor, present: Tensor, spec: SignalSpec, hidden: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """Return copies of (signal, present) [Q, S] where each head's signals are removed for its masked QAs."""
    present = present.clone()
    for head, mask in hidden.items():
        columns = torch.tensor(spec.hidden_indices(head), dtype=torch.long)
        rows = mask.nonzero().squeeze(1)
        present[rows.unsqueeze(1), columns.unsqueeze(0)] = False
    return signal * present, present


def model_inputs(data, spec: SignalSpec, hidden: dict[str, Tensor] | None = None) -> tuple[dict, dict, dict]:
    """Return (x_dict, edge_index_dict, edge_attr_dict) for the model, with `hidden` signals removed.

    `hidden` maps a head name (`nli`, `alignment`) to a boolean mask over the QA nodes whose
    signals for that head must be hidden.
    """
    qa = data["qa"]
    signal, present = hide_signals(qa.signal, qa.present, spec, hidden or {})
    flags = present.float()
    task = torch.zeros(qa.num_nodes, NUM_TASKS)
    known = qa.task >= 0
    task[known, qa.task[known]] = 1.0

    x_dict = {
        "image": data["image"].x,
        "caption": data["caption"].x,
        "qa": torch.cat([qa.x, signal, flags, task], dim=1),
    }

    text = torch.cat([signal[:, _TEXT_COLUMNS], flags[:, _TEXT_COLUMNS]], dim=1)
    alignment_column = [signal_index(spec.label_sources["alignment"])]
    alignment = torch.cat([signal[:, alignment_column], flags[:, alignment_column]], dim=1)
    edge_attr_dict = {
        IMAGE_CAPTION: data[IMAGE_CAPTION].edge_attr,
        CAPTION_IMAGE: data[CAPTION_IMAGE].edge_attr,
        CAPTION_QA: text[data[CAPTION_QA].edge_index[1]],
        QA_CAPTION: text[data[QA_CAPTION].edge_index[0]],
        IMAGE_QA: alignment[data[IMAGE_QA].edge_index[1]],
        QA_IMAGE: alignment[data[QA_IMAGE].edge_index[0]],
    }
    return x_dict, data.edge_index_dict, edge_attr_dict
