"""The learned cross-modal consistency token."""

from __future__ import annotations

import torch
from torch import Tensor


class ConsistencyToken(torch.nn.Module):
    r"""A learned vector added to the hidden inputs of the node types at both ends of the
    cross-modal check (images and QAs; captions do not receive it).

    .. math::
        \mathbf{h}_v \leftarrow \mathbf{h}_v + \mathbf{t} \qquad
        \text{for every node } v \text{ of a type in } \mathcal{T}

    Image and QA nodes are projected into the hidden space by separate linear maps; the shared
    token gives both a common learned component, so the GATv2 attention between an image and a QA
    compares them relative to one reference that training adapts.

    Args:
        channels (int): Width of the hidden space.
        node_types (tuple[str, ...], optional): Node types that receive the token.
            (default: :obj:`("image", "qa")`)

    Shapes:
        - **input:** dict of node type to :math:`(|\mathcal{V}_t|, F)`
        - **output:** the same dict, the listed types shifted by the token
    """

    def __init__(self, channels: int, node_types: tuple[str, ...] = ("image", "qa")):
        super().__init__()
        self.channels = channels
        self.node_types = tuple(node_types)
        self.token = torch.nn.Parameter(torch.empty(channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        torch.nn.init.normal_(self.token, std=0.02)

    def forward(self, x_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        return {
            node_type: x + self.token if node_type in self.node_types else x
            for node_type, x in x_dict.items()
        }

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.channels}, node_types={self.node_types})"
