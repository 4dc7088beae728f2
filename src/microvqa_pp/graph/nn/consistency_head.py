"""A head that predicts one soft weak label per QA node."""

from __future__ import annotations

import torch
from torch import Tensor


class ConsistencyHead(torch.nn.Module):
    r"""A two-layer perceptron from a QA node's representation to the logit of one weak label.

    .. math::
        \hat{y}_v = \sigma\left(\mathbf{w}_2^{\top}\,
        \mathrm{ReLU}(\mathbf{W}_1 \mathbf{h}_v + \mathbf{b}_1) + b_2\right)

    The forward pass returns the logit; :math:`\sigma` is applied by the loss and at scoring time.

    Args:
        in_channels (int): Width of the node representation.
        hidden_channels (int): Width of the hidden layer.
        dropout (float, optional): Dropout before each linear layer. (default: :obj:`0.0`)

    Shapes:
        - **input:** :math:`(|\mathcal{V}_{qa}|, F_{in})`
        - **output:** :math:`(|\mathcal{V}_{qa}|)`
    """

    def __init__(self, in_channels: int, hidden_channels: int, dropout: float = 0.0):
        super().__init__()
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.dropout = dropout
        self.lin1 = torch.nn.Linear(in_channels, hidden_channels)
        self.lin2 = torch.nn.Linear(hidden_channels, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.lin1.reset_parameters()
        self.lin2.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        x = torch.nn.functional.dropout(x, p=self.dropout, training=self.training)
        x = self.lin1(x).relu()
        x = torch.nn.functional.dropout(x, p=self.dropout, training=self.training)
        return self.lin2(x).squeeze(-1)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, {self.hidden_channels})"
