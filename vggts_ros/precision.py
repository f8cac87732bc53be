"""Numeric precision modes of the backbone and the head, in one place.

The VGGT-S paper's supplement reports float32; the released scripts instead wrap VGGT
and the head in CUDA bfloat16 autocast. On CUDA, PyTorch may also route float32 matrix
products and convolutions through TF32 (10-bit mantissa), which makes a GPU "float32"
run differ from a CPU one far beyond float32 rounding. The modes:

``float32`` (default)
    Plain float32. On CUDA, TF32 is switched off for matmul and cuDNN while the context
    is active, so GPU and CPU compute the same function up to float32 rounding.
``tf32``
    float32 tensors, TF32 allowed for matmul and cuDNN (faster on Ampere and later).
``bf16``
    The backbone (aggregator) under bfloat16 autocast; the DPT features, tracker and head
    stay float32 with TF32 off.
``release``
    What the released scripts do: CUDA bfloat16 autocast around VGGT and around the
    head, PyTorch's default TF32 flags (matmul off, cuDNN on). The released scripts ask
    for *CUDA* autocast, which does nothing to CPU tensors, so on a CPU this mode
    computes the same as ``float32`` (as the released scripts would).
``float64``
    Model and inputs in float64 (CPU reference runs: float32 tracker outputs are only
    reproducible across CPUs to ~0.2 px, float64 ones to far below 1e-6 px).

Use :func:`precision_context` around a run (it restores the TF32 flags on exit),
:func:`model_dtype` to cast models and inputs, :func:`backbone_dtype` for the backbone's
own aggregator autocast, and :func:`autocast` around the backbone (``part="backbone"``)
or the head (``part="head"``). The mode itself is the one setting ``precision``
(``PipelineConfig.precision``, node parameter ``inference.precision``); the old spellings
``model.dtype`` and ``PipelineConfig.backbone_dtype`` are folded into it by
``vggts_ros.config`` with a deprecation warning.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Optional, Union

import torch

from vggts_ros.config import PRECISION_MODES  # one list, shared with the node and CLI configuration
PARTS = ("backbone", "head")

DeviceLike = Union[str, torch.device, None]


@dataclass(frozen=True)
class PrecisionPlan:
    """What one mode means: parameter/input dtype, autocast dtype per part (``None`` =
    no autocast), the autocast device kind it applies to (``None`` = the run's device),
    and the TF32 flags on CUDA (``None`` = leave as they are)."""

    mode: str
    dtype: torch.dtype
    backbone_autocast: Optional[torch.dtype]
    head_autocast: Optional[torch.dtype]
    autocast_device: Optional[str]
    tf32_matmul: Optional[bool]
    tf32_cudnn: Optional[bool]


_PLANS = {
    "float32": PrecisionPlan("float32", torch.float32, None, None, None, False, False),
    "tf32": PrecisionPlan("tf32", torch.float32, None, None, None, True, True),
    "bf16": PrecisionPlan("bf16", torch.float32, torch.bfloat16, None, None, False, False),
    # PyTorch's defaults since 1.12: TF32 off for matmul, on for cuDNN convolutions.
    "release": PrecisionPlan("release", torch.float32, torch.bfloat16, torch.bfloat16, "cuda", False, True),
    "float64": PrecisionPlan("float64", torch.float64, None, None, None, False, False),
}


def check_mode(mode: str) -> str:
    """Return ``mode`` if it is a known precision mode, else raise a ValueError naming it."""
    if not isinstance(mode, str) or mode not in _PLANS:
        raise ValueError(f"unknown precision mode {mode!r}; expected one of {', '.join(PRECISION_MODES)}")
    return mode


def plan(mode: str) -> PrecisionPlan:
    """The :class:`PrecisionPlan` of ``mode``."""
    return _PLANS[check_mode(mode)]


def backbone_dtype(mode: str, device: DeviceLike) -> torch.dtype:
    """The autocast dtype of the backbone's aggregator in ``mode`` on ``device``
    (``torch.float32``: no autocast). What :class:`~vggts_ros.models.backbone.VGGTBackbone`
    takes as its ``dtype`` from the pipeline: ``bf16`` gives bfloat16 everywhere,
    ``release`` only on CUDA (the released scripts' CUDA autocast), the others float32."""
    p = plan(mode)
    if p.backbone_autocast is None:
        return torch.float32
    if p.autocast_device is not None and p.autocast_device != _device_kind(device):
        return torch.float32
    return p.backbone_autocast


def model_dtype(mode: str) -> torch.dtype:
    """dtype of parameters and floating inputs in ``mode`` (float64 only for ``float64``)."""
    return plan(mode).dtype


def configure_tf32(allow: bool) -> None:
    """Allow or forbid TF32 for CUDA matmul and cuDNN (process-wide PyTorch flags)."""
    torch.backends.cuda.matmul.allow_tf32 = bool(allow)
    torch.backends.cudnn.allow_tf32 = bool(allow)


def _device_kind(device: DeviceLike) -> str:
    return torch.device(device if device is not None else "cpu").type


@contextlib.contextmanager
def precision_context(mode: str, device: DeviceLike = None) -> Iterator[PrecisionPlan]:
    """Set the TF32 flags ``mode`` asks for while the block runs on a CUDA ``device``;
    restore the previous flags on exit. On other devices the flags are left alone (they
    only affect CUDA). Yields the mode's :class:`PrecisionPlan`."""
    p = plan(mode)
    if _device_kind(device) != "cuda":
        yield p
        return
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        if p.tf32_matmul is not None:
            torch.backends.cuda.matmul.allow_tf32 = p.tf32_matmul
        if p.tf32_cudnn is not None:
            torch.backends.cudnn.allow_tf32 = p.tf32_cudnn
        yield p
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def autocast(mode: str, device: DeviceLike, part: str):
    """The autocast context for ``part`` (``"backbone"`` or ``"head"``) in ``mode``.

    Modes without autocast for that part return a context that *disables* autocast, so an
    outer autocast cannot silently lower the precision. ``release`` asks for CUDA autocast
    only, exactly like the released scripts: on a CPU it has no effect.
    """
    if part not in PARTS:
        raise ValueError(f"unknown model part {part!r}; expected one of {', '.join(PARTS)}")
    p = plan(mode)
    kind = _device_kind(device)
    dtype = p.backbone_autocast if part == "backbone" else p.head_autocast
    try:
        if dtype is None:
            return torch.autocast(device_type=kind, enabled=False)
        if p.autocast_device is not None and p.autocast_device != kind:
            return contextlib.nullcontext()
        return torch.autocast(device_type=kind, dtype=dtype)
    except RuntimeError:  # a device type without autocast support (e.g. meta)
        return contextlib.nullcontext()


def to_precision(module: torch.nn.Module, mode: str) -> torch.nn.Module:
    """Cast ``module``'s floating parameters and buffers to the mode's dtype (in place)."""
    return module.to(model_dtype(mode))
