"""How accurate objects in 3D are on the bundled scenes (the acceptance measurement of
issue 20), shared by ``bench/bench_objects3d.py``, its test and the demo.

Every camera of a scene gets its exact depth map as its "depth topic" (``32FC1``, through
:func:`vggts_ros.geometry.depth.sensor_depth` as a message would go) or a sensor-like
copy (``16UC1`` millimetres with noise, flying pixels at depth edges and dropouts), its
intrinsics from ``K`` and its true pose in the source camera's frame. Masks: the source
camera's exact mask (the operator's) and, in each target, the mask a backend predicted.

* Centroid, per (object, target camera): the estimate against the centroid of the
  object's visible surface (the exact depth under the exact mask of that view,
  unprojected), as a fraction of that centroid's distance.
* Fused box, per object (scenes whose objects are boxes): size error (per true axis,
  |estimate - truth| / truth, the worst of three) and centre error as a fraction of the
  distance of the true centre, both in the source camera's frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from .boxes import compare_boxes
from .depth import Intrinsics, sensor_depth
from .objects3d import CameraGeometry, Object3DConfig, SetObjects3D, objects_in_3d

#: The acceptance thresholds (issue 20).
THRESHOLDS = {"centroid_median": 0.01, "centroid_p95": 0.03, "box_size": 0.20, "box_centre": 0.05}
DEPTH_MODES = ("exact", "sensor")


@dataclass
class CentroidError:
    scene: str
    object_id: int
    camera: str
    distance: float  # m, of the true visible-surface centroid
    error: float  # m (inf without an estimate)
    points: int
    iou: float  # of the mask used against the exact mask
    reason: str = ""

    @property
    def relative(self) -> float:
        return self.error / self.distance


@dataclass
class BoxError:
    scene: str
    object_id: int
    size_error: float  # worst of the three axes, fraction of the true size
    centre_error: float  # m
    distance: float  # m, of the true centre from the reference camera
    angle_deg: float
    size: np.ndarray
    true_size: np.ndarray
    cameras: Sequence[str] = ()
    reason: str = ""

    @property
    def relative_centre(self) -> float:
        return self.centre_error / self.distance


@dataclass
class SceneAccuracy:
    scene: str
    centroids: List[CentroidError] = field(default_factory=list)
    boxes: List[BoxError] = field(default_factory=list)
    result: Optional[SetObjects3D] = None


def sensor_like_depth(depth: np.ndarray, rng: np.random.Generator, noise: float = 0.001,
                      dropout: float = 0.02, edge_jump: float = 0.05) -> np.ndarray:
    """A ``16UC1`` (mm) reading of an exact depth map as a stereo/ToF sensor gives it:
    Gaussian noise of ``noise * z^2`` metres (stereo-like, 1.6 cm at 4 m for 0.001),
    pixels next to a depth jump mixed between the two surfaces (flying pixels), a share
    ``dropout`` of pixels without a reading (0), rounded to millimetres."""
    z = np.asarray(depth, np.float64)
    valid = np.isfinite(z)
    zf = np.where(valid, z, 0.0)
    right = np.roll(zf, -1, axis=1)
    down = np.roll(zf, -1, axis=0)
    jr = np.abs(zf - right) > edge_jump * np.minimum(zf, right)
    jd = np.abs(zf - down) > edge_jump * np.minimum(zf, down)
    other = np.where(jr, right, down)
    t = rng.uniform(0.0, 1.0, z.shape)
    z = np.where(valid & (jr | jd), (1 - t) * zf + t * other, z)
    z = z + rng.normal(0.0, 1.0, z.shape) * noise * z * z
    z[rng.uniform(0.0, 1.0, z.shape) < dropout] = np.nan
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(z) & (z > 0) & (z < 65.5)
    return np.where(ok, np.round(np.where(ok, z, 0.0) * 1000.0), 0).astype(np.uint16)


def scene_geometry(scene, masks: Mapping[str, Mapping[int, np.ndarray]], *, depth: str = "exact",
                   seed: int = 0) -> List[CameraGeometry]:
    """The scene's cameras as :func:`objects_in_3d` takes them: ``masks[camera][object]``
    (cameras or objects left out get the scene's exact mask), depth per ``depth``
    (``exact`` or ``sensor``), intrinsics from K, poses in the source camera's frame."""
    if depth not in DEPTH_MODES:
        raise ValueError(f"depth must be one of {DEPTH_MODES}, got {depth!r}")
    T_ref_from_world = scene.cameras[scene.source].T_cam_from_world
    rng = np.random.default_rng(seed)
    out = []
    for name in scene.views:  # the source first: the reference frame
        cam = scene.cameras[name]
        given = masks.get(name, {})
        cam_masks = {oid: np.asarray(given[oid]) > 0 if oid in given else scene.mask(name, oid)
                     for oid in scene.object_ids}
        if depth == "exact":
            d = sensor_depth(scene.depth(name).astype(np.float32), "32FC1", cam.size)
        else:
            d = sensor_depth(sensor_like_depth(scene.depth(name), rng), "16UC1", cam.size)
        out.append(CameraGeometry(name, cam_masks, d, Intrinsics.from_K(cam.K, cam.size),
                                  T_ref_from_world @ cam.T_world_from_cam))
    return out


def predicted_masks(scene, segmentor) -> Dict[str, Dict[int, np.ndarray]]:
    """The masks ``segmentor`` finds in every target from the source's exact mask."""
    out: Dict[str, Dict[int, np.ndarray]] = {name: {} for name in scene.targets}
    for oid in scene.object_ids:
        results = segmentor.segment(scene.image(scene.source), scene.mask(scene.source, oid), scene.target_views())
        for name, res in zip(scene.targets, results):
            out[name][oid] = np.asarray(res.mask) > 0
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def score_scene(scene, masks: Mapping[str, Mapping[int, np.ndarray]], *, depth: str = "exact",
                config: Optional[Object3DConfig] = None, up=None, seed: int = 0) -> SceneAccuracy:
    """Objects in 3D for ``scene`` with ``masks`` (see :func:`scene_geometry`), scored."""
    cams = scene_geometry(scene, masks, depth=depth, seed=seed)
    result = objects_in_3d(cams, config=config, up=up)
    acc = SceneAccuracy(scene.name, result=result)
    by_name = {c.name: c for c in cams}
    for name in scene.targets:
        for oid in scene.object_ids:
            truth = scene.surface_points(name, oid).mean(0)
            est = result.cameras[name].get(oid)
            err = float(np.linalg.norm(est.centroid - truth)) if est.ok else float("inf")
            acc.centroids.append(CentroidError(scene.name, oid, name, float(np.linalg.norm(truth)), err, est.points,
                                               _iou(by_name[name].masks[oid], scene.mask(name, oid)), est.reason))
    if scene.boxes and result.fused is not None:
        for oid in scene.object_ids:
            truth = scene.box(oid, scene.source)
            est = result.fused.get(oid)
            dist = float(np.linalg.norm(truth.center))
            if not est.ok:
                acc.boxes.append(BoxError(scene.name, oid, float("inf"), float("inf"), dist, float("nan"),
                                          np.zeros(3), truth.size, est.cameras, est.reason))
                continue
            c = compare_boxes(est.box, truth)
            acc.boxes.append(BoxError(scene.name, oid, c["size_error"], c["center_error"], dist, c["angle_deg"],
                                      c["matched_size"], truth.size, est.cameras))
    return acc


def summarize(results: Sequence[SceneAccuracy]) -> Dict[str, float]:
    """Centroid error median / 95th percentile / max (fractions of the distance) over all
    (object, target) pairs; worst fused box size and centre errors; counts."""
    rel = np.array([c.relative for r in results for c in r.centroids])
    size = np.array([b.size_error for r in results for b in r.boxes])
    centre = np.array([b.relative_centre for r in results for b in r.boxes])
    return {
        "pairs": int(len(rel)),
        "centroid_median": float(np.median(rel)) if len(rel) else float("nan"),
        "centroid_p95": float(np.percentile(rel, 95)) if len(rel) else float("nan"),
        "centroid_max": float(rel.max()) if len(rel) else float("nan"),
        "boxes": int(len(size)),
        "box_size": float(size.max()) if len(size) else float("nan"),
        "box_size_median": float(np.median(size)) if len(size) else float("nan"),
        "box_centre": float(centre.max()) if len(centre) else float("nan"),
    }


def passes(summary: Mapping[str, float]) -> Dict[str, bool]:
    """Each acceptance threshold: met or not."""
    return {k: bool(summary[k] <= v) for k, v in THRESHOLDS.items()}


def table(results: Sequence[SceneAccuracy]) -> str:
    """Markdown table, one row per (scene, object): each target's centroid error and the
    fused box's size and centre errors."""
    rows = ["| scene | object | target: IoU, centroid error (% of distance) | fused box size error | "
            "fused box centre error | size (m) est. / true |", "|---|---|---|---|---|---|"]
    for r in results:
        ids = sorted({c.object_id for c in r.centroids})
        boxes = {b.object_id: b for b in r.boxes}
        for oid in ids:
            cells = ", ".join(f"{c.camera}: {c.iou:.2f}, {100 * c.relative:.2f}" for c in r.centroids
                              if c.object_id == oid)
            b = boxes.get(oid)
            if b is None:
                rows.append(f"| {r.scene} | {oid} | {cells} | n/a (no true box) | n/a | |")
            else:
                sz = "/".join(f"{v:.3f}" for v in b.size) + " / " + "/".join(f"{v:.3f}" for v in b.true_size)
                rows.append(f"| {r.scene} | {oid} | {cells} | {100 * b.size_error:.1f} % | "
                            f"{100 * b.relative_centre:.2f} % | {sz} |")
    return "\n".join(rows)
