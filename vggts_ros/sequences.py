"""Bundled moving scenes: camera streams over time with exact per-frame ground truth.

Built on the synthetic renderer of :mod:`vggts_ros.scenes` (textured boxes on a
textured floor, pinhole cameras, occlusion-aware id maps). Here the cameras and the
boxes move: every frame is rendered from the cameras' and the boxes' poses at that
frame's time, so each frame's masks are the renderer's id map of that frame (a box
hidden behind another loses exactly the pixels the other covers).

Kinds (``load_sequence("kind:seed")``):

* ``moving``: the full case. A walking **ego** camera (forward motion, head bob, a small
  sway of the gaze and of the roll), a slowly panning **exo1** camera, a static **exo2**
  camera; three boxes, of which box 3 slides back and forth across the floor and passes
  behind box 1 (the tallest) as exo2 sees it, so that exo2 loses box 3 for some frames
  (first around t = 1.5 s).
* ``slide``: the same boxes and slide, every camera still (object motion only).
* ``still``: nothing moves; only the sensor noise changes from frame to frame.

Deterministic by seed (textures, sizes, placement, paths and per-frame sensor noise).
Frame ``i`` has the stamp ``i / rate`` seconds; the default is 3 s at 10 Hz.
``SceneSequence.frame(i)`` is a :class:`vggts_ros.scenes.Scene` (views, exact masks,
cameras, box corners), so everything that takes a scene takes a frame.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np

from .scenes import Camera, Scene, _box_faces, _Face, floor_texture, look_at, random_texture

SEQUENCE_KINDS = ("moving", "slide", "still")
EGO_SIZE = (480, 480)
EXO_SIZE = (640, 360)


@dataclass
class Box:
    """A box standing on the floor: centre (x, y), size (x, y, height) in metres, yaw in
    radians; ``path(t)`` gives the centre at time t for a box that slides (None: still)."""

    object_id: int
    center: np.ndarray
    size: Tuple[float, float, float]
    yaw: float
    texture: np.ndarray
    path: Optional[Callable[[float], np.ndarray]] = None
    _shaded: Optional[List[np.ndarray]] = field(default=None, repr=False, compare=False)
    _light: Optional[np.ndarray] = field(default=None, repr=False, compare=False)

    def center_at(self, t: float) -> np.ndarray:
        return self.center if self.path is None else np.asarray(self.path(t), float)

    def faces_at(self, t: float, light: np.ndarray) -> List[_Face]:
        """The box's visible-side faces at time ``t``, their textures already shaded
        (``shade`` 1.0): the box only translates, so each face's shade never changes."""
        faces = _box_faces(self.center_at(t), self.size, self.yaw, self.texture, self.object_id, light)
        if self._shaded is None or self._light is None or not np.array_equal(self._light, light):
            self._light = np.array(light, float)
            self._shaded = [np.clip(f.texture.astype(np.float32) * f.shade, 0, 255).astype(np.uint8) for f in faces]
        for f, tex in zip(faces, self._shaded):
            f.texture, f.shade = tex, 1.0
        return faces

    def corners_at(self, t: float) -> np.ndarray:
        """8x3 world corners at time ``t``: the top face's four, then the bottom's."""
        top = self.faces_at(t, np.array([0.0, 0.0, 1.0]))[0].corners()
        return np.concatenate([top, top - np.array([0.0, 0.0, self.size[2]])])


@dataclass
class CameraPath:
    """A camera's pose over time: eye and look-at target as functions of t (seconds),
    plus a roll about the optical axis (radians)."""

    role: str
    size: Tuple[int, int]
    fov_deg: float
    eye: Callable[[float], np.ndarray]  # t -> (3,) world point
    target: Callable[[float], np.ndarray]  # t -> (3,) world point
    roll: Optional[Callable[[float], float]] = None  # t -> radians, None = 0

    def at(self, t: float) -> Camera:
        cam = look_at(self.eye(t), self.target(t), self.fov_deg, self.size)
        if self.roll is not None:
            a = float(self.roll(t))
            c, s = math.cos(a), math.sin(a)
            Rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
            cam = Camera(cam.K, Rz @ cam.R, Rz @ cam.t, cam.size)
        return cam


class SceneSequence:
    """Frames ``0 .. n_frames-1`` of a moving scene at ``rate`` Hz, rendered on demand.

    ``frame(i)`` renders every camera (cached, the last ``cache`` frames);
    ``view(i, camera)`` renders one camera only: ``(RGB image, {object id: mask})``.
    """

    def __init__(self, name: str, rate: float, n_frames: int, boxes: List[Box],
                 paths: Dict[str, CameraPath], source: str, floor: np.ndarray, extent: float,
                 light: np.ndarray, noise: float, seed: int, cache: int = 4) -> None:
        if rate <= 0 or n_frames < 1:
            raise ValueError(f"a sequence needs a positive rate and at least one frame (got {rate} Hz, {n_frames})")
        if source not in paths:
            raise ValueError(f"source camera {source!r} is not one of {sorted(paths)}")
        self.name = name
        self.rate = float(rate)
        self.n_frames = int(n_frames)
        self.boxes = boxes
        self.paths = paths
        self.source = source
        self.floor = floor
        self.extent = extent
        self.light = light
        self.noise = float(noise)
        self.seed = int(seed)
        self._cache: "OrderedDict[int, Scene]" = OrderedDict()
        self._cache_size = cache
        self._renderer = FastRenderer(floor, extent)

    # ------------------------------------------------------------------ layout
    def __len__(self) -> int:
        return self.n_frames

    @property
    def cameras(self) -> List[str]:
        return list(self.paths)

    @property
    def targets(self) -> List[str]:
        return [n for n in self.paths if n != self.source]

    @property
    def object_ids(self) -> List[int]:
        return [b.object_id for b in self.boxes]

    def role(self, camera: str) -> str:
        return self.paths[camera].role

    def stamp(self, i: int) -> float:
        """Frame ``i``'s time in seconds from the start."""
        self._check(i)
        return i / self.rate

    def camera(self, i: int, name: str) -> Camera:
        self._check(i)
        return self.paths[name].at(self.stamp(i))

    def box_corners(self, i: int) -> Dict[int, np.ndarray]:
        t = self.stamp(i)
        return {b.object_id: b.corners_at(t) for b in self.boxes}

    def with_source(self, source: str) -> "SceneSequence":
        """The same sequence with another camera as the source (the one objects are marked in)."""
        return SceneSequence(self.name, self.rate, self.n_frames, self.boxes, self.paths, source, self.floor,
                             self.extent, self.light, self.noise, self.seed, self._cache_size)

    def _check(self, i: int) -> None:
        if not 0 <= int(i) < self.n_frames:
            raise IndexError(f"frame {i} is outside sequence {self.name!r} (0..{self.n_frames - 1})")

    # ------------------------------------------------------------------ rendering
    def view(self, i: int, name: str) -> Tuple[np.ndarray, Dict[int, np.ndarray]]:
        """Camera ``name`` at frame ``i``: the image (with this frame's sensor noise) and
        the exact mask of every object it sees (occluded parts excluded)."""
        if name not in self.paths:
            raise KeyError(f"no camera {name!r} in sequence {self.name!r} (cameras: {', '.join(self.paths)})")
        if i in self._cache:
            scene = self._cache[i]
            return scene.image(name), scene.masks[name]
        t = self.stamp(i)
        faces: List[_Face] = []
        for b in self.boxes:
            faces += b.faces_at(t, self.light)
        img, ids = self._renderer.render(self.paths[name].at(t), faces)
        if self.noise > 0:
            k = list(self.paths).index(name)
            rng = np.random.default_rng([self.seed, i, k])
            noise = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(self.noise)
            img = np.clip(img + noise, 0, 255).astype(np.uint8)
        masks = {b.object_id: ids == b.object_id for b in self.boxes if (ids == b.object_id).any()}
        return img, masks

    def frame(self, i: int) -> Scene:
        """Every camera at frame ``i`` as a :class:`Scene` (source = this sequence's source)."""
        self._check(i)
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        views, masks, cams = {}, {}, {}
        for name, path in self.paths.items():
            img, m = self.view(i, name)
            views[name] = (img, path.role)
            masks[name] = m
            cams[name] = self.camera(i, name)
        scene = Scene(name=f"{self.name}@{i}", views=views, masks=masks, source=self.source, cameras=cams,
                      meta={"seed": self.seed, "frame": i, "stamp": self.stamp(i), "boxes": self.box_corners(i)})
        self._cache[i] = scene
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return scene

    def __iter__(self):
        for i in range(self.n_frames):
            yield self.frame(i)


# ----------------------------------------------------------------------------- renderer
class FastRenderer:
    """The renderer of :func:`vggts_ros.scenes.render` (same scene model, same painter's
    order, same culling, same texture mapping), made cheap enough for streams: the floor
    is one homography warp of its texture (the floor is the plane z=0) and each face is
    warped only inside its projected bounding box. The
    id map is exact for the image it returns (the pixels each face wrote)."""

    def __init__(self, floor: np.ndarray, extent: float, sky=(170, 180, 190)) -> None:
        self.floor = floor
        self.extent = float(extent)
        self.sky = np.asarray(sky, np.uint8)
        self.plain = tuple(int(v) for v in floor.reshape(-1, 3).mean(0))

    def _floor(self, cam: Camera) -> np.ndarray:
        w, h = cam.size
        n = self.floor.shape[0]
        # floor texture pixel (a, b) <-> world (x, y, 0): x = (a + 0.5) * 2e/n - e
        s = 2 * self.extent / n
        T = np.array([[s, 0.0, 0.5 * s - self.extent], [0.0, s, 0.5 * s - self.extent], [0.0, 0.0, 1.0]])
        P = cam.K @ np.column_stack([cam.R[:, 0], cam.R[:, 1], cam.t])  # world (x, y, 1) on z=0 -> image
        H = P @ T  # texture -> image
        img = cv2.warpPerspective(self.floor, H, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                  borderValue=self.plain)
        # Pixels whose ray does not go down to the floor show the sky: the ray's world z
        # component is linear in the pixel coordinates.
        r = (cam.R.T @ np.linalg.inv(cam.K))[2]
        xs = np.arange(w, dtype=np.float64) * r[0]
        ys = np.arange(h, dtype=np.float64) * r[1] + r[2]
        sky = (ys[:, None] + xs[None, :]) >= -1e-9
        if sky.any():
            img[sky] = self.sky
        return img

    @staticmethod
    def _texture(f: _Face) -> np.ndarray:
        if f.shade == 1.0:
            return f.texture
        return np.clip(f.texture.astype(np.float32) * f.shade, 0, 255).astype(np.uint8)

    def render(self, cam: Camera, faces: List[_Face]) -> Tuple[np.ndarray, np.ndarray]:
        """Image (RGB uint8) and id map (0 = floor) seen by ``cam``."""
        w, h = cam.size
        img = self._floor(cam)
        ids = np.zeros((h, w), np.int32)
        c = cam.center
        visible = [f for f in faces if float(f.normal @ (c - f.center)) > 1e-9]
        obj_depth: Dict[int, float] = {}
        for f in faces:
            obj_depth[f.object_id] = max(obj_depth.get(f.object_id, 0.0), float(np.linalg.norm(f.center - c)))
        visible.sort(key=lambda f: (-obj_depth[f.object_id], -float(np.linalg.norm(f.center - c))))
        for f in visible:
            th, tw = f.texture.shape[:2]
            uv, depth = cam.project(f.corners())
            if depth.min() < 0.05:
                raise ValueError("an object face is behind or too close to a camera; move the camera")
            x0, y0 = np.floor(uv.min(0)).astype(int) - 1
            x1, y1 = np.ceil(uv.max(0)).astype(int) + 2
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
            if x1 <= x0 or y1 <= y0:
                continue
            A = np.column_stack([f.u / tw, f.v / th, f.origin])
            H = cam.K @ (cam.R @ A + np.column_stack([np.zeros(3), np.zeros(3), cam.t]))
            H = H @ np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1.0]])
            H = np.array([[1.0, 0, -x0], [0, 1.0, -y0], [0, 0, 1.0]]) @ H  # into the bounding box
            size = (int(x1 - x0), int(y1 - y0))
            warped = cv2.warpPerspective(self._texture(f), H, size, flags=cv2.INTER_LINEAR,
                                         borderMode=cv2.BORDER_REPLICATE)
            cover = cv2.warpPerspective(np.ones((th, tw), np.uint8), H, size, flags=cv2.INTER_NEAREST,
                                        borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
            img[y0:y1, x0:x1][cover] = warped[cover]
            ids[y0:y1, x0:x1][cover] = f.object_id
        return img, ids


# ----------------------------------------------------------------------------- builders
def _unit(v) -> np.ndarray:
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def _triangle(t: float, amplitude: float, speed: float) -> float:
    """Back and forth between -amplitude and +amplitude at ``speed``, at -amplitude at t=0."""
    if amplitude <= 0 or speed <= 0:
        return 0.0
    period = 4 * amplitude / speed
    u = (t % period) / period
    return amplitude * (4 * u - 1 if u < 0.5 else 3 - 4 * u)


def moving_sequence(seed: int = 0, rate: float = 10.0, duration: float = 3.0, *, move_cameras: bool = True,
                    move_objects: bool = True, ego_size: Tuple[int, int] = EGO_SIZE,
                    exo_size: Tuple[int, int] = EXO_SIZE, noise: float = 2.0,
                    name: Optional[str] = None) -> SceneSequence:
    """Three textured boxes; cameras ``ego`` (walking), ``exo1`` (panning), ``exo2``
    (still, low: the camera that sees box 3 pass behind box 1). Source camera ``ego``;
    object ids 1, 2, 3.

    The motions do not depend on ``duration`` (a longer sequence goes on the same way):
    box 3 slides back and forth across exo2's line of sight behind box 1 at 0.28-0.32 m/s
    (0.45-0.5 m each side, behind box 1 at t = 1.5-1.8 s, then every half period); exo1's
    gaze sweeps back and forth across the scene (+-0.3 m, period 8-10 s, about 4 deg);
    the ego camera walks towards the scene and back (0.25 m, period 10 s, up to 0.08 m/s)
    with a head bob (+-12 mm at 1.6-2 Hz), a gaze sway (+-6 cm at 0.4-0.6 Hz) and a roll
    sway (+-2 deg). ``move_cameras=False`` holds every camera at its pose at t=0,
    ``move_objects=False`` holds box 3 behind box 1's side (half visible to exo2)."""
    if rate <= 0 or duration <= 0:
        raise ValueError(f"rate and duration must be positive (got {rate} Hz, {duration} s)")
    rng = np.random.default_rng([seed, 22])
    extent = 5.0
    floor = floor_texture(rng)
    light = _unit([0.3, -0.4, 0.87])

    # exo2 looks along `view` (horizontal); box 1, the tallest, stands at the middle, box 3
    # slides across that line of sight behind it, box 2 stands aside and in front.
    az0 = rng.uniform(0, 2 * math.pi)
    view = np.array([math.cos(az0), math.sin(az0)])  # from the camera towards the scene
    across = np.array([-view[1], view[0]])
    mid = rng.uniform(-0.08, 0.08, size=2)
    sizes = {
        1: (rng.uniform(0.26, 0.32), rng.uniform(0.22, 0.28), rng.uniform(0.26, 0.30)),
        2: (rng.uniform(0.36, 0.46), rng.uniform(0.28, 0.36), rng.uniform(0.08, 0.14)),
        3: (rng.uniform(0.22, 0.28), rng.uniform(0.18, 0.22), rng.uniform(0.10, 0.13)),
    }
    textures = {oid: random_texture(rng, (384, 384), shapes=120, text=16) for oid in (1, 2, 3)}
    yaws = {1: az0 + rng.uniform(-0.2, 0.2), 2: rng.uniform(0, math.pi), 3: az0 + rng.uniform(-0.15, 0.15)}
    behind = rng.uniform(0.36, 0.42)  # box 3's line, behind box 1's centre (m)
    amp3, speed3 = rng.uniform(0.45, 0.5), rng.uniform(0.28, 0.32)
    centers = {1: mid, 2: mid - 0.55 * view + rng.uniform(0.35, 0.45) * across * rng.choice([-1, 1]),
               3: mid + behind * view}
    side = -0.5 * amp3  # box 3's place when it does not move

    def path3(t: float) -> np.ndarray:
        return centers[3] + (_triangle(t, amp3, speed3) if move_objects else side) * across

    boxes = [Box(oid, np.asarray(centers[oid], float), sizes[oid], float(yaws[oid]), textures[oid],
                 path3 if oid == 3 else None) for oid in (1, 2, 3)]
    look = np.array([mid[0], mid[1], 0.05])

    # exo2: far and low, looking along `view` at the middle.
    d2, el2 = rng.uniform(3.6, 4.0), math.radians(rng.uniform(22, 26))
    eye2 = look - d2 * math.cos(el2) * np.append(view, 0.0) + np.array([0.0, 0.0, d2 * math.sin(el2)])

    # exo1: far, 50-65 degrees around from exo2, its gaze sweeping across the scene.
    a1 = az0 + math.radians(rng.uniform(50, 65)) * rng.choice([-1, 1])
    v1 = np.array([math.cos(a1), math.sin(a1)])
    d1, el1 = rng.uniform(3.8, 4.2), math.radians(rng.uniform(38, 44))
    eye1 = look - d1 * math.cos(el1) * np.append(v1, 0.0) + np.array([0.0, 0.0, d1 * math.sin(el1)])
    pan_dir = np.append(np.array([-v1[1], v1[0]]), 0.0)
    pan_amp = 0.3 if move_cameras else 0.0
    pan_period = rng.uniform(8.0, 10.0)

    def exo1_target(t: float) -> np.ndarray:
        return look + pan_amp * math.sin(2 * math.pi * t / pan_period) * pan_dir

    # ego: close and high, 140-220 degrees around from exo2, walking towards the scene and back.
    ae = az0 + math.pi + math.radians(rng.uniform(-40, 40))
    ve = np.array([math.cos(ae), math.sin(ae)])  # from the scene towards the ego camera
    de, ele = rng.uniform(1.45, 1.6), math.radians(rng.uniform(52, 58))
    eye_e0 = look + de * math.cos(ele) * np.append(ve, 0.0) + np.array([0.0, 0.0, de * math.sin(ele)])
    walk_amp = 0.125 if move_cameras else 0.0  # forward offset 0 .. 0.25 m, period 10 s
    bob_amp = 0.012 if move_cameras else 0.0
    bob_hz, sway_hz = rng.uniform(1.6, 2.0), rng.uniform(0.4, 0.6)
    sway = 0.06 if move_cameras else 0.0  # gaze sway at the scene (m)
    roll_amp = math.radians(2.0) if move_cameras else 0.0
    side_e = np.append(np.array([-ve[1], ve[0]]), 0.0)
    fwd_e = -np.append(ve, 0.0)
    phase = rng.uniform(0, 2 * math.pi)

    def forward(t: float) -> np.ndarray:
        return walk_amp * (1 - math.cos(2 * math.pi * t / 10.0)) * fwd_e

    def ego_eye(t: float) -> np.ndarray:
        return eye_e0 + forward(t) + np.array([0.0, 0.0, bob_amp * math.sin(2 * math.pi * bob_hz * t + phase)])

    def ego_target(t: float) -> np.ndarray:
        return look + forward(t) + sway * math.sin(2 * math.pi * sway_hz * t) * side_e

    def ego_roll(t: float) -> float:
        return roll_amp * math.sin(2 * math.pi * sway_hz * t + 1.0)

    paths = {
        "ego": CameraPath("ego", ego_size, 75.0, ego_eye, ego_target, ego_roll),
        "exo1": CameraPath("exo", exo_size, 55.0, lambda t: eye1, exo1_target),
        "exo2": CameraPath("exo", exo_size, 50.0, lambda t: eye2, lambda t: look),
    }
    n_frames = max(1, int(round(duration * rate)))
    kind = "moving" if (move_cameras and move_objects) else ("slide" if move_objects else "still")
    return SceneSequence(name or f"{kind}_{seed}", rate, n_frames, boxes, paths, "ego", floor, extent, light,
                         noise, seed)


def slide_sequence(seed: int = 0, **kwargs) -> SceneSequence:
    """Still cameras, box 3 sliding behind box 1 (object motion only)."""
    return moving_sequence(seed, move_cameras=False, move_objects=True, **kwargs)


def still_sequence(seed: int = 0, **kwargs) -> SceneSequence:
    """Nothing moves; each frame has its own sensor noise."""
    return moving_sequence(seed, move_cameras=False, move_objects=False, **kwargs)


def load_sequence(spec: str, **kwargs) -> SceneSequence:
    """``moving:<seed>``, ``slide:<seed>`` or ``still:<seed>``; an optional
    ``@<rate>hz`` and ``/<seconds>s`` (``moving:0@15hz/2s``). Keyword arguments go to
    :func:`moving_sequence` (e.g. ``ego_size``, ``exo_size``, ``noise``)."""
    text = spec.strip()
    head, _, dur = text.partition("/")
    head, _, rate = head.partition("@")
    kind, _, arg = head.partition(":")
    makers = {"moving": moving_sequence, "slide": slide_sequence, "still": still_sequence}
    if kind not in makers:
        raise ValueError(f"unknown sequence {spec!r}; use one of {', '.join(k + ':<seed>' for k in SEQUENCE_KINDS)}"
                         " (optionally @<rate>hz and /<seconds>s)")
    try:
        seed = int(arg or 0)
    except ValueError:
        raise ValueError(f"sequence {spec!r}: the seed must be an integer") from None
    if rate:
        r = rate.lower().removesuffix("hz")
        try:
            kwargs["rate"] = float(r)
        except ValueError:
            raise ValueError(f"sequence {spec!r}: the rate must be a number of hertz, e.g. @10hz") from None
    if dur:
        d = dur.lower().removesuffix("s")
        try:
            kwargs["duration"] = float(d)
        except ValueError:
            raise ValueError(f"sequence {spec!r}: the duration must be seconds, e.g. /3s") from None
    seq = makers[kind](seed, **kwargs)
    seq.name = text.replace(":", "_").replace("@", "_").replace("/", "_")
    return seq
