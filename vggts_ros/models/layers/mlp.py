"""Two-layer feed-forward network used inside every transformer block."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..cpu_linear import linear


class Mlp(nn.Module):
    """Linear -> GELU (exact, erf) -> Linear.

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
        self.fc2 = nn.Linear(hidden, out, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # oneDNN on CPU float32 with the GELU fused into the first product (cpu_linear)
        return linear(linear(x, self.fc1.weight, self.fc1.bias, gelu=True), self.fc2.weight, self.fc2.bias)
