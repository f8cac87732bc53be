"""Shared by the pipeline parity tests (``pipeline_ego2exo.pt``, ``pipeline_exo2ego.pt``).

Networks: the backbone of ``vggt_track_tiny.pt`` (its config and weight seed) and the
full-size head (the ``vggts_head.pt`` config at the image size and ``sa_tokens`` named in
the pipeline fixture's note, weight seed ``head_weight_seed``), both filled with the
fixtures' deterministic rule and checked key by key before any output is compared.

**Float32 tolerances** (``parity_tolerances.py``). The tracker amplifies float32 rounding
(~30x per iteration), so a float32 first pass is only reproducible across CPUs to about the
size of the stored float32-vs-float64 drift ``d = |ref32 - ref64|`` (README "Added keys").
Our float32 run and the reference's are both within about ``d`` of the exact value, so they
are compared with ``DRIFT_FACTOR * d`` (2 for the two runs, 1 for margin). What depends on
the first pass downstream (the end-to-end logits) gets the same treatment: that factor times
the logit change the stored drift causes. Float64 runs are compared to 1e-6 px / 1e-9
relative (``F64_*``).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import torch

import parity_tolerances as ptol
from conftest import load_fixture
from vggts_ros.config import HeadConfig
from vggts_ros.models.backbone import VGGTBackbone, backbone_config_from_dict
from vggts_ros.models.deterministic import fill_deterministic, weight_sums

COORD_TOL = 1e-2  # px, stages that do not depend on the tracker (README "Tolerances")


def np_(x) -> np.ndarray:
    return x.numpy() if torch.is_tensor(x) else np.asarray(x)


def check_weight_sums(model, expected, what):
    got = weight_sums(model)
    assert sorted(got) == sorted(expected), f"{what}: state-dict keys differ from the reference"
    bad = [k for k in expected if abs(got[k] - expected[k]) > 1e-6 * max(1.0, abs(expected[k]))]
    assert not bad, f"{what}: deterministic weights differ for {bad[:5]}"


def sorted_rows(a) -> np.ndarray:
    a = np.asarray(a, np.float64).reshape(-1, 2)
    return a[np.lexsort(a.T[::-1])]


def assert_points(actual, expected, what, ordered=True, tol=COORD_TOL):
    a, e = np.asarray(actual, np.float64).reshape(-1, 2), np_(expected).astype(np.float64).reshape(-1, 2)
    if not ordered:
        a, e = sorted_rows(a), sorted_rows(e)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    err = np.abs(a - e).max()
    assert err <= tol, f"{what}: max error {err:.3g} px > {tol:.3g}"


def assert_image(actual, expected, what, tol=1):
    """uint8 views: cv2's area resampling may round differently by one level across builds."""
    a, e = np.asarray(actual).astype(np.int64), np_(expected).astype(np.int64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    assert np.abs(a - e).max() <= tol, f"{what}: differs by {np.abs(a - e).max()}"


def assert_close(actual, expected, what, tol):
    a, e = torch.as_tensor(actual).double(), torch.as_tensor(expected).double()
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)} != {tuple(e.shape)}"
    err = (a - e).abs().max().item()
    assert err <= tol, f"{what}: max abs error {err:.3g} > {tol:.3g}"


def drift_tolerance(float32, float64) -> float:
    """``DRIFT_FACTOR`` times the stored float32-vs-float64 drift (module docstring)."""
    return max(ptol.DRIFT_FACTOR * ptol.drift(float32, float64), ptol.COORD_FLOOR_PX)


def head_config(pipe, head_fx) -> HeadConfig:
    """The ``vggts_head.pt`` config with the image size / sa_tokens named in the note."""
    match = re.search(r"img_size\s*=?\s*(\d+)\D+sa_tokens\s*=?\s*(\d+)", str(pipe["note"]))
    assert match, f"cannot read the head size from the fixture note: {pipe['note']!r}"
    known = {f.name for f in dataclasses.fields(HeadConfig)}
    cfg = {k: v for k, v in head_fx["config"].items() if k in known}
    cfg.update(img_size=int(match.group(1)), sa_tokens=int(match.group(2)))
    return HeadConfig(**cfg)


def build_networks(pipe):
    """(backbone, head) of a pipeline fixture, weights checked key by key."""
    from vggts_ros.models.union_head import UnionSegmentationHead

    track_fx, head_fx = load_fixture("vggt_track_tiny.pt"), load_fixture("vggts_head.pt")
    assert pipe["weight_seed"] == track_fx["weight_seed"]
    backbone = VGGTBackbone(backbone_config_from_dict(track_fx["config"])).eval()
    fill_deterministic(backbone, track_fx["weight_seed"])
    check_weight_sums(backbone, track_fx["weight_sums"], "backbone")
    head = fill_deterministic(UnionSegmentationHead(head_config(pipe, head_fx)).eval(), pipe["head_weight_seed"])
    check_weight_sums(head, pipe["head_weight_sums"], "head")
    return backbone, head


def network_logits(low: torch.Tensor, size: int) -> torch.Tensor:
    """The head's upsampling of low-res logits to the network size: ``[size, size]``."""
    x = torch.as_tensor(low).float().reshape(1, 1, *low.shape[-2:])
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)[0, 0]
