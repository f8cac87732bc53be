"""Iterative refinement of the Union Segmentation Head: the one implementation used by
inference (``pipeline.py``), evaluation (``training/evaluate.py``) and training
(``training/trainer.py``), so that all three run the same model.

A refinement pass feeds the previous pass's low-resolution logits back as a dense prompt.
The reference ``PromptEncoder`` also adds the source-point identity embedding to the
caller's point-feature tensor *in place*; the reference inference, evaluation loop and
training loop (``main_exp/hybrid.py``) all pass the same tensor to every pass, so pass
``k`` sees that embedding ``k + 1`` times. ``identity="accumulate"`` (default) reproduces
this; ``identity="per_pass"`` adds it exactly once per pass (what a functional prompt
encoder would do; the checkpoints were not trained that way).
"""

from __future__ import annotations

import contextlib
from typing import Optional, Tuple

import torch
from torch import Tensor

from vggts_ros.config import POINT_IDENTITY as IDENTITY_MODES  # one list, shared with the configuration


def check_identity(identity: str) -> str:
    """Return ``identity`` if it is a known point-identity mode, else raise a ValueError."""
    if identity not in IDENTITY_MODES:
        raise ValueError(f"unknown point-identity mode {identity!r}; expected one of {', '.join(IDENTITY_MODES)}")
    return identity


def decode_with_refinement(
    head,
    ctx,
    refinements: int,
    identity: str = "accumulate",
    *,
    prev_low_res: Optional[Tensor] = None,
    grad_last_only: bool = False,
) -> Tuple[Tensor, Tensor]:
    """Decode an encoded pair ``1 + refinements`` times, each pass fed the previous pass's
    low-res logits; return the last pass's ``(full-resolution logits, low-res logits)``.

    ``head``: a :class:`~vggts_ros.models.union_head.UnionSegmentationHead`; ``ctx``: its
    ``encode(...)`` result (encode once per pair, as the passes share it). ``identity``:
    ``"accumulate"`` (reference) or ``"per_pass"``, see the module docstring.
    ``prev_low_res``: logits fed to the first pass (None: no mask prompt).
    ``grad_last_only``: run every pass but the last without gradients and feed the last
    one detached logits, as the reference training loop does; the identity copies added
    between passes then carry no gradient either (in the reference they are added under
    ``no_grad``), so the gradient through the point features is that of one embedding.
    """
    check_identity(identity)
    refinements = int(refinements)
    if refinements < 0:
        raise ValueError(f"refinements must be >= 0, got {refinements}")

    def grad_mode(last: bool):
        return torch.no_grad() if grad_last_only and not last else contextlib.nullcontext()

    low = prev_low_res
    with grad_mode(refinements == 0):
        full, low = head.decode(ctx, low)
    for k in range(refinements):
        if identity == "accumulate":
            ctx = head.add_point_feature_identity(ctx, detach=grad_last_only)
        last = k == refinements - 1
        with grad_mode(last):
            full, low = head.decode(ctx, low.detach() if grad_last_only else low)
    return full, low
