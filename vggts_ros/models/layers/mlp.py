"""Two-layer feed-forward network used inside every transformer block."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn


class Mlp(nn.Module):
    """Linear -> GELU -> Linear.

    The sub-module names ``fc1``/``fc2`` are part of the checkpoint layout, so they are
    kept exactly; dropout is omitted because inference never uses it.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: Optional[int] = None,
        out_features: Optional[int] = None,
        bias: bool = True,
    ) -> None:
        super().__init__()
        hidden = hidden_features or in_features
        out = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))
