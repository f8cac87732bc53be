"""Bundled multi-camera scenes with exact ground-truth masks (no downloads).

* :func:`synthetic_scene` renders textured boxes standing on a textured floor, seen by
  one close, tilted **ego** camera and several far **exo** cameras (pinhole cameras;
  the floor by ray casting, every box face by the homography of its plane). The object
  masks come from the same rendering (the id of the face that wrote each pixel), so
  they are exact for the images.
* :func:`motorcycle_scene` is a real pair: the Middlebury 2014 *Motorcycle* stereo pair
  with its ground-truth disparity, shipped inside scikit-image's wheel
  (``skimage.data.stereo_motorcycle``, no network). The object is the motorcycle,
  segmented from the disparity map (see the function), and its right-view mask is the
  left mask warped by the disparity with a z-buffer for occlusions.
* Hard cases for the weight-free backend: :func:`tall_scene` (tall boxes, exo cameras at
  wide baselines) and :func:`textureless_scene` (a flat-coloured box);
  :func:`load_scene` builds any of them from a short name (``tall:0``).

Geometry ground truth: every view has an exact depth map (``Scene.depth``: z along the
camera's optical axis in metres, NaN where nothing is seen; the floor too), every camera
its pinhole model (``Scene.cameras``, optical frame x right, y down, z forward) and every
synthetic box its true pose and size (``Scene.box``, in the world or in a camera's
optical frame). The synthetic depth is the ray-plane intersection of each pixel centre
with the surface that painted it; the motorcycle's is Middlebury's ground-truth
disparity through the calibration (left view), forward-warped with a z-buffer into the
right view like its mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .geometry.boxes import OrientedBox
from .types import TargetView


@dataclass
class Camera:
    """Pinhole camera: ``x ~ K (R X + t)``; ``size`` is (width, height)."""

    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    size: Tuple[int, int]

    @property
    def center(self) -> np.ndarray:
        return -self.R.T @ self.t

    def project(self, pts: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """World points Nx3 -> (pixels Nx2, depths N)."""
        cam = pts @ self.R.T + self.t
        uv = cam @ self.K.T
        return uv[:, :2] / uv[:, 2:3], cam[:, 2]

    @property
    def T_cam_from_world(self) -> np.ndarray:
        """4x4 world -> this camera's optical frame (x right, y down, z forward)."""
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = self.R, self.t
        return T

    @property
    def T_world_from_cam(self) -> np.ndarray:
        """4x4 pose of the camera in the world (optical frame -> world)."""
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = self.R.T, self.center
        return T


@dataclass
class Scene:
    """A set of views of one moment, with per-view object masks.

    ``views[name] = (RGB uint8 image, role)``; ``masks[name][object_id] = HxW bool``;
    ``source`` is the camera the object is marked in. ``depths[name]`` = HxW float64
    depth in metres (z in the optical frame, NaN where nothing), ``boxes[object_id]`` the
    true box in the world (scenes whose objects are boxes).
    """

    name: str
    views: Dict[str, Tuple[np.ndarray, str]]
    masks: Dict[str, Dict[int, np.ndarray]]
    source: str
    cameras: Dict[str, Camera] = field(default_factory=dict)
    meta: Dict = field(default_factory=dict)
    depths: Dict[str, np.ndarray] = field(default_factory=dict)
    boxes: Dict[int, OrientedBox] = field(default_factory=dict)

    @property
    def object_ids(self) -> List[int]:
        return sorted(self.masks[self.source])

    @property
    def targets(self) -> List[str]:
        return [n for n in self.views if n != self.source]

    def image(self, camera: str) -> np.ndarray:
        return self.views[camera][0]

    def role(self, camera: str) -> str:
        return self.views[camera][1]

    def mask(self, camera: str, object_id: int) -> np.ndarray:
        """The object's mask in that view (all False when it is not seen there)."""
        m = self.masks[camera].get(object_id)
        if m is None:
            h, w = self.image(camera).shape[:2]
            return np.zeros((h, w), bool)
        return m

    def target_views(self) -> List[TargetView]:
        return [TargetView(self.image(n), self.role(n), n) for n in self.targets]

    def depth(self, camera: str) -> np.ndarray:
        """Exact depth of that view (HxW float64 metres along the optical axis, NaN: nothing)."""
        if camera not in self.depths:
            raise KeyError(f"scene {self.name!r} has no depth for camera {camera!r}")
        return self.depths[camera]

    def box(self, object_id: int, camera: Optional[str] = None) -> OrientedBox:
        """The object's true box in the world, or in ``camera``'s optical frame."""
        if object_id not in self.boxes:
            raise KeyError(f"scene {self.name!r} has no true box for object {object_id}")
        b = self.boxes[object_id]
        return b if camera is None else b.transformed(self.cameras[camera].T_cam_from_world)

    def surface_points(self, camera: str, object_id: int) -> np.ndarray:
        """The object's visible surface in that view: the exact depth under its exact mask,
        unprojected through the camera (Nx3 float64, the camera's optical frame)."""
        K = self.cameras[camera].K
        mask = self.mask(camera, object_id) & np.isfinite(self.depth(camera))
        v, u = np.nonzero(mask)
        z = self.depth(camera)[v, u]
        return np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], axis=1)


# ----------------------------------------------------------------------------- textures
def random_texture(rng: np.random.Generator, size: Tuple[int, int] = (256, 256), shapes: int = 60,
                   text: int = 12) -> np.ndarray:
    """Sharp multi-scale pattern like printed packaging: rectangles, discs, strokes,
    polygons from large to small, and random letters, on a plain base with mild grain."""
    w, h = size
    img = np.empty((h, w, 3), np.uint8)
    img[:] = rng.integers(40, 215, size=3)
    scale = min(w, h)
    for i in range(shapes):
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        kind = rng.integers(0, 4)
        # a quarter large shapes, the rest small ones drawn on top
        r = int(scale * (rng.uniform(0.08, 0.22) if i < shapes // 4 else rng.uniform(0.015, 0.07)))
        r = max(r, 2)
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        if kind == 0:
            cv2.rectangle(img, (cx - r, cy - r // 2), (cx + r, cy + r // 2), colour, -1)
        elif kind == 1:
            cv2.circle(img, (cx, cy), r, colour, -1, lineType=cv2.LINE_AA)
        elif kind == 2:
            x2, y2 = cx + int(rng.integers(-2 * r, 2 * r + 1)), cy + int(rng.integers(-2 * r, 2 * r + 1))
            cv2.line(img, (cx, cy), (x2, y2), colour, max(2, r // 4), lineType=cv2.LINE_AA)
        else:
            pts = np.stack([cx + rng.integers(-r, r + 1, 5), cy + rng.integers(-r, r + 1, 5)], 1)
            cv2.fillPoly(img, [pts.astype(np.int32)], colour, lineType=cv2.LINE_AA)
    letters = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789#&%@"
    for _ in range(text):
        word = "".join(letters[int(i)] for i in rng.integers(0, len(letters), rng.integers(2, 6)))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        fs = scale * rng.uniform(0.002, 0.006)
        org = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.putText(img, word, org, cv2.FONT_HERSHEY_SIMPLEX, fs, colour, max(1, int(fs * 2.5)), cv2.LINE_AA)
    grain = rng.normal(0.0, 6.0, size=(h // 2 + 1, w // 2 + 1, 3)).astype(np.float32)
    grain = cv2.resize(grain, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(img.astype(np.float32) + grain, 0, 255).astype(np.uint8)


def floor_texture(rng: np.random.Generator, size: int = 1024) -> np.ndarray:
    """Muted floor: tiles with grain and scattered marks (textured, but less busy than objects)."""
    img = np.empty((size, size, 3), np.float32)
    img[:] = rng.integers(90, 160, size=3)
    tile = size // 8
    for i in range(8):
        for j in range(8):
            img[i * tile : (i + 1) * tile, j * tile : (j + 1) * tile] += rng.normal(0, 10, size=3)
    grain = rng.normal(0, 18, size=(size // 8, size // 8, 3)).astype(np.float32)
    img += cv2.resize(grain, (size, size), interpolation=cv2.INTER_CUBIC)
    marks = random_texture(rng, (size, size), shapes=160, text=0).astype(np.float32)
    marks = marks.mean(axis=2, keepdims=True) * 0.7 + marks * 0.3  # mostly grey marks
    img = 0.7 * img + 0.3 * marks
    for k in range(1, 8):
        cv2.line(img, (k * tile, 0), (k * tile, size), (60, 60, 60), 2)
        cv2.line(img, (0, k * tile), (size, k * tile), (60, 60, 60), 2)
    return np.clip(img, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- geometry
def look_at(eye: Sequence[float], target: Sequence[float], fov_deg: float, size: Tuple[int, int]) -> Camera:
    """Camera at ``eye`` looking at ``target`` (world z up), horizontal field of view."""
    eye = np.asarray(eye, float)
    fwd = np.asarray(target, float) - eye
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    R = np.stack([right, down, fwd])
    w, h = size
    f = 0.5 * w / math.tan(math.radians(fov_deg) / 2)
    K = np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]])
    return Camera(K, R, -R @ eye, (w, h))


def orbit_camera(azimuth_deg, elevation_deg, distance, fov_deg, size, target=(0.0, 0.0, 0.0)) -> Camera:
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    eye = np.asarray(target) + distance * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    return look_at(eye, target, fov_deg, size)


@dataclass
class _Face:
    origin: np.ndarray  # world corner of texture pixel (0, 0)
    u: np.ndarray  # world vector along the texture's width
    v: np.ndarray  # world vector along the texture's height
    texture: np.ndarray
    object_id: int
    shade: float

    @property
    def normal(self) -> np.ndarray:
        n = np.cross(self.u, self.v)
        return n / np.linalg.norm(n)

    @property
    def center(self) -> np.ndarray:
        return self.origin + 0.5 * (self.u + self.v)

    def corners(self) -> np.ndarray:
        o, u, v = self.origin, self.u, self.v
        return np.stack([o, o + u, o + u + v, o + v])


def _box_faces(center_xy, size_xyz, yaw, texture, object_id, light) -> List[_Face]:
    """Five outward-facing textured faces of a box standing on z=0 (no bottom)."""
    sx, sy, sz = size_xyz
    c, s = math.cos(yaw), math.sin(yaw)
    ex = np.array([c, s, 0.0])
    ey = np.array([-s, c, 0.0])
    ez = np.array([0.0, 0.0, 1.0])
    base = np.array([center_xy[0], center_xy[1], 0.0]) - 0.5 * sx * ex - 0.5 * sy * ey
    th, tw = texture.shape[:2]
    # Texture atlas: top takes the upper-left block, the sides strips of the rest.
    def crop(x0, y0, x1, y1):
        return np.ascontiguousarray(texture[int(y0 * th) : int(y1 * th), int(x0 * tw) : int(x1 * tw)])

    top_o = base + sz * ez
    # (origin, u, v) with u x v pointing out of the box, so back faces can be culled.
    faces = [
        (top_o, sx * ex, sy * ey, crop(0, 0, 0.6, 0.6)),  # top, +z
        (top_o + sx * ex, -sx * ex, -sz * ez, crop(0, 0.6, 0.6, 0.8)),  # -y side
        (top_o + sy * ey, sx * ex, -sz * ez, crop(0, 0.8, 0.6, 1.0)),  # +y side
        (top_o + sx * ex + sy * ey, -sy * ey, -sz * ez, crop(0.6, 0, 0.8, 0.6)),  # +x side
        (top_o, sy * ey, -sz * ez, crop(0.8, 0, 1.0, 0.6)),  # -x side
    ]
    out = []
    for o, u, v, tex in faces:
        f = _Face(o, u, v, tex, object_id, 1.0)
        f.shade = 0.7 + 0.3 * max(0.0, float(f.normal @ light))
        out.append(f)
    return out


def _render_floor(cam: Camera, floor: np.ndarray, extent: float, sky: np.ndarray,
                  with_depth: bool = False):
    """The floor (z = 0) by ray casting: image, and with ``with_depth`` also its depth
    (the ray parameter of a camera ray with unit z, NaN where a ray misses the floor)."""
    w, h = cam.size
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    rays = np.stack([xs, ys, np.ones_like(xs)], -1) @ np.linalg.inv(cam.K).T @ cam.R  # world dirs
    c = cam.center
    dz = rays[..., 2]
    hit = dz < -1e-9
    s = np.where(hit, -c[2] / np.where(hit, dz, -1.0), 0.0)
    X = c[0] + s * rays[..., 0]
    Y = c[1] + s * rays[..., 1]
    n = floor.shape[0]
    mapx = ((X + extent) / (2 * extent) * n - 0.5).astype(np.float32)
    mapy = ((Y + extent) / (2 * extent) * n - 0.5).astype(np.float32)
    mapx[~hit] = -10
    mapy[~hit] = -10
    plain = tuple(int(v) for v in floor.reshape(-1, 3).mean(0))
    img = cv2.remap(floor, mapx, mapy, cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_CONSTANT, borderValue=plain)
    img[~hit] = sky
    if with_depth:
        return img, np.where(hit, s, np.nan)
    return img


def _face_depth(cam: Camera, face: _Face, cover: np.ndarray) -> np.ndarray:
    """Depth (z in the optical frame) of ``face``'s plane at the pixel centres of ``cover``."""
    v, u = np.nonzero(cover)
    n_c = cam.R @ face.normal
    o_c = cam.R @ face.origin + cam.t
    Kinv = np.linalg.inv(cam.K)
    rays = Kinv[:, 0][None] * u[:, None] + Kinv[:, 1][None] * v[:, None] + Kinv[:, 2][None]  # z = 1
    return (n_c @ o_c) / (rays @ n_c)


def render(cam: Camera, faces: Sequence[_Face], floor: np.ndarray, extent: float,
           sky=(170, 180, 190), depth: bool = False):
    """Image (RGB uint8) and id map (0 = floor) seen by ``cam``; painter's order, culled backs.

    With ``depth=True`` also the exact depth map (HxW float64, metres along the optical
    axis, NaN where no surface is seen): ``(img, ids, depth)``. The image and ids do not
    depend on ``depth``."""
    w, h = cam.size
    if depth:
        img, zmap = _render_floor(cam, floor, extent, np.asarray(sky, np.uint8), with_depth=True)
    else:
        img = _render_floor(cam, floor, extent, np.asarray(sky, np.uint8))
    ids = np.zeros((h, w), np.int32)
    c = cam.center
    visible = [f for f in faces if float(f.normal @ (c - f.center)) > 1e-9]
    # Objects far to near; within an object, culled faces of a convex box never overlap.
    obj_depth: Dict[int, float] = {}
    for f in faces:
        obj_depth.setdefault(f.object_id, 0.0)
        obj_depth[f.object_id] = max(obj_depth[f.object_id], float(np.linalg.norm(f.center - c)))
    visible.sort(key=lambda f: (-obj_depth[f.object_id], -float(np.linalg.norm(f.center - c))))
    for f in visible:
        th, tw = f.texture.shape[:2]
        _, corner_depth = cam.project(f.corners())
        if corner_depth.min() < 0.05:
            raise ValueError("an object face is behind or too close to a camera; move the camera")
        A = np.column_stack([f.u / tw, f.v / th, f.origin])
        H = cam.K @ (cam.R @ A + np.column_stack([np.zeros(3), np.zeros(3), cam.t]))
        # texture pixel centres sit at +0.5: shift so that pixel (i, j) covers [i, i+1)
        H = H @ np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1.0]])
        tex = np.clip(f.texture.astype(np.float32) * f.shade, 0, 255).astype(np.uint8)
        warped = cv2.warpPerspective(tex, H, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        cover = cv2.warpPerspective(np.ones((th, tw), np.uint8), H, (w, h), flags=cv2.INTER_NEAREST,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
        img[cover] = warped[cover]
        ids[cover] = f.object_id
        if depth:
            zmap[cover] = _face_depth(cam, f, cover)
    if depth:
        return img, ids, zmap
    return img, ids


# ----------------------------------------------------------------------------- scenes
EGO_SIZE = (480, 480)
EXO_SIZE = (640, 360)


def synthetic_scene(
    seed: int = 0,
    n_objects: int = 3,
    n_exo: int = 2,
    ego_size: Tuple[int, int] = EGO_SIZE,
    exo_size: Tuple[int, int] = EXO_SIZE,
    noise: float = 2.0,
    name: Optional[str] = None,
    footprint: Tuple[float, float, float, float] = (0.4, 0.58, 0.3, 0.45),
    height_range: Tuple[float, float] = (0.05, 0.16),
    exo_azimuth: Tuple[float, float] = (35.0, 50.0),
    plain: Sequence[int] = (),
    sizes: Optional[Dict[int, Tuple[float, float, float]]] = None,
) -> Scene:
    """Deterministic scene for ``seed``: ``n_objects`` textured boxes on a textured floor,
    camera ``ego`` (close, looking down steeply) and ``exo1..exoN`` (far, lower, spread in
    azimuth). Sizes are (width, height). Object ids are 1..n_objects; source is ``ego``.

    Variants (the defaults give the original scenes): box ``footprint`` ranges
    (x min, x max, y min, y max) and ``height_range`` in metres, the exo cameras' azimuth
    offset range from the ego camera in degrees (``exo_azimuth``), ``plain`` object
    ids painted one flat colour (textureless: nothing for feature matching), and
    ``sizes`` fixing some objects' (x, y, height) in metres."""
    if n_objects < 1 or n_exo < 1:
        raise ValueError("need at least one object and one exo camera")
    rng = np.random.default_rng(seed)
    extent = 5.0
    floor = floor_texture(rng)
    light = np.array([0.3, -0.4, 0.87])
    light /= np.linalg.norm(light)

    faces: List[_Face] = []
    boxes: Dict[int, np.ndarray] = {}  # object id -> 8x3 world corners
    true_boxes: Dict[int, OrientedBox] = {}
    placed: List[Tuple[np.ndarray, float]] = []
    for oid in range(1, n_objects + 1):
        size = (rng.uniform(footprint[0], footprint[1]), rng.uniform(footprint[2], footprint[3]),
                rng.uniform(*height_range))
        if sizes and oid in sizes:  # drawn all the same, so the rest of the scene stays as it was
            size = tuple(float(v) for v in sizes[oid])
        radius = 0.5 * math.hypot(size[0], size[1])
        for _ in range(200):
            xy = rng.uniform(-0.6, 0.6, size=2)
            if all(np.linalg.norm(xy - p) > radius + r + 0.05 for p, r in placed):
                break
        else:
            raise ValueError(f"could not place {n_objects} objects without overlap")
        placed.append((xy, radius))
        tex = random_texture(rng, (384, 384), shapes=120, text=16)
        if oid in plain:  # drawn all the same, so the other objects stay as they were
            tex = plain_texture(np.random.default_rng([seed, oid]), (384, 384))
        yaw = rng.uniform(0, math.pi)
        box = _box_faces(xy, size, yaw, tex, oid, light)
        faces += box
        top = box[0].corners()
        boxes[oid] = np.concatenate([top, top - np.array([0.0, 0.0, size[2]])])
        axes = np.array([[math.cos(yaw), -math.sin(yaw), 0.0], [math.sin(yaw), math.cos(yaw), 0.0], [0.0, 0.0, 1.0]])
        true_boxes[oid] = OrientedBox(np.array([xy[0], xy[1], 0.5 * size[2]]), np.array(size, float), axes)

    az0 = rng.uniform(0, 360)
    cams: Dict[str, Camera] = {}
    roles: Dict[str, str] = {}
    cams["ego"] = orbit_camera(az0, rng.uniform(55, 65), rng.uniform(1.45, 1.6), 75.0, ego_size)
    roles["ego"] = "ego"
    spread = np.linspace(-1.0, 1.0, n_exo) if n_exo > 1 else np.array([1.0])
    for k, sgn in enumerate(spread, start=1):
        az = az0 + sgn * rng.uniform(*exo_azimuth)
        cams[f"exo{k}"] = orbit_camera(az, rng.uniform(38, 48), rng.uniform(3.8, 4.3), 55.0, exo_size)
        roles[f"exo{k}"] = "exo"

    views, masks, depths = {}, {}, {}
    for name_, cam in cams.items():
        img, ids, depths[name_] = render(cam, faces, floor, extent, depth=True)
        if noise > 0:
            img = np.clip(img + rng.normal(0, noise, img.shape), 0, 255).astype(np.uint8)
        views[name_] = (img, roles[name_])
        masks[name_] = {oid: ids == oid for oid in range(1, n_objects + 1) if (ids == oid).any()}
    return Scene(
        name=name or f"synthetic_{seed}",
        views=views,
        masks=masks,
        source="ego",
        cameras=cams,
        meta={"seed": seed, "boxes": boxes},
        depths=depths,
        boxes=true_boxes,
    )


def synthetic_scenes(seeds: Sequence[int] = (0, 1, 2), **kwargs) -> List[Scene]:
    return [synthetic_scene(s, **kwargs) for s in seeds]


def plain_texture(rng: np.random.Generator, size: Tuple[int, int] = (256, 256)) -> np.ndarray:
    """One saturated flat colour with faint sensor-like grain: a painted box, no features."""
    w, h = size
    hue = int(rng.integers(0, 180))
    hsv = np.uint8([[[hue, int(rng.integers(150, 230)), int(rng.integers(150, 220))]]])
    colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[:] = colour
    img += rng.normal(0.0, 1.5, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def tall_scene(seed: int = 0, **kwargs) -> Scene:
    """Hard case: tall narrow boxes (0.3-0.5 m high) seen by exo cameras 70-90 degrees
    around from the ego camera, so the faces seen by the source are barely seen (or
    not at all) by the targets and much of each target silhouette is a side the source
    never saw."""
    kwargs.setdefault("name", f"tall_{seed}")
    return synthetic_scene(seed, footprint=(0.22, 0.32, 0.18, 0.28), height_range=(0.3, 0.5),
                           exo_azimuth=(70.0, 90.0), **kwargs)


def textureless_scene(seed: int = 0, **kwargs) -> Scene:
    """Hard case: object 1 is a flat-coloured box (no texture for features), objects 2
    and 3 are textured as usual."""
    kwargs.setdefault("name", f"textureless_{seed}")
    return synthetic_scene(seed, plain=(1,), **kwargs)


def wall_scene(seed: int = 0, **kwargs) -> Scene:
    """Hard case: object 1 is a painted panel (a flat-coloured wall 0.8 m long, 0.05 m
    thick, 0.4 m high), objects 2 and 3 textured boxes."""
    kwargs.setdefault("name", f"wall_{seed}")
    return synthetic_scene(seed, plain=(1,), sizes={1: (0.8, 0.05, 0.4)}, **kwargs)


SCENE_KINDS = ("synthetic", "tall", "textureless", "wall", "motorcycle")


def load_scene(spec: str) -> Scene:
    """``synthetic:<seed>``, ``tall:<seed>``, ``textureless:<seed>``, ``wall:<seed>`` or ``motorcycle``."""
    kind, _, arg = spec.strip().partition(":")
    if kind == "motorcycle":
        return motorcycle_scene()
    makers = {"synthetic": synthetic_scene, "tall": tall_scene, "textureless": textureless_scene,
              "wall": wall_scene}
    if kind not in makers:
        raise ValueError(f"unknown scene {spec!r}; use one of {', '.join(k + ':<seed>' for k in SCENE_KINDS[:-1])} "
                         "or motorcycle")
    try:
        seed = int(arg or 0)
    except ValueError:
        raise ValueError(f"scene {spec!r}: the seed must be an integer") from None
    return makers[kind](seed)


def motorcycle_floor_plane(disparity: np.ndarray) -> np.ndarray:
    """Least-squares disparity plane d = a x + b y + c of the floor strips beside the bike."""
    h, w = disparity.shape
    yy, xx = np.mgrid[:h, :w]
    sel = np.isfinite(disparity) & (yy >= 0.6 * h) & ((xx < 0.15 * w) | (xx > 0.945 * w))
    A = np.column_stack([xx[sel], yy[sel], np.ones(int(sel.sum()))])
    coef, *_ = np.linalg.lstsq(A, disparity[sel], rcond=None)
    return coef


# Calibration of the down-sampled pair (scikit-image's ``stereo_motorcycle`` docstring,
# Middlebury 2014 calib.txt divided by 4): focal length and principal point of the left
# camera in px, the principal points' x offset of the right camera (doffs) in px, baseline
# in metres. Depth z = f * baseline / (disparity + doffs).
MOTORCYCLE_FOCAL = 994.978
MOTORCYCLE_PRINCIPAL = (311.193, 254.877)
MOTORCYCLE_DOFFS = 31.086
MOTORCYCLE_BASELINE = 0.193001


def motorcycle_cameras(size: Tuple[int, int]) -> Dict[str, Camera]:
    """The rectified pair: both cameras look along the world z (the left optical frame is
    the world), the right one ``MOTORCYCLE_BASELINE`` m to the right (+x)."""
    f, (cx, cy) = MOTORCYCLE_FOCAL, MOTORCYCLE_PRINCIPAL
    K_left = np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])
    K_right = K_left.copy()
    K_right[0, 2] += MOTORCYCLE_DOFFS
    return {"left": Camera(K_left, np.eye(3), np.zeros(3), size),
            "right": Camera(K_right, np.eye(3), np.array([-MOTORCYCLE_BASELINE, 0.0, 0.0]), size)}


def disparity_to_depth(disp: np.ndarray) -> np.ndarray:
    """Left-view depth (metres) from Middlebury disparity (px); NaN where none."""
    d = np.asarray(disp, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = MOTORCYCLE_FOCAL * MOTORCYCLE_BASELINE / (d + MOTORCYCLE_DOFFS)
    z[~np.isfinite(d)] = np.nan
    return z


def warp_depth_by_disparity(disp: np.ndarray) -> np.ndarray:
    """Right-view depth: each left pixel sent to ``x - d`` (rounded, as the right mask),
    the nearest surface (largest disparity) wins; NaN where no left pixel lands."""
    h, w = disp.shape
    ys, xs = np.nonzero(np.isfinite(disp))
    d = np.asarray(disp, np.float64)[ys, xs]
    xi = np.floor(xs - d + 0.5).astype(np.int64)
    ok = (xi >= 0) & (xi < w)
    best = np.full((h, w), -np.inf)
    np.maximum.at(best, (ys[ok], xi[ok]), d[ok])
    return disparity_to_depth(np.where(np.isfinite(best), best, np.nan))


def motorcycle_scene(min_disparity: float = 40.0, above_floor: float = 3.0) -> Scene:
    """Middlebury *Motorcycle* (left -> right) with the motorcycle as object 1.

    Left mask: pixels with a valid disparity above ``min_disparity`` (near the camera)
    and more than ``above_floor`` px above the floor's disparity plane (fitted on the
    floor at the sides of the frame), opened 3x3; the largest connected component,
    with holes under 50 px (missing disparities) filled. Right mask: each left pixel is
    sent to ``x - d`` (rounded), the nearest surface (largest
    disparity) wins each right pixel, so parts hidden in the right view go to the
    occluder; right pixels that no left pixel reaches (disocclusions) are background
    unless a 3x3 closing fills them as pinholes inside the object.
    """
    from skimage import data

    left, right, disp = data.stereo_motorcycle()
    disp = np.asarray(disp, np.float64)
    h, w = disp.shape
    valid = np.isfinite(disp)
    a, b, c = motorcycle_floor_plane(disp)
    yy, xx = np.mgrid[:h, :w]
    plane = a * xx + b * yy + c
    with np.errstate(invalid="ignore"):
        cand = valid & (disp > min_disparity) & (disp > plane + above_floor)
    cand = cv2.morphologyEx(cand.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, lab, stats, _ = cv2.connectedComponentsWithStats(cand, connectivity=8)
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    mask_l = lab == biggest
    # fill small holes (no disparity, or speckle)
    inv = (~mask_l).astype(np.uint8)
    n2, lab2, st2, _ = cv2.connectedComponentsWithStats(inv, connectivity=4)
    for i in range(1, n2):
        x, y, ww, hh, area = st2[i]
        touches = x == 0 or y == 0 or x + ww == w or y + hh == h
        if area < 50 and not touches:
            mask_l[lab2 == i] = True

    mask_r = warp_mask_by_disparity(mask_l, disp)
    return Scene(
        name="middlebury_motorcycle",
        views={"left": (np.ascontiguousarray(left), "exo"), "right": (np.ascontiguousarray(right), "exo")},
        masks={"left": {1: mask_l}, "right": {1: mask_r}},
        source="left",
        cameras=motorcycle_cameras((w, h)),
        meta={"disparity": disp, "source": "skimage.data.stereo_motorcycle (Middlebury 2014)"},
        depths={"left": disparity_to_depth(disp), "right": warp_depth_by_disparity(disp)},
    )


def warp_mask_by_disparity(mask_left: np.ndarray, disp: np.ndarray) -> np.ndarray:
    """Right-view mask of ``mask_left`` by forward warping x_r = x_l - d with a z-buffer."""
    h, w = disp.shape
    ys, xs = np.nonzero(np.isfinite(disp))
    d = disp[ys, xs]
    label = mask_left[ys, xs].astype(np.int64)
    # key: disparity (nearest wins) then label in the lowest bit
    key = np.round(d * 1000).astype(np.int64) * 2 + label
    best = np.full((h, w), -1, np.int64)
    xi = np.floor(xs - d + 0.5).astype(np.int64)
    ok = (xi >= 0) & (xi < w)
    np.maximum.at(best, (ys[ok], xi[ok]), key[ok])
    reached = best >= 0
    out = reached & (best % 2 == 1)
    closed = cv2.morphologyEx(out.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8)).astype(bool)
    return out | (closed & ~reached)
