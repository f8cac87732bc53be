"""Cheap per-camera mask propagation between the expensive cross-view results.

The cross-view step (VGGT-S, or the weight-free backend) finds an object in a target
camera on one frame; it takes far longer than the camera's frame interval. Between two
such results each camera's own stream carries the mask forward:

* A **track** is started from a cross-view result on a frame: Shi-Tomasi corners inside
  the mask (a pixel in from its border; never on a flat region: ``min_eigen``), and the
  result's target points.
* Every new frame of that camera moves the track's points with pyramidal Lucas-Kanade
  optical flow and keeps those that pass a forward-backward check. A point off the
  frame-to-frame motion of the others (a similarity fit, 1 px) two frames in a row has
  slid off the object (stuck to an occluder's edge, or to the floor) and is dropped.
  An affine transform (RANSAC) from the points' places on the anchor frame to their
  places now is the object's motion (a similarity when the points left span too little
  of it); the anchor mask is warped by that one transform (never re-sampled frame after
  frame, so its edges do not erode), and so are the target points.
* Below ``replenish`` of its starting points, a track takes new corners on the part of
  the object its live points still span, away from other objects, and only once it has
  stopped losing points for ``quiet`` s (an occluder sliding over it would give its
  corners otherwise).
* Where two tracked objects' masks overlap, the overlap goes to the one in front: the
  one whose points there are still followed while the other's there were lost.
* A track that loses its points (hidden, out of view) keeps moving at its last velocity
  for ``coast`` s and looks for its object there: its starting corners that should be in
  sight (not under another tracked object), from the anchor frame straight to the new
  one; enough of them agreeing on one translation of its last shape and it is followed
  again (an object passing behind another comes out tracked, without a new cross-view
  result).
* **Occlusion by another tracked object.** A track that loses its points with at least
  ``occluded`` of its mask under a tracked object in front (or is still followed with
  ``behind`` of it under one: the few points left beside the occluder's edge fix its
  motion poorly) is *occluded by* that object: predicted behind it at its last velocity
  (measured only while little of it was hidden), published as good where it is
  predicted, minus the part under the one in front, with ``occluded_by`` set; the share
  of in-sight points kept counts only points that should be in sight. Once the whole
  predicted object has been in sight for ``reanchor`` s and its corners are not found
  (it may look different by then), the track starts over from the prediction on that
  frame. A followed track also takes back starting corners in sight again (``_revive``);
  while only a strip of the object is followed, it keeps the shape of its last full fit
  and moves it (a translation). A restarted track keeps the object's velocity.
* One :class:`CameraPropagator` per camera holds all the tracks of that camera: the
  points of every track go through one optical-flow call per frame (forward, then
  backward), so the image pyramids are built once per frame, not once per object.
* A cross-view result that arrives late (computed on a frame the camera has since moved
  past) starts its track on its own frame and is carried to the newest frame at once,
  through the camera's recent frames (``history``; at most ``max_catch_up`` steps), so it
  replaces the propagated mask of the same object from the next publication on.

Each propagated mask reports whether it is still good, and the reason when it is not:
too few points kept (the object was occluded, left the view, or was textureless from
the start), a degenerate fit (the transform folds, shrinks or blows the mask up), the
mask left the image, or its age since the cross-view result passed the deadline
(``max_age``).

:class:`DenseCameraPropagator` is the measured alternative (dense DIS optical flow on a
downscaled frame, each mask pulled through the flow frame after frame);
``bench/bench_propagation.py`` compares both (docs/propagation.md).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Dict, Hashable, List, Optional, Tuple

import cv2
import numpy as np

METHODS = ("klt", "dense")
MODELS = ("affine", "similarity", "homography")


@dataclass
class PropagationConfig:
    """Settings of the per-camera tracker (times in seconds, sizes in pixels)."""

    method: str = "klt"  # "klt" (sparse points + homography) or "dense" (DIS flow, the alternative)
    max_points: int = 50  # corners per track
    quality: float = 0.001  # Shi-Tomasi quality level (fraction of the strongest corner)
    min_eigen: float = 0.003  # ... and never weaker than this (cv2.cornerMinEigenVal, 5x5 block): not flat
    min_distance: int = 3  # between corners
    erode: int = 1  # corners only this far inside the mask
    window: int = 15  # Lucas-Kanade window (pixels, odd)
    levels: int = 3  # pyramid levels above the frame
    fb_max: float = 1.0  # forward-backward error allowed (pixels)
    model: str = "affine"  # motion model fitted to the points: affine, similarity or homography
    ransac: float = 4.0  # RANSAC reprojection threshold (pixels)
    step_ransac: float = 1.0  # a point farther than this off the frame-to-frame motion is off it (pixels)
    outlier_frames: int = 2  # a point off the frame-to-frame motion this many frames in a row is dropped
    replenish: float = 0.6  # below this fraction of the starting points, new corners join the track
    min_spread: float = 0.5  # live points spread less than this (of the start's) in a direction: similarity fit
    min_points: int = 6  # fewer live points: lost
    min_kept: float = 0.3  # fewer of the anchor's points still inliers: lost
    max_scale_change: float = 2.5  # the mask's area may change by this factor since the anchor
    min_in_image: float = 0.25  # less of the warped mask inside the image: left the image
    max_age: Optional[float] = 2.0  # deadline since the cross-view frame; None = none
    dense_scale: float = 0.5  # dense method: flow computed at this fraction of the frame size
    history: float = 3.0  # s of recent frames kept per camera: a late cross-view result catches up through them
    coast: float = 2.0  # s a lost track keeps moving at its last velocity, looking for its object again
    quiet: float = 0.3  # s without losing a point before a track takes new corners
    reacquire: float = 0.3  # ... found again when this fraction of its starting corners match the anchor frame
    occluded: float = 0.5  # a track that loses its points with this much of its mask under a tracked object in
    #                        front is occluded by it: predicted behind it (coasting) and published as such
    reanchor: float = 0.4  # s the whole of an object predicted behind another is in sight again, its corners not
    #                        found, before its track starts over from the prediction
    behind: float = 0.8  # ... and a followed track with this much of its mask under one is predicted behind it
    #                      too (the few points left beside the occluder's edge fix its motion poorly)
    max_catch_up: int = 12  # optical-flow steps at most for a catch-up (frames in between are skipped evenly)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"propagation method {self.method!r}: use one of {', '.join(METHODS)}")
        if self.window < 3 or self.window % 2 == 0:
            raise ValueError(f"propagation window must be an odd number >= 3 (got {self.window})")
        if self.max_points < 4 or self.min_points < 4:
            raise ValueError("propagation needs max_points and min_points >= 4 (a homography needs 4 points)")
        if self.outlier_frames < 1:
            raise ValueError(f"outlier_frames must be >= 1 (got {self.outlier_frames})")
        if self.min_eigen < 0 or not 0.0 < self.quality < 1.0:
            raise ValueError("quality must be in (0, 1) and min_eigen >= 0")
        if not 0.0 <= self.min_kept <= 1.0 or not 0.0 <= self.min_in_image <= 1.0:
            raise ValueError("min_kept and min_in_image are fractions in [0, 1]")
        if self.max_age is not None and self.max_age <= 0:
            raise ValueError(f"max_age must be positive seconds or None (got {self.max_age})")
        if self.model not in MODELS:
            raise ValueError(f"propagation model {self.model!r}: use one of {', '.join(MODELS)}")
        if not 0.0 < self.occluded <= 1.0 or not 0.0 < self.behind <= 1.0:
            raise ValueError(f"occluded and behind must be fractions in (0, 1] (got {self.occluded}, {self.behind})")
        if self.reanchor < 0:
            raise ValueError(f"reanchor must be >= 0 s (got {self.reanchor})")
        if self.coast < 0 or not 0.0 < self.reacquire <= 1.0:
            raise ValueError("coast must be >= 0 s and reacquire a fraction in (0, 1]")
        if self.history < 0 or self.max_catch_up < 1:
            raise ValueError("history must be >= 0 s and max_catch_up >= 1")
        if not 0.0 < self.dense_scale <= 1.0:
            raise ValueError(f"dense_scale must be in (0, 1] (got {self.dense_scale})")


@dataclass
class Propagated:
    """One object's mask on one camera frame, carried from a cross-view result.

    ``mask`` is HxW bool on the frame ``stamp``; ``points`` the cross-view result's
    target points moved to this frame (Nx2 float32, clipped to the image; ``visible``
    says which were inside it); ``kept`` the fraction of the anchor's tracked points that
    still agree with the fit; ``age`` seconds since the cross-view frame
    (``anchor_stamp``), ``steps`` optical-flow steps since it (a late result's catch-up
    jump counts one). ``good`` False comes with the ``reason``; a mask that is not good
    is still the tracker's best guess. A track started from an empty mask (the
    cross-view step did not find the object) stays empty and good until its deadline:
    it carries "not seen", nothing was lost."""

    key: Hashable
    mask: np.ndarray
    points: np.ndarray
    visible: np.ndarray
    kept: float
    age: float
    steps: int
    stamp: float
    anchor_stamp: float
    good: bool
    reason: str = ""
    transform: np.ndarray = field(default_factory=lambda: np.eye(3))  # anchor -> this frame
    hidden: float = 0.0  # share of the object's (predicted) mask covered by tracked objects in front
    occluded_by: Optional[Hashable] = None  # behind this tracked object: its points are gone, its place predicted
    full: int = 0  # pixels of the object's whole (predicted) mask, the hidden part included

    @property
    def path(self) -> str:
        """What produced the mask, for ``ObjectPoints.path``-style reports."""
        if self.steps == 0:
            return "cross_view"
        return f"propagated(age={self.age:.3f}s)"


def _gray(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 2:
        return np.ascontiguousarray(img, dtype=np.uint8)
    if img.ndim == 3 and img.shape[2] in (3, 4):
        return cv2.cvtColor(np.ascontiguousarray(img[..., :3], dtype=np.uint8), cv2.COLOR_RGB2GRAY)
    raise ValueError(f"expected an HxW or HxWx3 image, got shape {img.shape}")


def _bbox(mask: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def warp_mask(mask: np.ndarray, H: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """``mask`` (bool) moved by the homography ``H`` into an image of ``shape`` (h, w),
    warped only inside the bounding box it lands in."""
    h, w = shape
    out = np.zeros((h, w), bool)
    box = _bbox(mask)
    if box is None:
        return out
    x0, y0, x1, y1 = box
    corners = np.float64([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    moved = cv2.perspectiveTransform(corners[None], H)[0]
    if not np.isfinite(moved).all():
        return out
    u0, v0 = np.floor(moved.min(0)).astype(int) - 1
    u1, v1 = np.ceil(moved.max(0)).astype(int) + 2
    u0, v0, u1, v1 = max(u0, 0), max(v0, 0), min(u1, w), min(v1, h)
    if u1 <= u0 or v1 <= v0:
        return out
    shift = np.array([[1.0, 0.0, -u0], [0.0, 1.0, -v0], [0.0, 0.0, 1.0]])
    src = mask.astype(np.uint8) * 255
    part = cv2.warpPerspective(src, shift @ H, (int(u1 - u0), int(v1 - v0)), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    out[v0:v1, u0:u1] = part >= 128
    return out


def _warped_area(mask_area: float, box: Tuple[int, int, int, int], H: np.ndarray) -> float:
    """Area of the mask after H (by the change of its bounding box's area)."""
    x0, y0, x1, y1 = box
    corners = np.float64([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    moved = cv2.perspectiveTransform(corners[None], H)[0]
    before = (x1 - x0) * (y1 - y0)
    after = 0.5 * abs(float(np.dot(moved[:, 0], np.roll(moved[:, 1], 1)) - np.dot(moved[:, 1], np.roll(moved[:, 0], 1))))
    return mask_area * after / max(before, 1e-9)


class _Track:
    """One object on one camera: the anchor (cross-view frame) and where it is now."""

    def __init__(self, key: Hashable, mask: np.ndarray, points: np.ndarray, stamp: float,
                 anchor_pts: np.ndarray) -> None:
        self.key = key
        self.mask = mask  # anchor mask, bool
        self.box = _bbox(mask)
        self.area = float(mask.sum())
        self.target_points = points  # Nx2 float32 on the anchor frame
        self.anchor_stamp = stamp
        self.n_start = len(anchor_pts)
        self.anchor_pts = anchor_pts  # Mx2 float32: the corners, in anchor-frame pixels
        self.current = anchor_pts.copy()  # Mx2: where they are on the last frame
        self.alive = np.ones(len(anchor_pts), bool)
        self.misses = np.zeros(len(anchor_pts), np.int32)  # frames in a row off the fit
        self.dead = np.zeros((0, 2), np.float32)  # anchor places of points lost inside the image
        self.dead_at = np.zeros(0)  # ... and when
        self.dead_idx = np.zeros(0, np.int64)  # ... and which points they were
        self.revivable = np.zeros(0, np.int64)  # starting points lost but in sight again (last frame)
        self.H = np.eye(3)
        self.steps = 0
        self.stamp = stamp  # the frame it is on
        self.anchor_gray: Optional[np.ndarray] = None  # the anchor frame, to find the object again
        self.good_H = np.eye(3)  # the last fit while followed, its stamp, and the object's velocity then
        self.good_stamp = stamp
        self.velocity = np.zeros(2)  # of the anchor mask's centre, pixels per second
        self.centre = np.array([(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2], float) \
            if self.box is not None else np.zeros(2)
        self.coasting = False  # lost its points: moving at its last velocity, looking for the object
        self.lost = ""  # sticky reason once the points are gone
        self.lost_new = False  # lost its points on this frame (occluded or not: decided with the others' masks)
        self.occluded_by: Optional[Hashable] = None  # lost behind this tracked object (while coasting)
        self.cover: Dict[Hashable, int] = {}  # pixels of its mask taken by each tracked object in front
        self.hidden = 0.0  # share of its mask under tracked objects in front (last frame)
        self.shape_H = np.eye(3)  # the last fit on points spanning the object (its shape now)
        self.kept_sight = 1.0  # share of its points in sight still followed (last frame)
        self.out_since: Optional[float] = None  # predicted behind another object, and whole in sight since
        self.empty = False  # started from an empty mask (the object was not found there)
        self.pending: Optional[np.ndarray] = None  # its own frame, while the camera is behind it
        self.full: Optional[np.ndarray] = None  # warped anchor mask on its frame, before occlusion
        self.visible_mask: Optional[np.ndarray] = None  # ... after occlusion by other tracks
        self.result: Optional[Propagated] = None

    @property
    def kept(self) -> float:
        return min(1.0, float(self.alive.sum()) / max(1, self.n_start))


class _TrackTable:
    """What both propagators keep per camera: the tracks by key, the newest frame's stamp
    and size, and the state accessors over them."""

    _tracks: Dict[Hashable, Any]
    _stamp: Optional[float]
    _shape: Optional[Tuple[int, int]]

    @property
    def keys(self) -> List[Hashable]:
        return list(self._tracks)

    @property
    def stamp(self) -> Optional[float]:
        """Stamp of the newest frame seen (None before the first)."""
        return self._stamp

    @property
    def shape(self) -> Optional[Tuple[int, int]]:
        """(height, width) of this camera's frames (None before the first)."""
        return self._shape

    def current(self, key: Hashable) -> Optional[Propagated]:
        """The track's latest state (None for an unknown key)."""
        t = self._tracks.get(key)
        return None if t is None else t.result

    def drop(self, key: Optional[Hashable] = None) -> None:
        """Forget one track (``key``) or all of them (None)."""
        if key is None:
            self._tracks.clear()
        else:
            self._tracks.pop(key, None)


class CameraPropagator(_TrackTable):
    """All the mask tracks of one camera stream (the ``klt`` method).

    ``update(image, stamp)`` for every new frame (stamps never decreasing); ``start(key,
    image, stamp, mask, points)`` when a cross-view result arrives for that camera
    (``image`` is the frame it was computed on, ``stamp`` its stamp, which may be older
    than the newest frame: the track catches up at once, or newer: it waits for that
    frame). Keys are whatever the caller names an object with (its id).

    Where two objects' masks overlap, the overlap goes to the one in front: the one whose
    points there are still tracked, while the other's points there were lost."""

    def __init__(self, config: Optional[PropagationConfig] = None) -> None:
        self.config = config or PropagationConfig()
        if self.config.method != "klt":
            raise ValueError("CameraPropagator is the 'klt' method; make_propagator() builds the 'dense' one")
        self._tracks: Dict[Hashable, _Track] = {}
        self._gray: Optional[np.ndarray] = None  # the newest frame
        self._history: "deque[Tuple[float, np.ndarray]]" = deque()  # (stamp, frame) of recent frames, oldest first
        self._stamp: Optional[float] = None
        self._shape: Optional[Tuple[int, int]] = None

    def _check_shape(self, shape: Tuple[int, int], what: str) -> None:
        if self._shape is not None and shape != self._shape:
            raise ValueError(f"{what} is {shape[1]}x{shape[0]} but this camera's frames are "
                             f"{self._shape[1]}x{self._shape[0]}")

    # ------------------------------------------------------------------ API
    def update(self, image: np.ndarray, stamp: float) -> Dict[Hashable, Propagated]:
        """Move every track to this frame; returns the state of every track on it (tracks
        waiting for a later frame are left out)."""
        gray = _gray(image)
        self._check_shape(gray.shape, "the frame")
        stamp = float(stamp)
        if self._stamp is not None and stamp < self._stamp:
            raise ValueError(f"frame stamp {stamp} is older than the previous frame's {self._stamp}")
        prev = self._gray
        self._gray, self._stamp, self._shape = gray, stamp, gray.shape
        self._history.append((stamp, gray))
        while self._history and self._history[0][0] < stamp - self.config.history:
            self._history.popleft()
        # Tracks anchored on a frame of their own (a cross-view result for a frame the
        # camera had not reached) go from that frame, the others from the previous one.
        groups: Dict[int, Tuple[np.ndarray, List[_Track]]] = {}
        for t in self._tracks.values():
            if t.pending is not None:
                if t.anchor_stamp > stamp:
                    continue  # still ahead
                src, t.pending = t.pending, None
                if t.anchor_stamp == stamp:  # the anchor is this very frame
                    t.stamp = stamp
                    continue
                groups.setdefault(id(src), (src, []))[1].append(t)
            elif prev is not None and t.stamp < stamp:
                groups.setdefault(id(prev), (prev, []))[1].append(t)
        for src, tracks in groups.values():
            self._advance(src, gray, tracks, stamp)
        out = self._finish(stamp)
        self._revive([self._tracks[k] for k in out], gray)
        self._replenish([self._tracks[k] for k in out], gray)
        return {k: self._tracks[k].result for k in out}

    def start(self, key: Hashable, image: np.ndarray, stamp: float, mask: np.ndarray,
              points: Optional[np.ndarray] = None) -> Propagated:
        """(Re)start ``key``'s track from a cross-view result: ``mask`` (HxW, nonzero =
        object) and its target ``points`` (Nx2) on ``image`` at ``stamp``. Returns its
        state on the newest frame (the anchor itself while the camera is behind it)."""
        gray = _gray(image)
        self._check_shape(gray.shape, "the cross-view frame")
        m = np.asarray(mask)
        if m.ndim != 2 or m.shape != gray.shape:
            raise ValueError(f"mask {m.shape} does not match its frame {gray.shape}")
        m = m > 0
        pts = np.zeros((0, 2), np.float32) if points is None else np.asarray(points, np.float32).reshape(-1, 2)
        stamp = float(stamp)
        if not math.isfinite(stamp):
            raise ValueError(f"stamp must be a finite number of seconds (got {stamp})")
        track = _Track(key, m, pts, stamp, self._corners(gray, m))
        track.anchor_gray = gray
        old = self._tracks.get(key)
        if old is not None and old.velocity.any() and abs(old.good_stamp - stamp) <= self.config.coast:
            # the object's motion so far: a result that goes behind another object on its
            # way to the newest frame is predicted there at that speed (its own fits, if it
            # is followed for long enough, take over)
            track.velocity = old.velocity.copy()
        self._tracks[key] = track
        if track.area == 0:
            track.empty = True  # the result did not find the object: nothing to move, nothing lost
        elif track.n_start < self.config.min_points:
            track.lost = (f"too few trackable points in the mask ({track.n_start}, need "
                          f"{self.config.min_points}): textureless or too small")
        if self._shape is None:
            self._shape = gray.shape
        if self._stamp is None or stamp > self._stamp:  # the camera has not reached it yet
            track.pending = gray
            self._finish(stamp, [track])
        else:
            if stamp < self._stamp:
                self._catch_up(track, gray)
            self._finish(self._stamp)
        return track.result

    # ------------------------------------------------------------------ tracking
    def _corners(self, gray: np.ndarray, mask: np.ndarray, avoid: Optional[np.ndarray] = None,
                 limit: Optional[int] = None) -> np.ndarray:
        """Shi-Tomasi corners inside ``mask`` (eroded), at least ``min_distance`` from the
        points ``avoid``."""
        cfg = self.config
        box = _bbox(mask)
        if box is None:
            return np.zeros((0, 2), np.float32)
        x0, y0, x1, y1 = box
        m = 3  # the corner response needs a little context
        x0, y0 = max(0, x0 - m), max(0, y0 - m)
        x1, y1 = min(gray.shape[1], x1 + m), min(gray.shape[0], y1 + m)
        inner = mask[y0:y1, x0:x1].astype(np.uint8)
        if cfg.erode > 0:
            k = 2 * cfg.erode + 1
            inner = cv2.erode(inner, np.ones((k, k), np.uint8))
        if avoid is not None and len(avoid):
            for x, y in np.round(avoid - np.float32([x0, y0])).astype(int):
                cv2.circle(inner, (int(x), int(y)), cfg.min_distance, 0, -1)
        if not inner.any():
            return np.zeros((0, 2), np.float32)
        crop = gray[y0:y1, x0:x1]
        # the quality level is relative to the strongest corner: never below min_eigen, so
        # that a flat (textureless) region yields no corners on its noise
        strongest = float(cv2.cornerMinEigenVal(crop, 5, ksize=3)[inner > 0].max())
        if strongest < cfg.min_eigen:
            return np.zeros((0, 2), np.float32)
        level = min(1.0, max(cfg.quality, cfg.min_eigen / strongest))
        c = cv2.goodFeaturesToTrack(crop, limit or cfg.max_points, level, cfg.min_distance, mask=inner, blockSize=5)
        if c is None:
            return np.zeros((0, 2), np.float32)
        return (c.reshape(-1, 2) + np.float32([x0, y0])).astype(np.float32)

    def _catch_up(self, track: _Track, gray: np.ndarray) -> None:
        """A track anchored on an older frame: through the camera's frames since then (at
        most ``max_catch_up`` steps, evenly spread; one jump from the anchor when the
        history does not reach back to it)."""
        later = [(s, g) for s, g in self._history if s > track.anchor_stamp]
        if len(later) > self.config.max_catch_up:
            keep = np.unique(np.round(np.linspace(0, len(later) - 1, self.config.max_catch_up)).astype(int))
            later = [later[i] for i in keep]
        if not later or later[-1][0] != self._stamp:
            later.append((self._stamp, self._gray))
        src = gray
        for stamp, dst in later:
            self._advance(src, dst, [track], stamp)
            src = dst
        track.steps = 1 if track.steps else 0  # one catch-up counts as one step

    def _advance(self, src: np.ndarray, dst: np.ndarray, tracks: List[_Track], stamp: float) -> None:
        """Optical flow of all these tracks' live points from frame ``src`` to ``dst``
        (one call for all of them, so the pyramids are built once), then one fit per track."""
        cfg = self.config
        live = [t for t in tracks if not t.lost and t.alive.any()]
        if live:
            idx = [np.flatnonzero(t.alive) for t in live]
            p0 = np.concatenate([t.current[i] for t, i in zip(live, idx)]).reshape(-1, 1, 2)
            lk = dict(winSize=(cfg.window, cfg.window), maxLevel=cfg.levels,
                      criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03))
            p1, st1, _ = cv2.calcOpticalFlowPyrLK(src, dst, p0, None, **lk)
            back, st2, _ = cv2.calcOpticalFlowPyrLK(dst, src, p1, None, **lk)
            fb = np.linalg.norm((back - p0).reshape(-1, 2), axis=1)
            ok = (st1.ravel() == 1) & (st2.ravel() == 1) & (fb <= cfg.fb_max)
            p1 = p1.reshape(-1, 2)
            h, w = self._shape
            inside = (p1[:, 0] >= 0) & (p1[:, 0] <= w - 1) & (p1[:, 1] >= 0) & (p1[:, 1] <= h - 1)
            at = 0
            for t, i in zip(live, idx):
                n = len(i)
                good = ok[at:at + n] & inside[at:at + n]
                before = np.full_like(t.current, np.nan)
                before[i] = t.current[i]
                t.current[i] = p1[at:at + n]
                t.alive[i[~good]] = False
                # Points lost while inside the image are evidence of an occluder there.
                gone = i[~good & inside[at:at + n]]
                if len(gone):
                    _bury(t, gone, stamp)
                at += n
                self._fit(t, before, stamp)
        for t in tracks:
            if t.coasting:
                self._reacquire(t, dst, stamp)
            t.steps += 1
            t.stamp = stamp

    def _fit(self, t: _Track, before: np.ndarray, stamp: float) -> None:
        """Drop the points that stopped moving with the object, then fit the anchor ->
        now transform on the rest. ``before``: the live points' places on the previous
        frame (NaN for points that were not live)."""
        cfg = self.config
        # 1. This step's motion (similarity, tight threshold): a point off it for
        # ``outlier_frames`` steps in a row slid off the object (it stuck to an occluder's
        # edge, or to the floor): it is dropped, and counts as lost where it was.
        idx = np.flatnonzero(t.alive)
        if len(idx) >= 3:
            A, inl = cv2.estimateAffinePartial2D(before[idx], t.current[idx], method=cv2.RANSAC,
                                                 ransacReprojThreshold=cfg.step_ransac, maxIters=200,
                                                 confidence=0.99)
            if A is not None and inl is not None:
                off = ~inl.ravel().astype(bool)
                t.misses[idx] = np.where(off, t.misses[idx] + 1, 0)
                drop = idx[t.misses[idx] >= cfg.outlier_frames]
                if len(drop):
                    t.alive[drop] = False
                    _bury(t, drop, stamp)
        n_alive = int(t.alive.sum())
        if n_alive < cfg.min_points:
            t.lost = (f"too few points kept ({n_alive} of {t.n_start}, need {cfg.min_points}): "
                      "occluded, out of view or lost")
            t.coasting = cfg.coast > 0 and t.anchor_gray is not None
            t.lost_new = True
            return
        # 2. Anchor -> now, on the points left.
        a, c = t.anchor_pts[t.alive], t.current[t.alive]
        model = cfg.model
        if self._ill_conditioned(t, a):
            # the points left span too little of the object to fix its shape (a strip of
            # it beside an occluder): its shape stays that of the last fit that could, moved
            model = "translation"
        if model == "translation":
            H, inl = _translate(t.shape_H, a, c, cfg.ransac)
        elif model == "homography":
            H, inl = cv2.findHomography(a, c, cv2.RANSAC, cfg.ransac, maxIters=500, confidence=0.995)
        else:
            fit = cv2.estimateAffine2D if model == "affine" else cv2.estimateAffinePartial2D
            A, inl = fit(a, c, method=cv2.RANSAC, ransacReprojThreshold=cfg.ransac, maxIters=500, confidence=0.995)
            H = None if A is None else np.vstack([A, [0.0, 0.0, 1.0]])
        if H is None or inl is None or not np.isfinite(H).all() or abs(H[2, 2]) < 1e-12:
            t.lost = f"degenerate fit: no {model} fits the {n_alive} tracked points"
            return
        t.H = H / H[2, 2]
        if model != "translation":
            t.shape_H = t.H.copy()
        if t.kept_sight >= cfg.min_kept:
            # a fit on a good share of the points in sight: where the object is; its
            # velocity only from fits over (nearly) all of it (the visible strip of an
            # object going behind another fixes its motion poorly)
            self._moved(t, stamp, velocity=t.hidden <= 0.2)

    @staticmethod
    def _moved(t: _Track, stamp: float, velocity: bool = True) -> None:
        """The object's velocity (its anchor centre through the fits, pixels per second,
        smoothed), for coasting once the points are lost; ``good_H`` at ``good_stamp`` is
        the last fit made while the track was good."""
        dt = stamp - t.good_stamp
        if velocity and dt > 1e-6:
            c = t.centre.reshape(1, 1, 2)
            now = cv2.perspectiveTransform(c, t.H)[0, 0]
            before = cv2.perspectiveTransform(c, t.good_H)[0, 0]
            v = (now - before) / dt
            t.velocity = v if not t.velocity.any() else 0.5 * (t.velocity + v)
        t.good_H, t.good_stamp = t.H.copy(), stamp

    def _reacquire(self, t: _Track, gray: np.ndarray, stamp: float) -> None:
        """A lost track moves on at its last velocity (for ``coast`` s) and looks for its
        object there: its starting corners, from the anchor frame straight to this one (the
        prediction as the first guess); enough of them agreeing on one fit (RANSAC,
        forward-backward checked) and the track is followed again."""
        cfg = self.config
        dt = stamp - t.good_stamp
        if dt > cfg.coast:
            t.coasting = False
            if t.occluded_by is not None:
                t.lost = (f"occluded by object {t.occluded_by} for over {cfg.coast:g} s and not seen coming out: "
                          "lost")
            return
        shift = np.eye(3)
        shift[:2, 2] = t.velocity * dt
        predicted = shift @ t.good_H
        t.H = predicted
        anchor = t.anchor_pts[: t.n_start].reshape(-1, 1, 2).astype(np.float32)
        guess = cv2.perspectiveTransform(anchor.astype(np.float64), predicted).astype(np.float32)
        # only the corners that should be in sight: in the image, not under a tracked
        # object's mask (one behind it would match the one in front's texture)
        seen = self._in_sight(t, guess.reshape(-1, 2))
        need = max(cfg.min_points, int(np.ceil(cfg.reacquire * int(seen.sum()))))
        if seen.sum() < need:
            return self._out_again(t, gray, stamp, predicted)
        idx_seen = np.flatnonzero(seen)
        anchor, guess = anchor[idx_seen], guess[idx_seen]
        lk = dict(winSize=(cfg.window, cfg.window), maxLevel=cfg.levels, flags=cv2.OPTFLOW_USE_INITIAL_FLOW,
                  criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03))
        p1, st1, _ = cv2.calcOpticalFlowPyrLK(t.anchor_gray, gray, anchor, guess.copy(), **lk)
        back, st2, _ = cv2.calcOpticalFlowPyrLK(gray, t.anchor_gray, p1, anchor.copy(), **lk)
        ok = (st1.ravel() == 1) & (st2.ravel() == 1) & \
            (np.linalg.norm((back - anchor).reshape(-1, 2), axis=1) <= cfg.fb_max)
        if ok.sum() < need:
            return self._out_again(t, gray, stamp, predicted)
        # its shape as last followed, moved to where the corners are (a part of it coming
        # out from behind another object fixes no more than that)
        a, c = anchor.reshape(-1, 2)[ok], p1.reshape(-1, 2)[ok]
        H, inl = _translate(predicted, a, c, cfg.ransac)
        if H is None or int(inl.sum()) < need:
            return self._out_again(t, gray, stamp, predicted)
        p_all = cv2.perspectiveTransform(t.anchor_pts[: t.n_start].reshape(1, -1, 2).astype(np.float64),
                                         H)[0].astype(np.float32)
        p_all[idx_seen[ok]] = c
        p1 = p_all
        idx = idx_seen[np.flatnonzero(ok)[inl.ravel().astype(bool)]]
        t.anchor_pts = t.anchor_pts[: t.n_start].copy()
        t.current = p1.reshape(-1, 2).copy()
        t.alive = np.zeros(t.n_start, bool)
        t.alive[idx] = True
        t.misses = np.zeros(t.n_start, np.int32)
        t.dead = np.zeros((0, 2), np.float32)
        t.dead_at = np.zeros(0)
        t.dead_idx = np.zeros(0, np.int64)
        t.H = H
        t.shape_H = H.copy()
        t.lost, t.coasting, t.occluded_by, t.out_since = "", False, None, None
        t.good_H, t.good_stamp = t.H.copy(), stamp

    def _out_again(self, t: _Track, gray: np.ndarray, stamp: float, predicted: np.ndarray) -> None:
        """A track predicted behind another object whose starting corners are not found
        again although the whole of it is predicted in sight (and in the image) again:
        the object may look different from its anchor frame by now (a long way from where
        it was); the track starts over from its prediction, anchored on this frame (new
        corners inside the predicted mask; the object's points win the step-motion check
        over any of the background's), so that it follows the object from here on."""
        cfg = self.config
        if t.occluded_by is None or t.hidden > 0.05 or t.box is None:
            t.out_since = None
            return
        if t.out_since is None:
            t.out_since = stamp
        if stamp - t.out_since < cfg.reanchor - 1e-6:
            return  # its corners may still be found (a better fit than the prediction)
        h, w = self._shape
        corners = cv2.perspectiveTransform(np.float64([[[t.box[0], t.box[1]], [t.box[2], t.box[1]],
                                                        [t.box[2], t.box[3]], [t.box[0], t.box[3]]]]), predicted)[0]
        if corners[:, 0].min() < 0 or corners[:, 1].min() < 0 or corners[:, 0].max() > w or corners[:, 1].max() > h:
            return
        mask = warp_mask(t.mask, predicted, (h, w))
        pts = self._corners(gray, mask)
        if len(pts) < cfg.min_points:
            return
        targets = _move_points(t.target_points, predicted, (h, w))[0] if len(t.target_points) else t.target_points
        velocity = t.velocity.copy()
        fresh = _Track(t.key, mask, np.asarray(targets, np.float32), stamp, pts)
        for name in ("mask", "box", "area", "target_points", "n_start", "anchor_pts", "current", "alive", "misses",
                     "dead", "dead_at", "dead_idx", "revivable", "centre"):
            setattr(t, name, getattr(fresh, name))
        t.anchor_gray = gray
        t.H, t.shape_H, t.good_H, t.good_stamp = np.eye(3), np.eye(3), np.eye(3), stamp
        t.velocity = velocity
        t.lost, t.coasting, t.occluded_by, t.out_since = "", False, None, None

    def _revive(self, tracks: List[_Track], gray: np.ndarray) -> None:
        """A followed track whose starting corners were lost but should be in sight again
        (an object coming out from behind another, found again by a few of its corners)
        looks for them: from the anchor frame straight to this one, where the fit puts
        them as the first guess; those found there (forward-backward checked, within the
        fit's RANSAC threshold of where it puts them) are followed again."""
        cfg = self.config
        for t in tracks:
            if t.lost or t.empty or t.anchor_gray is None or not t.steps or len(t.revivable) < 2 \
                    or t.kept_sight >= 0.9:
                continue
            idx = t.revivable
            anchor = t.anchor_pts[idx].reshape(-1, 1, 2).astype(np.float32)
            guess = cv2.perspectiveTransform(anchor.astype(np.float64), t.H).astype(np.float32)
            lk = dict(winSize=(cfg.window, cfg.window), maxLevel=cfg.levels, flags=cv2.OPTFLOW_USE_INITIAL_FLOW,
                      criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03))
            p1, st1, _ = cv2.calcOpticalFlowPyrLK(t.anchor_gray, gray, anchor, guess.copy(), **lk)
            back, st2, _ = cv2.calcOpticalFlowPyrLK(gray, t.anchor_gray, p1, anchor.copy(), **lk)
            ok = (st1.ravel() == 1) & (st2.ravel() == 1) & \
                (np.linalg.norm((back - anchor).reshape(-1, 2), axis=1) <= cfg.fb_max) & \
                (np.linalg.norm((p1 - guess).reshape(-1, 2), axis=1) <= cfg.ransac)
            if not ok.any():
                continue
            back_to = idx[ok]
            t.current[back_to] = p1.reshape(-1, 2)[ok]
            t.alive[back_to] = True
            t.misses[back_to] = 0
            keep = ~np.isin(t.dead_idx, back_to)
            t.dead, t.dead_at, t.dead_idx = t.dead[keep], t.dead_at[keep], t.dead_idx[keep]
            t.result = self._result(t, t.stamp)  # with the points found again
            t.revivable = np.zeros(0, np.int64)

    def _in_sight(self, t: _Track, points: np.ndarray) -> np.ndarray:
        """Which of ``points`` (on the newest frame) are inside the image and not under
        (within half a tracking window of) another tracked object's mask as last seen."""
        h, w = self._shape
        q = np.round(points).astype(int)
        ok = (q[:, 0] >= 0) & (q[:, 0] < w) & (q[:, 1] >= 0) & (q[:, 1] < h)
        cover = None
        for o in self._tracks.values():
            if o is t or o.full is None or o.lost:
                continue
            cover = o.full.copy() if cover is None else (cover | o.full)
        if cover is not None and cover.any():
            r = self.config.window // 2
            cover = cv2.dilate(cover.astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)) > 0
            ok[ok] = ~cover[q[ok, 1], q[ok, 0]]
        return ok

    def _ill_conditioned(self, t: _Track, anchor_alive: np.ndarray) -> bool:
        """The live points span much less of the object than the starting ones did in some
        direction (e.g. only a strip of it is left beside an occluder)."""
        if len(anchor_alive) < 6:
            return True
        start = np.cov(t.anchor_pts[: t.n_start].T) if t.n_start >= 3 else None
        if start is None:
            return True
        now = np.cov(anchor_alive.T)
        lo_start = np.linalg.eigvalsh(start)[0]
        return np.linalg.eigvalsh(now)[0] < self.config.min_spread ** 2 * max(lo_start, 1e-9)

    def _replenish(self, tracks: List[_Track], gray: np.ndarray) -> None:
        """Tracks below ``replenish`` of their starting points take new corners on this
        frame, inside their visible part, away from every other object's mask and within
        what their live points still span (so not on an occluder), at most half as many as
        they still have (a newcomer minority that moves otherwise is dropped as off the
        motion); anchor places through the fit."""
        cfg = self.config
        if cfg.replenish <= 0:
            return
        k = 2 * cfg.window + 1  # keep a window's width off other objects
        near_others = None
        for t in tracks:
            n_alive = int(t.alive.sum())
            if t.lost or t.empty or not t.steps or n_alive >= cfg.replenish * t.n_start:
                continue
            if len(t.dead_at) and t.dead_at.max() >= t.stamp - cfg.quiet:
                continue  # still losing points (something may be sliding over it): wait
            if near_others is None:
                near_others = {}
                for o in tracks:
                    if o.full is not None and o.full.any():
                        near_others[id(o)] = cv2.dilate(o.full.astype(np.uint8), np.ones((k, k), np.uint8)) > 0
            region = t.visible_mask.copy()
            for o in tracks:
                if o is not t and id(o) in near_others:
                    region &= ~near_others[id(o)]
            # ... and only within what its live points span (their hull): a part of the mask
            # none of them covers any more may be hidden by something no track knows of,
            # whose corners must not join the object's
            hull = np.zeros(region.shape, np.uint8)
            live = np.round(t.current[t.alive]).astype(np.int32)
            cv2.fillConvexPoly(hull, cv2.convexHull(live.reshape(-1, 1, 2)), 1)
            region &= hull > 0
            limit = min(t.n_start - n_alive, n_alive // 2)
            if limit < 1:
                continue
            new = self._corners(gray, region, avoid=t.current[t.alive], limit=limit)
            if not len(new):
                continue
            try:
                Hinv = np.linalg.inv(t.H)
            except np.linalg.LinAlgError:
                continue
            anchor = cv2.perspectiveTransform(new.reshape(1, -1, 2).astype(np.float64), Hinv)[0].astype(np.float32)
            t.anchor_pts = np.concatenate([t.anchor_pts, anchor])
            t.current = np.concatenate([t.current, new])
            t.alive = np.concatenate([t.alive, np.ones(len(new), bool)])
            t.misses = np.concatenate([t.misses, np.zeros(len(new), np.int32)])

    # ------------------------------------------------------------------ results
    def _finish(self, stamp: float, tracks: Optional[List[_Track]] = None) -> Dict[Hashable, Propagated]:
        """Masks of the tracks on frame ``stamp``, overlaps given to the object in front,
        and each track's :class:`Propagated`."""
        h, w = self._shape
        if tracks is None:
            tracks = [t for t in self._tracks.values() if t.stamp == stamp and t.pending is None]
        for t in tracks:
            t.full = warp_mask(t.mask, t.H, (h, w)) if t.steps else t.mask.copy()
            t.visible_mask = t.full
            t.cover = {}
        self._occlusions(tracks)
        for t in tracks:
            area = float(t.full.sum())
            t.hidden = 1.0 - float(t.visible_mask.sum()) / area if area else 0.0
            if t.lost_new:  # lost its points on this frame: behind a tracked object, or lost
                t.lost_new = False
                if t.coasting and t.cover and t.hidden >= self.config.occluded:
                    t.occluded_by = max(t.cover, key=t.cover.get)
            elif (not t.lost and not t.empty and t.steps and t.cover and t.hidden >= self.config.behind
                  and self.config.coast > 0 and t.anchor_gray is not None):
                # still followed by a few points beside the edge of a tracked object in
                # front, most of it under that object: predicted behind it from here on
                t.lost = f"{t.hidden:.0%} of its mask under tracked objects in front"
                t.coasting = True
                t.occluded_by = max(t.cover, key=t.cover.get)
            t.result = self._result(t, stamp)
        return {t.key: t.result for t in tracks}

    def _occlusions(self, tracks: List[_Track]) -> None:
        boxes = {id(t): _bbox(t.full) for t in tracks}
        for i, a in enumerate(tracks):
            for b in tracks[i + 1:]:
                ba, bb = boxes[id(a)], boxes[id(b)]
                if ba is None or bb is None or ba[0] >= bb[2] or bb[0] >= ba[2] or ba[1] >= bb[3] or bb[1] >= ba[3]:
                    continue
                overlap = a.full & b.full
                if not overlap.any():
                    continue
                front_a = self._evidence(a, b, overlap)
                if front_a > 0:
                    b.visible_mask = b.visible_mask & ~overlap
                    b.cover[a.key] = b.cover.get(a.key, 0) + int(overlap.sum())
                elif front_a < 0:
                    a.visible_mask = a.visible_mask & ~overlap
                    a.cover[b.key] = a.cover.get(b.key, 0) + int(overlap.sum())

    def _evidence(self, a: _Track, b: _Track, overlap: np.ndarray) -> int:
        """> 0 when ``a`` is in front of ``b`` over ``overlap``, < 0 when behind, 0 unknown:
        a track still followed there (or with points there at all when the other has
        lost its way) against one whose points there were lost."""
        if a.lost and not b.lost:
            return -1
        if b.lost and not a.lost:
            return 1
        if a.lost and b.lost:
            return 0

        def count(points: np.ndarray) -> int:
            if not len(points):
                return 0
            h, w = overlap.shape
            q = np.round(points).astype(int)
            ok = (q[:, 0] >= 0) & (q[:, 0] < w) & (q[:, 1] >= 0) & (q[:, 1] < h)
            q = q[ok]
            return int(overlap[q[:, 1], q[:, 0]].sum())

        def lost_points(t: _Track) -> np.ndarray:
            if not len(t.dead):
                return t.dead
            return cv2.perspectiveTransform(t.dead.reshape(1, -1, 2).astype(np.float64), t.H)[0]

        score = (count(a.current[a.alive]) + count(lost_points(b))) - (count(b.current[b.alive]) + count(lost_points(a)))
        margin = 2
        return 1 if score >= margin else (-1 if score <= -margin else 0)

    def _result(self, t: _Track, stamp: float) -> Propagated:
        cfg = self.config
        h, w = self._shape
        H = t.H
        occluded = t.coasting and t.occluded_by is not None
        reason = "" if occluded else t.lost
        hidden = t.hidden
        if t.empty:
            kept = 1.0
        elif occluded:
            kept = 0.0  # a prediction: no point of it is followed
        else:
            kept = self._kept(t)
        t.kept_sight = kept
        if not reason and not occluded and kept < cfg.min_kept:
            reason = (f"too few points kept ({kept:.0%} of the points that should be in sight, need "
                      f"{cfg.min_kept:.0%}): occluded or lost")
        if not reason and t.box is not None and t.steps:
            ratio = _warped_area(t.area, t.box, H) / max(t.area, 1.0)
            if np.linalg.det(H[:2, :2]) <= 0 or not (1 / cfg.max_scale_change <= ratio <= cfg.max_scale_change):
                reason = f"degenerate fit: the mask's area would change by x{ratio:.2f}"
        if not reason and t.area > 0 and t.steps:
            inside = float(t.full.sum()) / max(1.0, _warped_area(t.area, t.box, H))
            if inside < cfg.min_in_image:
                reason = f"the mask left the image ({inside:.0%} of it inside)"
        age = stamp - t.anchor_stamp
        if not reason and cfg.max_age is not None and age > cfg.max_age:
            reason = f"age {age:.2f} s since the cross-view result is over the deadline {cfg.max_age:.2f} s"
        pts, visible = _move_points(t.target_points, H, (h, w))
        if hidden > 0 and len(pts):  # points under a tracked object in front are not visible
            q = np.round(pts).astype(int)
            visible &= ~(t.full & ~t.visible_mask)[q[:, 1], q[:, 0]]
        return Propagated(key=t.key, mask=t.visible_mask, points=pts, visible=visible, kept=kept, age=age,
                          steps=t.steps, stamp=stamp, anchor_stamp=t.anchor_stamp, good=not reason, reason=reason,
                          transform=H.copy(), hidden=hidden, occluded_by=t.occluded_by if occluded else None,
                          full=int(t.full.sum()) if t.full is not None else int(t.visible_mask.sum()))

    def _kept(self, t: _Track) -> float:
        """Of the track's points that should be in sight now (inside the image, not under
        a tracked object in front of it, nor within half a tracking window of one: a point
        that close loses its window to the occluder's edge), the fraction still followed."""
        if not len(t.anchor_pts):
            return 0.0
        h, w = self._shape
        pts = cv2.perspectiveTransform(t.anchor_pts.reshape(1, -1, 2).astype(np.float64), t.H)[0]
        q = np.round(pts).astype(int)
        sight = (q[:, 0] >= 0) & (q[:, 0] < w) & (q[:, 1] >= 0) & (q[:, 1] < h)
        if t.cover:
            box = _bbox(t.full & ~t.visible_mask)
            if box is not None:
                r = self.config.window // 2
                x0, y0, x1, y1 = max(box[0] - r, 0), max(box[1] - r, 0), min(box[2] + r, w), min(box[3] + r, h)
                part = (t.full & ~t.visible_mask)[y0:y1, x0:x1].astype(np.uint8)
                zone = cv2.dilate(part, np.ones((2 * r + 1, 2 * r + 1), np.uint8)) > 0
                inz = sight & (q[:, 0] >= x0) & (q[:, 0] < x1) & (q[:, 1] >= y0) & (q[:, 1] < y1)
                hid = np.zeros(len(q), bool)
                hid[inz] = zone[q[inz, 1] - y0, q[inz, 0] - x0]
                sight &= ~hid
        expected = int((t.alive | sight).sum())
        t.revivable = np.flatnonzero(sight[: t.n_start] & ~t.alive[: t.n_start])
        return min(1.0, float(t.alive.sum()) / max(1, expected))


def _bury(t: _Track, idx: np.ndarray, stamp: float) -> None:
    """Points ``idx`` of track ``t`` were lost inside the image at ``stamp``."""
    t.dead = np.concatenate([t.dead, t.anchor_pts[idx]])
    t.dead_at = np.concatenate([t.dead_at, np.full(len(idx), stamp)])
    t.dead_idx = np.concatenate([t.dead_idx, np.asarray(idx, np.int64)])


def _translate(H0: np.ndarray, anchor: np.ndarray, now: np.ndarray, threshold: float):
    """``T @ H0`` with T the translation that best moves ``H0``'s image of the ``anchor``
    points onto ``now`` (their median displacement, then the mean over the points within
    ``threshold`` of it); (None, None) when fewer than 3 points agree."""
    base = cv2.perspectiveTransform(anchor.reshape(1, -1, 2).astype(np.float64), H0)[0]
    d = now.astype(np.float64) - base
    shift = np.median(d, axis=0)
    inl = np.linalg.norm(d - shift, axis=1) <= threshold
    if inl.sum() < 3:
        return None, None
    shift = d[inl].mean(0)
    T = np.eye(3)
    T[:2, 2] = shift
    return T @ H0, inl.astype(np.uint8).reshape(-1, 1)


def _move_points(points: np.ndarray, H: np.ndarray, shape: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """Points through H, clipped to the image; ``visible`` says which were inside."""
    h, w = shape
    if not len(points):
        return np.zeros((0, 2), np.float32), np.zeros(0, bool)
    pts = cv2.perspectiveTransform(points.reshape(1, -1, 2).astype(np.float64), H)[0]
    visible = (pts[:, 0] >= 0) & (pts[:, 0] <= w - 1) & (pts[:, 1] >= 0) & (pts[:, 1] <= h - 1)
    pts = np.stack([np.clip(pts[:, 0], 0, w - 1), np.clip(pts[:, 1], 0, h - 1)], 1).astype(np.float32)
    return pts, visible


# ----------------------------------------------------------------------------- dense alternative
class _DenseTrack:
    def __init__(self, key: Hashable, mask: np.ndarray, points: np.ndarray, stamp: float) -> None:
        self.key = key
        self.soft = mask.astype(np.float32)  # the mask on its last frame, soft (pulled through the flow)
        self.area = float(mask.sum())
        self.points = points.astype(np.float32)  # the target points on its last frame
        self.anchor_stamp = stamp
        self.stamp = stamp
        self.steps = 0
        self.pending: Optional[np.ndarray] = None
        self.result: Optional[Propagated] = None


class DenseCameraPropagator(_TrackTable):
    """The measured alternative to :class:`CameraPropagator` (same API): DIS dense optical
    flow between consecutive frames at ``dense_scale`` of the frame size, computed once
    per frame for all objects of the camera; each object's mask is pulled through the
    backward flow (kept soft, thresholded at 0.5 for output), its points pushed through it
    (the backward flow inverted by fixed-point iteration). It has no notion of points
    kept or of occlusion: ``kept`` is the mask's area now over its area at the anchor
    (capped at 1), and a mask is not good when it shrank below ``min_kept`` of it, left
    the image or passed the deadline."""

    def __init__(self, config: Optional[PropagationConfig] = None) -> None:
        self.config = config or PropagationConfig(method="dense")
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        self._tracks: Dict[Hashable, _DenseTrack] = {}
        self._small: Optional[np.ndarray] = None
        self._stamp: Optional[float] = None
        self._shape: Optional[Tuple[int, int]] = None

    def _downscale(self, gray: np.ndarray) -> np.ndarray:
        s = self.config.dense_scale
        if s >= 1.0:
            return gray
        h, w = gray.shape
        return cv2.resize(gray, (max(8, int(round(w * s))), max(8, int(round(h * s)))), interpolation=cv2.INTER_AREA)

    def _flow(self, src_small: np.ndarray, dst_small: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Full-resolution maps for cv2.remap: where each pixel of ``dst`` was in ``src``."""
        back = self._dis.calc(dst_small, src_small, None)
        h, w = self._shape
        sx, sy = w / back.shape[1], h / back.shape[0]
        back = cv2.resize(back, (w, h), interpolation=cv2.INTER_LINEAR)
        xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        return xs + back[..., 0] * np.float32(sx), ys + back[..., 1] * np.float32(sy)

    def update(self, image: np.ndarray, stamp: float) -> Dict[Hashable, Propagated]:
        gray = _gray(image)
        if self._shape is not None and gray.shape != self._shape:
            raise ValueError(f"the frame is {gray.shape[1]}x{gray.shape[0]} but this camera's frames are "
                             f"{self._shape[1]}x{self._shape[0]}")
        stamp = float(stamp)
        if self._stamp is not None and stamp < self._stamp:
            raise ValueError(f"frame stamp {stamp} is older than the previous frame's {self._stamp}")
        small = self._downscale(gray)
        prev = self._small
        self._small, self._stamp, self._shape = small, stamp, gray.shape
        maps = None
        out = {}
        for t in self._tracks.values():
            if t.pending is not None:
                if t.anchor_stamp > stamp:
                    continue
                src, t.pending = t.pending, None
                if t.anchor_stamp < stamp:
                    self._move(t, self._flow(src, small))
            elif prev is not None and t.stamp < stamp:
                if maps is None:
                    maps = self._flow(prev, small)
                self._move(t, maps)
            t.stamp = stamp
            t.result = self._result(t)
            out[t.key] = t.result
        return out

    def start(self, key: Hashable, image: np.ndarray, stamp: float, mask: np.ndarray,
              points: Optional[np.ndarray] = None) -> Propagated:
        gray = _gray(image)
        m = np.asarray(mask)
        if m.ndim != 2 or m.shape != gray.shape:
            raise ValueError(f"mask {m.shape} does not match its frame {gray.shape}")
        if self._shape is None:
            self._shape = gray.shape
        elif gray.shape != self._shape:
            raise ValueError(f"the cross-view frame is {gray.shape[1]}x{gray.shape[0]} but this camera's frames "
                             f"are {self._shape[1]}x{self._shape[0]}")
        pts = np.zeros((0, 2), np.float32) if points is None else np.asarray(points, np.float32).reshape(-1, 2)
        t = _DenseTrack(key, m > 0, pts, float(stamp))
        self._tracks[key] = t
        if self._stamp is None or t.anchor_stamp > self._stamp:
            t.pending = self._downscale(gray)
        elif t.anchor_stamp < self._stamp:
            self._move(t, self._flow(self._downscale(gray), self._small))
            t.stamp = self._stamp
        t.result = self._result(t)
        return t.result

    def _move(self, t: _DenseTrack, maps: Tuple[np.ndarray, np.ndarray]) -> None:
        mx, my = maps
        t.soft = cv2.remap(t.soft, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        if len(t.points):  # q with q + back(q) = p, by fixed-point iteration
            h, w = self._shape
            q = t.points.copy()
            for _ in range(5):
                xi = np.clip(np.round(q[:, 0]).astype(int), 0, w - 1)
                yi = np.clip(np.round(q[:, 1]).astype(int), 0, h - 1)
                q = t.points - np.stack([mx[yi, xi] - xi, my[yi, xi] - yi], 1)
            t.points = q.astype(np.float32)
        t.steps += 1

    def _result(self, t: _DenseTrack) -> Propagated:
        cfg = self.config
        h, w = self._shape
        mask = t.soft >= 0.5
        kept = min(1.0, float(mask.sum()) / max(1.0, t.area))
        reason = ""
        if t.area > 0 and kept < cfg.min_kept:
            reason = f"the mask shrank to {kept:.0%} of its area at the cross-view result"
        age = t.stamp - t.anchor_stamp
        if not reason and cfg.max_age is not None and age > cfg.max_age:
            reason = f"age {age:.2f} s since the cross-view result is over the deadline {cfg.max_age:.2f} s"
        pts = t.points
        visible = (pts[:, 0] >= 0) & (pts[:, 0] <= w - 1) & (pts[:, 1] >= 0) & (pts[:, 1] <= h - 1)
        pts = np.stack([np.clip(pts[:, 0], 0, w - 1), np.clip(pts[:, 1], 0, h - 1)], 1).astype(np.float32) \
            if len(pts) else pts
        return Propagated(key=t.key, mask=mask, points=pts, visible=visible, kept=kept, age=age, steps=t.steps,
                          stamp=t.stamp, anchor_stamp=t.anchor_stamp, good=not reason, reason=reason)


def make_propagator(config: Optional[PropagationConfig] = None):
    """A camera's propagator for ``config.method`` (``klt`` by default, or ``dense``)."""
    cfg = config or PropagationConfig()
    return DenseCameraPropagator(cfg) if cfg.method == "dense" else CameraPropagator(cfg)
