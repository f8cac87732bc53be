"""Two-layer feed-forward network used inside every transformer block."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..cpu_linear import linear


class Mlp(nn.Module):
    """Linear -> GELU (exact, erf) -> Linear.

    The sub-module names ``fc1``/``fc2`` are part of the checkpoint layout, so they are
    kept exactly; dropout is omitted because inference never uses it. ``onednn``: the
    products (GELU fused into the first) on the oneDNN float32 path of
    :mod:`..cpu_linear` (the aggregator's blocks); off, ``F.linear`` as in the reference
    (the tracker, whose iterations amplify any change of float32 rounding).
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: Optional[int] = None,
        out_features: Optional[int] = None,
        bias: bool = True,
        onednn: bool = False,
    ) -> None:
        super().__init__()
        self.onednn = onednn
        hidden = hidden_features or in_features
        out = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, out, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.onednn:
            return linear(linear(x, self.fc1.weight, self.fc1.bias, gelu=True), self.fc2.weight, self.fc2.bias)
        return self.fc2(F.gelu(self.fc1(x)))
