"""The deterministic weight rule of the reference fixtures.

Tests (and the ``test-tiny`` preset) fill a network with pseudo-random values drawn in
the sorted order of its state-dict keys. Because the draw order follows the keys, a
module only reproduces the reference weights when its key names and shapes are exactly
those of the reference implementation, which is what the parity tests rely on.
"""

from __future__ import annotations

import math
from typing import Dict

import torch
from torch import nn


def deterministic_state_dict(model: nn.Module, seed: int) -> Dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(int(seed))
    current = model.state_dict()
    values: Dict[str, torch.Tensor] = {}
    for key in sorted(current):
        tensor = current[key]
        if not torch.is_floating_point(tensor):
            values[key] = tensor
            continue
        x = torch.randn(tuple(tensor.shape), generator=gen, dtype=torch.float32)
        if tensor.dim() <= 1:
            value = 1.0 + 0.02 * x if key.endswith(".weight") else 0.02 * x
        else:
            value = x / math.sqrt(math.prod(tensor.shape[1:]))
        values[key] = value.to(tensor.dtype)
    return values


@torch.no_grad()
def fill_deterministic(model: nn.Module, seed: int) -> nn.Module:
    """Overwrite every floating-point parameter and buffer of ``model`` in place."""
    if any(t.is_meta for t in model.state_dict().values()):
        raise ValueError("cannot fill a model that lives on the meta device")
    model.load_state_dict(deterministic_state_dict(model, seed), strict=True)
    return model


def weight_sums(model: nn.Module) -> Dict[str, float]:
    """Key -> float64 sum, the per-tensor fingerprint stored in the fixtures."""
    return {k: float(v.double().sum()) for k, v in model.state_dict().items() if torch.is_floating_point(v)}
