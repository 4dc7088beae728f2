"""The HiCQA-Graph model: the encoder and the two weak-label heads on QA nodes."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from microvqa_pp.graph.nn.consistency_head import ConsistencyHead
from microvqa_pp.graph.nn.encoder import EdgeType, HiCQAEncoder

HEAD_NAMES = ("nli", "alignment")


class HiCQAGraph(torch.nn.Module):
    r"""Predicts the two soft weak labels of every QA node from a HiCQA-Graph.

    The :class:`HiCQAEncoder` computes a representation of each QA node from its own input, its
    caption, its image and its nearest-neighbour QAs; one :class:`ConsistencyHead` per weak label
    turns it into a logit. The heads are :obj:`nli` (NLI entailment of the QA by the caption, or
    its stand-in) and :obj:`alignment` (calibrated CLIP image-QA alignment, or its stand-in).

    Args:
        in_channels (dict[str, int]): Input width of every node type.
        edge_types (list[tuple[str, str, str]]): All relations of the graph.
        edge_dims (dict[tuple[str, str, str], int]): Edge feature width of the GATv2 relations.
        hidden_channels (int): Width of node representations. (default: :obj:`64`)
        num_layers (int): Rounds of message passing. (default: :obj:`2`)
        heads (int): Attention heads of the GATv2 layers. (default: :obj:`2`)
        dropout (float): Dropout in the encoder and the heads. (default: :obj:`0.2`)

    Shapes:
        - **input:** as :class:`HiCQAEncoder`
        - **output:** logits :math:`(|\mathcal{V}_{qa}|, 2)`, columns in the order of
          :obj:`HEAD_NAMES`
    """

    def __init__(
        self,
        in_channels: dict[str, int],
        edge_types: list[EdgeType],
        edge_dims: dict[EdgeType, int],
        hidden_channels: int = 64,
        num_layers: int = 2,
        heads: int = 2,
        dropout: float = 0.2,
    ):
        super().__init__()
        self.encoder = HiCQAEncoder(in_channels, edge_types, edge_dims, hidden_channels, num_layers, heads, dropout)
        self.heads = torch.nn.ModuleDict({name: ConsistencyHead(hidden_channels, hidden_channels, dropout) for name in HEAD_NAMES})
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.encoder.reset_parameters()
        for head in self.heads.values():
            head.reset_parameters()

    def forward(
        self,
        x_dict: dict[str, Tensor],
        edge_index_dict: dict[EdgeType, Tensor],
        edge_attr_dict: dict[EdgeType, Tensor],
    ) -> Tensor:
        h = self.encoder(x_dict, edge_index_dict, edge_attr_dict)["qa"]
        return torch.stack([self.heads[name](h) for name in HEAD_NAMES], dim=1)

    def hyperparameters(self) -> dict[str, Any]:
        """Return the constructor arguments, JSON-ready, to rebuild the model from saved weights."""
        encoder = self.encoder
        return {
            "in_channels": encoder.in_channels,
            "edge_types": [list(edge_type) for edge_type in encoder.edge_types],
            "edge_dims": [[list(edge_type), width] for edge_type, width in encoder.edge_dims.items()],
            "hidden_channels": encoder.hidden_channels,
            "num_layers": encoder.num_layers,
            "heads": encoder.heads,
            "dropout": encoder.dropout,
        }

    @classmethod
    def from_hyperparameters(cls, values: dict[str, Any]) -> "HiCQAGraph":
        return cls(
            in_channels=values["in_channels"],
            edge_types=[tuple(edge_type) for edge_type in values["edge_types"]],
            edge_dims={tuple(edge_type): width for edge_type, width in values["edge_dims"]},
            hidden_channels=values["hidden_channels"],
            num_layers=values["num_layers"],
            heads=values["heads"],
            dropout=values["dropout"],
        )
