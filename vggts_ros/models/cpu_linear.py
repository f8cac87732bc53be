"""Float32 linear layers on the CPU through oneDNN instead of the BLAS ``addmm``.

Why: on the AMD (Zen) CPUs this project is benchmarked on, PyTorch's MKL ``sgemm`` runs
the head's large products at about half the speed of oneDNN's matmul (measured 45-70 vs
90-120 GFLOP/s, 1 thread), and ``addmm`` first copies the broadcast bias into the whole
output. oneDNN computes the same float32 products (IEEE float32, only the summation
order differs: relative differences ~1e-6) and fuses the bias, a ReLU, an (erf) GELU or a
residual add. Used by the head and by the backbone (every transformer block of the
aggregator and of its DINOv2 patch embedding: QKV, output projection, MLP with its GELU).
At VGGT-1B's sizes the products are already near this CPU's float32 peak with MKL (~81 vs
~95 GFLOP/s, 1 thread); the fused GELU saves a pass over the MLP's hidden activations.

The fast path is taken only where it is exactly a drop-in: CPU float32 tensors, no
autocast, and no autograd graph to build (inference or ``no_grad``). Everything else
(float64 parity runs, training, CUDA) goes through ``torch.nn.functional.linear``.
:func:`enabled` switches it off globally (benchmarks compare both).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Dict, Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_OP = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
_STATE = {"on": bool(_OP is not None and torch.backends.mkldnn.is_available())}


def available() -> bool:
    """Whether this torch build has the oneDNN linear kernel."""
    return _OP is not None and torch.backends.mkldnn.is_available()


@contextmanager
def enabled(on: bool) -> Iterator[None]:
    """Temporarily turn the oneDNN path on or off (off: plain ``F.linear`` everywhere)."""
    before = _STATE["on"]
    _STATE["on"] = bool(on) and available()
    try:
        yield
    finally:
        _STATE["on"] = before


def takes_fast_path(x: Tensor, weight: Tensor) -> bool:
    """Whether ``linear(x, weight, ...)`` runs on the oneDNN path (CPU float32, no
    autocast, no autograd graph); elsewhere it is ``F.linear``."""
    if not _STATE["on"] or x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32:
        return False
    if torch.is_autocast_enabled("cpu"):
        return False
    return not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))


def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, relu: bool = False, gelu: bool = False) -> Tensor:
    """``F.linear(x, weight, bias)``, then ReLU when ``relu`` or the exact (erf) GELU when
    ``gelu`` (``nn.GELU()``)."""
    if relu and gelu:
        raise ValueError("linear: relu and gelu are exclusive")
    if takes_fast_path(x, weight):
        if gelu:
            return _OP(x, weight, bias, "gelu", [], "none")
        return _OP(x, weight, bias, "relu" if relu else "none", [], "")
    y = F.linear(x, weight, bias)
    return F.relu(y) if relu else F.gelu(y) if gelu else y


def linear_add(x: Tensor, weight: Tensor, bias: Optional[Tensor], residual: Tensor) -> Tensor:
    """``residual + F.linear(x, weight, bias)`` (one pass over the output on the fast path)."""
    if takes_fast_path(x, weight) and residual.dtype == torch.float32 and residual.shape == x.shape[:-1] + (weight.shape[0],):
        return _OP.binary(x, residual.contiguous(), weight, bias, "add")
    return residual + F.linear(x, weight, bias)


def derived(module: nn.Module, name: str, build: Callable[[], Tuple[Tensor, ...]],
            params: Optional[Tuple[Optional[Tensor], ...]] = None) -> Tuple[Tensor, ...]:
    """``build()`` (tensors derived from ``module``'s parameters, e.g. a conv weight laid
    out as a matrix), cached on the module until a parameter changes (in-place update,
    new tensor, dtype or device). Not part of the state dict. Built afresh when autograd
    is recording (so that gradients reach the parameters) and for parameters created
    under ``torch.inference_mode`` (they carry no version counter). ``params``: the
    parameters ``build`` reads when they are not ``module``'s own (``None`` entries are
    skipped)."""
    params = tuple(module.parameters(recurse=False)) if params is None else tuple(p for p in params if p is not None)
    if torch.is_grad_enabled() and any(p.requires_grad for p in params):
        return build()
    if any(p.is_inference() for p in params):  # no version counter to see in-place updates by
        return build()
    key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
    cache: Dict[str, tuple] = module.__dict__.setdefault("_derived_tensors", {})
    hit = cache.get(name)
    if hit is not None and hit[0] == key:
        return hit[1]
    with torch.inference_mode(False), torch.no_grad():
        value = tuple(None if t is None else t.detach().clone() for t in build())
    cache[name] = (key, value)
    return value
