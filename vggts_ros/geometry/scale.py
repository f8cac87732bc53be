"""The metric scale of VGGT's geometry (trained on normalised scenes: its depth and camera
translations are right up to one unknown factor per set).

Sources, in this order (:func:`choose_scale`):

1. **A depth camera** (:func:`scale_from_depth`): over valid, confident pixels the
   ratios ``r = log(sensor depth) - log(VGGT depth)`` (in logs, so that a pixel twice too
   far and one twice too near weigh alike); the factor is ``exp`` of the median of the
   shortest interval that holds half of them (the shorth, i.e. least-median-of-squares
   location). Breakdown point 50 %: as long as more than half the pixels agree, the rest
   (sensor flying pixels, VGGT's errors at edges, a reflective surface) may be arbitrary;
   unlike the plain median it is not pulled toward where the wrong pixels lie (with 45 %
   wild pixels the median moved 0.87 %, the shorth under 0.01 %). Several depth
   cameras pool their pixels.
2. **A known baseline** (:func:`scale_from_baseline`, ``geometry.baseline``: two camera
   names and the distance between them in metres, for a calibrated rig): metres over the
   distance between the two cameras' VGGT centres.
3. Otherwise ``relative`` (factor 1, source ``none``).

Sources are named like ``depth:front``, ``depth:front+back``, ``baseline:exo1-exo2``, ``none``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence, Tuple, Union

import numpy as np


class ScaleError(ValueError):
    """A scale that cannot be estimated from what was given (named in the message)."""


@dataclass(frozen=True)
class Scale:
    """``value`` turns VGGT lengths into metres (1 when ``kind`` is ``relative``);
    ``source`` names where it came from; ``samples``: pixels (depth) or 1 (baseline);
    ``spread``: robust relative spread of the per-pixel ratios (1.4826 x the median
    absolute deviation of their logs from the estimate);
    ``note``: why a preferred source was not used, when one was not."""

    value: float = 1.0
    kind: str = "relative"
    source: str = "none"
    samples: int = 0
    spread: float = 0.0
    note: str = ""

    def depth(self, vggt_depth: np.ndarray) -> np.ndarray:
        """VGGT depth in metres (when metric)."""
        return np.asarray(vggt_depth, np.float64) * self.value

    def pose(self, T: np.ndarray) -> np.ndarray:
        """A 4x4 VGGT pose with its translation in metres (when metric)."""
        out = np.array(T, np.float64, copy=True)
        out[:3, 3] *= self.value
        return out


RELATIVE = Scale()


@dataclass(frozen=True)
class Baseline:
    """``geometry.baseline``: the distance in metres between two cameras' centres."""

    camera_a: str
    camera_b: str
    metres: float

    @property
    def name(self) -> str:
        return f"{self.camera_a}-{self.camera_b}"


def parse_baseline(value: Union[str, Sequence, Baseline, None]) -> Optional[Baseline]:
    """``geometry.baseline`` as given: ``"exo1,exo2,0.6"`` (or spaces), a 3-sequence
    ``[name, name, metres]`` or a :class:`Baseline`; empty: None. Raises :class:`ScaleError`
    for another form, two identical cameras or a distance that is not a positive number."""
    if value is None or (isinstance(value, (str, list, tuple)) and len(value) == 0):
        return None
    if isinstance(value, Baseline):
        a, b, metres = value.camera_a, value.camera_b, value.metres
    else:
        parts = value.replace(",", " ").split() if isinstance(value, str) else list(value)
        if len(parts) != 3:
            raise ScaleError(f"geometry.baseline needs two camera names and metres, got {value!r}")
        a, b = str(parts[0]).strip(), str(parts[1]).strip()
        try:
            metres = float(parts[2])
        except (TypeError, ValueError):
            raise ScaleError(f"geometry.baseline: the distance {parts[2]!r} is not a number") from None
    if not a or not b:
        raise ScaleError(f"geometry.baseline names an empty camera: {value!r}")
    if a == b:
        raise ScaleError(f"geometry.baseline names camera {a!r} twice; it needs two different cameras")
    if not math.isfinite(metres) or metres <= 0:
        raise ScaleError(f"geometry.baseline: the distance must be a positive number of metres, got {metres}")
    return Baseline(a, b, float(metres))


def check_baseline(baseline: Optional[Baseline], cameras: Sequence[str]) -> None:
    """Refuse a baseline naming a camera that is not configured (for a start-up check)."""
    if baseline is None:
        return
    for name in (baseline.camera_a, baseline.camera_b):
        if name not in cameras:
            raise ScaleError(f"geometry.baseline names camera {name!r}, which is not one of the configured "
                             f"cameras ({', '.join(cameras) or 'none'})")


def _log_ratios(sensor: np.ndarray, vggt: np.ndarray, confidence: Optional[np.ndarray],
                min_confidence: float, camera: str) -> np.ndarray:
    s = np.asarray(sensor, np.float64)
    g = np.asarray(vggt, np.float64)
    if s.shape != g.shape:
        raise ScaleError(f"camera {camera!r}: sensor depth {s.shape} and VGGT depth {g.shape} differ in size; "
                         "bring both to the colour frame's pixels first")
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(s) & np.isfinite(g) & (s > 0) & (g > 0)
        if confidence is not None:
            c = np.asarray(confidence, np.float64)
            if c.shape != s.shape:
                raise ScaleError(f"camera {camera!r}: depth confidence {c.shape} does not match the depth {s.shape}")
            ok &= c >= min_confidence
    return np.log(s[ok]) - np.log(g[ok])


def scale_from_depth(sensor: np.ndarray, vggt: np.ndarray, *, confidence: Optional[np.ndarray] = None,
                     min_confidence: float = 0.0, camera: str = "", min_pixels: int = 100) -> Scale:
    """Metres per VGGT unit from one camera's sensor depth (metres, NaN/0 = none) and VGGT
    depth (same pixels), over pixels valid in both and at least ``min_confidence`` confident.
    Raises :class:`ScaleError` with fewer than ``min_pixels`` such pixels."""
    return scale_from_depths({camera: (sensor, vggt, confidence)}, min_confidence=min_confidence,
                             min_pixels=min_pixels)


def scale_from_depths(pairs: Mapping[str, Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]], *,
                      min_confidence: float = 0.0, min_pixels: int = 100) -> Scale:
    """Like :func:`scale_from_depth` over several cameras (``name -> (sensor, vggt,
    confidence or None)``), their pixels pooled; the source names every camera used."""
    logs, used, counts = [], [], []
    for cam, (sensor, vggt, conf) in pairs.items():
        r = _log_ratios(sensor, vggt, conf, min_confidence, cam)
        counts.append(f"{cam or '?'}: {len(r)}")
        if len(r):
            logs.append(r)
            used.append(cam)
    n = sum(len(r) for r in logs)
    if n < min_pixels:
        raise ScaleError(f"no valid overlapping pixels between sensor and VGGT depth to fix the scale "
                         f"({n} < {min_pixels}; per camera {', '.join(counts) or 'none'})")
    r = np.sort(np.concatenate(logs))
    h = len(r) // 2 + 1
    i = int(np.argmin(r[h - 1:] - r[: len(r) - h + 1]))  # the shortest half: r[i : i + h]
    centre = float(np.median(r[i: i + h]))
    spread = float(1.4826 * np.median(np.abs(r - centre)))
    return Scale(math.exp(centre), "metric", "depth:" + "+".join(used), n, spread)


def scale_from_baseline(centres: Mapping[str, np.ndarray], baseline: Baseline) -> Scale:
    """Metres per VGGT unit from a known distance between two cameras and their centres as
    VGGT estimates them (``name -> 3-vector`` in any one frame, e.g. the translation of
    ``T_ref_from_cam``). Raises :class:`ScaleError` for a camera that has no centre, two
    identical cameras, or centres that coincide (zero estimated baseline)."""
    if baseline.camera_a == baseline.camera_b:
        raise ScaleError(f"geometry.baseline names camera {baseline.camera_a!r} twice")
    for name in (baseline.camera_a, baseline.camera_b):
        if name not in centres:
            raise ScaleError(f"geometry.baseline names camera {name!r}, which has no VGGT pose in this set "
                             f"(cameras: {', '.join(centres) or 'none'})")
    a = np.asarray(centres[baseline.camera_a], np.float64).reshape(3)
    b = np.asarray(centres[baseline.camera_b], np.float64).reshape(3)
    dist = float(np.linalg.norm(a - b))
    if not math.isfinite(dist) or dist <= 1e-9 * max(1.0, float(np.abs(a).max()), float(np.abs(b).max())):
        raise ScaleError(f"the estimated baseline {baseline.name} is zero (VGGT puts both cameras at the same "
                         "place): the scale cannot come from it")
    return Scale(baseline.metres / dist, "metric", f"baseline:{baseline.name}", 1, 0.0)


def choose_scale(*, depth_pairs: Optional[Mapping[str, Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]]] = None,
                 centres: Optional[Mapping[str, np.ndarray]] = None, baseline: Optional[Baseline] = None,
                 min_confidence: float = 0.0, min_pixels: int = 100) -> Scale:
    """The scale of one set: from the depth cameras if any has enough valid overlapping
    pixels, else from the baseline if one is configured and usable, else relative. A
    source that was tried and failed is said in ``note`` (never raised: the set still
    gets its relative geometry)."""
    notes = []
    if depth_pairs:
        try:
            return scale_from_depths(depth_pairs, min_confidence=min_confidence, min_pixels=min_pixels)
        except ScaleError as e:
            notes.append(str(e))
    if baseline is not None:
        try:
            s = scale_from_baseline(centres or {}, baseline)
            return Scale(s.value, s.kind, s.source, s.samples, s.spread, "; ".join(notes))
        except ScaleError as e:
            notes.append(str(e))
    return Scale(note="; ".join(notes))
