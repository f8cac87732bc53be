"""The deterministic weight rule of the reference fixtures.

Tests (and the ``test-tiny`` preset) fill a network with pseudo-random values drawn in
the sorted order of its state-dict keys. Because the draw order follows the keys, a
module only reproduces the reference weights when its key names and shapes are exactly
those of the reference implementation, which is what the parity tests rely on.

The draws are ``torch.randn`` as computed by PyTorch's vectorised (AVX2 / AVX-512) CPU
sampler, the one the fixtures were made with. Where PyTorch runs without those kernels
(``ATEN_CPU_CAPABILITY=default``, non-x86 CPUs) ``torch.randn`` uses a scalar Box-Muller
in double precision whose results differ in the last bit of ~40% of the values; that is
a different set of weights, and the tracker amplifies such a change to ~0.3 px. There
:func:`standard_normal` reproduces the vectorised sampler in NumPy: the same uniform
draws (``torch.rand`` reads the generator exactly as ``randn`` does), then Box-Muller
on pairs ``(j, j + 8)`` of each block of 16, with Cephes' float32 ``log`` and ``sincos``
polynomials evaluated with fused multiply-adds where the compiled kernel fuses them.
Checked bit for bit against the vectorised ``torch.randn`` on 8 million draws.
"""

from __future__ import annotations

import math
from typing import Dict, Mapping, Sequence, Tuple

import numpy as np
import torch
from torch import nn

_F32 = np.float32
# Cephes float32 log: polynomial in (m - 1) for the mantissa m in [sqrt(1/2), sqrt(2)).
_LOG_POLY = (
    7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1,
    -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1,
)  # fmt: skip
_LOG_Q1, _LOG_Q2 = _F32(-2.12194440e-4), _F32(0.693359375)  # ln 2 split in two parts
_FOUR_OVER_PI = _F32(1.27323954473516)
_PI4_PARTS = (_F32(-0.78515625), _F32(-2.4187564849853515625e-4), _F32(-3.77489497744594108e-8))
_COS_POLY = (2.443315711809948e-5, -1.388731625493765e-3, 4.166664568298827e-2)
_SIN_POLY = (-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1)


def _fma(a, b, c) -> np.ndarray:
    """float32 ``a * b + c`` with one rounding: the float32 product is exact in float64;
    the float64 sum is rounded to odd before the final rounding to float32, which makes
    the double rounding exact."""
    p = np.asarray(a, np.float64) * np.asarray(b, np.float64)
    c = np.asarray(c, np.float64)
    s = p + c
    bp = s - p
    err = (p - (s - bp)) + (c - bp)  # s + err == p + c exactly (TwoSum)
    even = (s.view(np.int64) & 1) == 0
    fix = (err != 0) & even & np.isfinite(s)
    if fix.any():
        s = np.where(fix, np.nextafter(s, np.where(err > 0, np.inf, -np.inf)), s)
    return s.astype(_F32)


def _log_f32(x: np.ndarray) -> np.ndarray:
    """Cephes float32 natural log for x in (0, 1] (the vectorised sampler's ``log256_ps``)."""
    x = np.maximum(x, _F32(1.17549435e-38)).astype(_F32)
    bits = x.view(np.int32)
    e = (((bits >> 23) - 0x7F).astype(_F32) + _F32(1.0)).astype(_F32)
    m = ((bits & ~0x7F800000) | 0x3F000000).view(_F32)  # mantissa scaled to [0.5, 1)
    small = m < _F32(0.707106781186547524)
    e = (e - np.where(small, _F32(1.0), _F32(0.0))).astype(_F32)
    m = ((m - _F32(1.0)).astype(_F32) + np.where(small, m, _F32(0.0))).astype(_F32)
    z = (m * m).astype(_F32)
    y = np.full_like(m, _F32(_LOG_POLY[0]))
    for coef in _LOG_POLY[1:]:
        y = _fma(y, m, _F32(coef))
    y = (y * m).astype(_F32)
    y = _fma(y, z, (e * _LOG_Q1).astype(_F32))
    y = _fma(z, _F32(-0.5), y)
    return _fma(e, _LOG_Q2, (m + y).astype(_F32))


def _sincos_f32(x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Cephes float32 sine and cosine (the vectorised sampler's ``sincos256_ps``)."""
    neg = np.signbit(x)
    x = np.abs(x).astype(_F32)
    octant = (x * _FOUR_OVER_PI).astype(_F32).astype(np.int32)
    octant = (octant + 1) & ~1
    y = octant.astype(_F32)
    for part in _PI4_PARTS:  # x - y * pi/4 in three parts
        x = _fma(y, part, x)
    sin_neg = neg ^ ((octant & 4) != 0)
    cos_neg = ((~(octant - 2)) & 4) != 0
    use_sin_poly = (octant & 2) == 0
    z = (x * x).astype(_F32)
    c = np.full_like(z, _F32(_COS_POLY[0]))
    for coef in _COS_POLY[1:]:
        c = _fma(c, z, _F32(coef))
    c = (c * z).astype(_F32)
    c = _fma(c, z, -(z * _F32(0.5)).astype(_F32))
    c = (c + _F32(1.0)).astype(_F32)
    s = np.full_like(z, _F32(_SIN_POLY[0]))
    for coef in _SIN_POLY[1:]:
        s = _fma(s, z, _F32(coef))
    s = (s * z).astype(_F32)
    s = _fma(s, x, x)
    sin = np.where(use_sin_poly, s, c)
    cos = np.where(use_sin_poly, c, s)
    return np.where(sin_neg, -sin, sin).astype(_F32), np.where(cos_neg, -cos, cos).astype(_F32)


def _box_muller_16(u: np.ndarray) -> np.ndarray:
    """``[K, 16]`` uniforms -> normals: pairs (j, j + 8) of each row, as the vectorised sampler."""
    radius = np.sqrt((_F32(-2.0) * _log_f32((_F32(1.0) - u[:, :8]).astype(_F32))).astype(_F32)).astype(_F32)
    sin, cos = _sincos_f32((_F32(2.0 * math.pi) * u[:, 8:]).astype(_F32))
    # The kernel stores fma(n, std=1, mean=0): exact, but it turns -0 into +0.
    out = np.concatenate([(radius * cos).astype(_F32), (radius * sin).astype(_F32)], axis=1)
    return (out + _F32(0.0)).astype(_F32)


def _vectorised_kernels() -> bool:
    try:
        return torch.backends.cpu.get_cpu_capability().upper().startswith(("AVX2", "AVX512"))
    except (AttributeError, RuntimeError):
        return False


def standard_normal(shape, gen: torch.Generator) -> torch.Tensor:
    """``torch.randn(shape, generator=gen)`` (float32, CPU) as PyTorch's vectorised sampler
    computes it, on any CPU; consumes the generator exactly as ``torch.randn`` does."""
    n = math.prod(shape)
    if n < 16 or _vectorised_kernels():  # below 16 values torch uses one scalar path everywhere
        return torch.randn(tuple(shape), generator=gen, dtype=torch.float32)
    u = torch.rand(n, generator=gen, dtype=torch.float32).numpy()
    full = n // 16 * 16
    out = np.empty(n, dtype=_F32)
    out[:full] = _box_muller_16(u[:full].reshape(-1, 16)).reshape(-1)
    if full != n:  # torch redraws the last 16 values and transforms them as one block
        tail = torch.rand(16, generator=gen, dtype=torch.float32).numpy()
        out[n - 16 :] = _box_muller_16(tail.reshape(1, 16)).reshape(-1)
    return torch.from_numpy(out).reshape(tuple(shape))


def deterministic_state_dict(model: nn.Module, seed: int) -> Dict[str, torch.Tensor]:
    return deterministic_values(model.state_dict(), seed)


def _rule_value(key: str, tensor: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The next draw of the rule for one floating-point tensor."""
    x = standard_normal(tuple(tensor.shape), gen)
    if tensor.dim() <= 1:
        value = 1.0 + 0.02 * x if key.endswith(".weight") else 0.02 * x
    else:
        value = x / math.sqrt(math.prod(tensor.shape[1:]))
    return value.to(tensor.dtype)


def deterministic_values(current: Mapping[str, torch.Tensor], seed: int) -> Dict[str, torch.Tensor]:
    """The rule's values for a state dict's keys and shapes (drawn in sorted key order)."""
    gen = torch.Generator().manual_seed(int(seed))
    return {key: _rule_value(key, current[key], gen) if torch.is_floating_point(current[key]) else current[key]
            for key in sorted(current)}


@torch.no_grad()
def fill_deterministic_in_place(model: nn.Module, seed: int) -> nn.Module:
    """:func:`fill_deterministic` one tensor at a time, never holding a second copy of the
    weights (the full-size networks of the benchmarks)."""
    state = model.state_dict()
    if any(t.is_meta for t in state.values()):
        raise ValueError("cannot fill a model that lives on the meta device")
    gen = torch.Generator().manual_seed(int(seed))
    for key in sorted(state):
        if torch.is_floating_point(state[key]):
            state[key].copy_(_rule_value(key, state[key], gen))
    return model


@torch.no_grad()
def fill_deterministic(model: nn.Module, seed: int) -> nn.Module:
    """Overwrite every floating-point parameter and buffer of ``model`` in place."""
    if any(t.is_meta for t in model.state_dict().values()):
        raise ValueError("cannot fill a model that lives on the meta device")
    model.load_state_dict(deterministic_state_dict(model, seed), strict=True)
    return model


@torch.no_grad()
def fill_deterministic_groups(model: nn.Module, seed: int, groups: Sequence[Sequence[str]]) -> nn.Module:
    """Fill ``model`` as if each group of key prefixes were a model of its own filled by the
    rule with ``seed`` (how fixtures of different sub-models pin down one network's parts).
    Every key must belong to a group; a key in several groups must draw the same value in
    each (a shared part whose keys sort first, such as the aggregator)."""
    if any(t.is_meta for t in model.state_dict().values()):
        raise ValueError("cannot fill a model that lives on the meta device")
    current = model.state_dict()
    values: Dict[str, torch.Tensor] = {}
    for prefixes in groups:
        part = {k: v for k, v in current.items() if k.startswith(tuple(prefixes))}
        for key, value in deterministic_values(part, seed).items():
            if key in values and not torch.equal(values[key], value):
                raise ValueError(f"weight groups {list(groups)} draw different values for {key}")
            values[key] = value
    left = sorted(set(current) - set(values))
    if left:
        raise ValueError(f"keys in no weight group: {left[:5]}{' ...' if len(left) > 5 else ''}")
    model.load_state_dict(values, strict=True)
    return model


def weight_sums(model: nn.Module) -> Dict[str, float]:
    """Key -> float64 sum, the per-tensor fingerprint stored in the fixtures."""
    return {k: float(v.double().sum()) for k, v in model.state_dict().items() if torch.is_floating_point(v)}
