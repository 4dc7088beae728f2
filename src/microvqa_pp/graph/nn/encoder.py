"""Heterogeneous message passing over image, caption and QA nodes."""

from __future__ import annotations

import torch
from torch import Tensor

from microvqa_pp.graph.nn.consistency_token import ConsistencyToken

EdgeType = tuple[str, str, str]


class HiCQAEncoder(torch.nn.Module):
    r"""Encodes every node of a HiCQA-Graph from its input and its neighbourhood.

    Each node type is first projected into a shared hidden space of width :math:`F` and the
    consistency token is added to image and QA nodes. Then :obj:`num_layers` rounds of
    :class:`~torch_geometric.nn.conv.HeteroConv` follow: relations with edge features (the
    cross-modal ones) use :class:`~torch_geometric.nn.conv.GATv2Conv`, whose attention reads the
    edge features; the others (nearest-neighbour relations) use
    :class:`~torch_geometric.nn.conv.SAGEConv`. Messages of all relations into a node type are
    summed, and each round is residual:

    .. math::
        \mathbf{h}^{(l+1)}_v = \mathrm{LayerNorm}\left(\mathbf{h}^{(l)}_v +
        \mathrm{Dropout}\left(\mathrm{ReLU}\left(\sum_{r} \mathrm{conv}_r\left(\mathbf{h}^{(l)},
        \mathcal{N}_r(v)\right)\right)\right)\right)

    GATv2 reads edge features only in its attention weights, which are normalised over a node's
    incoming edges of one relation. A QA node has one caption and one image, so those messages
    get weight 1, and the QA's own signals reach it through its node input instead. The edge
    features steer attention where a node has several neighbours: a caption or an image weighs
    the QAs of its figure by their signals, and passes that on to the QAs in the next round.

    Args:
        in_channels (dict[str, int]): Input width of every node type.
        edge_types (list[tuple[str, str, str]]): All relations of the graph.
        edge_dims (dict[tuple[str, str, str], int]): Edge feature width of the relations that
            use GATv2; every other relation uses GraphSAGE.
        hidden_channels (int): Width :math:`F` of the hidden space. (default: :obj:`64`)
        num_layers (int): Rounds of message passing. (default: :obj:`2`)
        heads (int): Attention heads of each GATv2 layer; must divide :obj:`hidden_channels`.
            (default: :obj:`2`)
        dropout (float): Dropout on the input projection, the attention weights and each
            round's output. (default: :obj:`0.2`)

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}_t|, F_t)` per type, edge indices
          :math:`(2, |\mathcal{E}_r|)` per relation, edge features :math:`(|\mathcal{E}_r|, D_r)`
          per GATv2 relation
        - **output:** node representations :math:`(|\mathcal{V}_t|, F)` per type
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
        from torch_geometric.nn import GATv2Conv, HeteroConv, SAGEConv

        super().__init__()
        if hidden_channels % heads:
            raise ValueError(f"hidden_channels={hidden_channels} is not divisible by heads={heads}")
        self.in_channels = dict(in_channels)
        self.edge_types = [tuple(edge_type) for edge_type in edge_types]
        self.edge_dims = dict(edge_dims)
        self.hidden_channels = hidden_channels
        self.num_layers = num_layers
        self.heads = heads
        self.dropout = dropout

        self.input = torch.nn.ModuleDict(
            {node_type: torch.nn.Linear(width, hidden_channels) for node_type, width in self.in_channels.items()}
        )
        self.token = ConsistencyToken(hidden_channels, ("image", "qa"))
        self.convs = torch.nn.ModuleList()
        self.norms = torch.nn.ModuleList()
        for _ in range(num_layers):
            relations = {}
            for edge_type in self.edge_types:
                if edge_type in self.edge_dims:
                    relations[edge_type] = GATv2Conv(
                        (hidden_channels, hidden_channels),
                        hidden_channels // heads,
                        heads=heads,
                        edge_dim=self.edge_dims[edge_type],
                        dropout=dropout,
                        add_self_loops=False,
                    )
                else:
                    relations[edge_type] = SAGEConv((hidden_channels, hidden_channels), hidden_channels)
            self.convs.append(HeteroConv(relations, aggr="sum"))
            self.norms.append(
                torch.nn.ModuleDict({node_type: torch.nn.LayerNorm(hidden_channels) for node_type in self.in_channels})
            )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for linear in self.input.values():
            linear.reset_parameters()
        self.token.reset_parameters()
        for conv in self.convs:
            conv.reset_parameters()
        for norms in self.norms:
            for norm in norms.values():
                norm.reset_parameters()

    def forward(
        self,
        x_dict: dict[str, Tensor],
        edge_index_dict: dict[EdgeType, Tensor],
        edge_attr_dict: dict[EdgeType, Tensor],
    ) -> dict[str, Tensor]:
        dropout = torch.nn.functional.dropout
        h = {node_type: dropout(self.input[node_type](x), self.dropout, self.training) for node_type, x in x_dict.items()}
        h = self.token(h)
        edge_index_dict = {edge_type: index for edge_type, index in edge_index_dict.items() if edge_type in self.edge_types}
        for conv, norms in zip(self.convs, self.norms):
            messages = conv(h, edge_index_dict, edge_attr_dict=edge_attr_dict)
            h = {
                node_type: norms[node_type](x + dropout(messages[node_type].relu(), self.dropout, self.training))
                if node_type in messages
                else x
                for node_type, x in h.items()
            }
        return h

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(node_types={list(self.in_channels)}, hidden_channels={self.hidden_channels}, "
            f"num_layers={self.num_layers}, heads={self.heads})"
        )
