"""Objects that survive a restart: one file per object in a state directory (no ROS).

A CUDA error, an OOM kill, a launch ``respawn`` or a reboot must not make the operator mask
everything again. With ``objects.state_dir`` set, every change of an object (set, replaced,
moved on by track mode, cleared) is written to ``<state_dir>/object_<id>.npz`` atomically
(written to a temporary file, flushed to disk, then renamed over the old one), and at start
the node restores every object with its id, label, source camera, source frame, mask and
stamp, so its masks come back without a service call.

A file that cannot be read (truncated, corrupt, another format) or that belongs to a camera
this node no longer has, or whose frame size is not that camera's, is moved aside to
``<state_dir>/rejected/`` with the reason in the returned problems; it never stops the start.

Track mode moves an object every set; its file is rewritten at most every
``min_interval`` seconds (the last move before a crash may be lost, never the object).
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from vggts_ros.registry import MAX_OBJECT_ID, ObjectRegistry, RegistryError, TrackedObject

FORMAT = "vggts_ros.object/1"


@dataclass(frozen=True)
class Restored:
    object_id: int
    camera: str
    label: str
    image: np.ndarray
    mask: np.ndarray
    stamp: float
    mode: str


class ObjectStore:
    """The state directory of one node (see the module docstring)."""

    def __init__(self, state_dir: str | os.PathLike, min_interval: float = 1.0) -> None:
        self.dir = Path(state_dir).expanduser()
        self.min_interval = float(min_interval)
        self._lock = threading.Lock()
        self._written: Dict[int, float] = {}
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"objects.state_dir {str(self.dir)!r} cannot be created: {exc}") from exc
        if not os.access(self.dir, os.W_OK):
            raise ValueError(f"objects.state_dir {str(self.dir)!r} is not writable")

    def path(self, object_id: int) -> Path:
        return self.dir / f"object_{int(object_id)}.npz"

    # ------------------------------------------------------------------ writing
    def save(self, obj: TrackedObject, mode: str, moved: bool = False) -> bool:
        """Write ``obj`` (a move of track mode: at most every ``min_interval`` s). True if written."""
        now = time.monotonic()
        with self._lock:
            if moved and now - self._written.get(obj.object_id, -1e9) < self.min_interval:
                return False
            meta = dict(format=FORMAT, object_id=int(obj.object_id), camera=obj.camera, label=obj.label,
                        stamp=float(obj.stamp), mode=mode)
            target = self.path(obj.object_id)
            tmp = target.with_suffix(".tmp")
            with open(tmp, "wb") as handle:
                np.savez_compressed(handle, meta=np.array(json.dumps(meta)), image=np.ascontiguousarray(obj.image),
                                    mask=np.packbits(np.asarray(obj.mask, bool), axis=None),
                                    shape=np.array(np.asarray(obj.mask).shape, np.int64))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
            self._fsync_dir()
            self._written[obj.object_id] = now
            return True

    def remove(self, object_ids: Sequence[int]) -> None:
        with self._lock:
            for oid in object_ids:
                self._written.pop(int(oid), None)
                try:
                    self.path(oid).unlink()
                except FileNotFoundError:
                    pass
            self._fsync_dir()

    def _fsync_dir(self) -> None:
        try:
            fd = os.open(self.dir, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ reading
    def load(self, sizes: Dict[str, Optional[Tuple[int, int]]]) -> Tuple[List[Restored], List[str]]:
        """Every stored object of a camera in ``sizes`` (camera -> (height, width) of its frames,
        or None when unknown yet), by id; and one problem line per file moved aside."""
        restored, problems = [], []
        for path in sorted(self.dir.glob("object_*.npz")):
            try:
                obj = self._read(path)
                if obj.camera not in sizes:
                    raise ValueError(f"camera {obj.camera!r} is not one of this node's cameras {sorted(sizes)}")
                size = sizes[obj.camera]
                if size is not None and tuple(obj.mask.shape) != tuple(size):
                    raise ValueError(f"its frame is {obj.mask.shape[1]}x{obj.mask.shape[0]}, camera {obj.camera!r} "
                                     f"is {size[1]}x{size[0]}")
            except Exception as exc:  # noqa: BLE001 - whatever is wrong with a file, the start goes on
                problems.append(f"{path.name}: {exc}; moved to {self._set_aside(path)}")
                continue
            restored.append(obj)
        for tmp in self.dir.glob("object_*.tmp"):  # a write cut short: the .npz before it is intact
            problems.append(f"{tmp.name}: an interrupted write; moved to {self._set_aside(tmp)}")
        return restored, problems

    @staticmethod
    def _read(path: Path) -> Restored:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("format") != FORMAT:
                raise ValueError(f"not a vggts object file (format {meta.get('format')!r})")
            shape = tuple(int(v) for v in data["shape"])
            image = np.asarray(data["image"])
            bits = np.asarray(data["mask"])
        if len(shape) != 2 or image.shape != shape + (3,) or image.dtype != np.uint8:
            raise ValueError(f"image {image.shape} {image.dtype} does not match mask shape {shape}")
        mask = np.unpackbits(bits, count=shape[0] * shape[1]).reshape(shape).astype(bool)
        oid = int(meta["object_id"])
        if not 1 <= oid <= MAX_OBJECT_ID:
            raise ValueError(f"object id {oid} is out of range")
        if not mask.any():
            raise ValueError("its mask is empty")
        if path.name != f"object_{oid}.npz":
            raise ValueError(f"holds object {oid}, not the object its name says")
        return Restored(oid, str(meta["camera"]), str(meta.get("label", "")), image, mask, float(meta["stamp"]),
                        str(meta.get("mode", "keyframe")))

    def _set_aside(self, path: Path) -> Path:
        aside = self.dir / "rejected"
        aside.mkdir(exist_ok=True)
        target = aside / f"{path.name}.{time.strftime('%Y%m%dT%H%M%S')}"
        os.replace(path, target)
        return target

    # ------------------------------------------------------------------ with a registry
    def restore_into(self, registry: ObjectRegistry, sizes: Dict[str, Optional[Tuple[int, int]]]) -> Tuple[List[int], List[str]]:
        """Put every stored object into ``registry`` with its own id; returns the ids
        restored and the problems (files moved aside, objects the registry refused)."""
        restored, problems = self.load(sizes)
        ids = []
        for r in restored:
            try:
                registry.put(r.camera, r.label, r.image, r.mask, r.stamp, r.object_id)
                ids.append(r.object_id)
            except RegistryError as exc:
                problems.append(f"{self.path(r.object_id).name}: not restored: {exc}")
        return ids, problems

    def follow(self, registry: ObjectRegistry, mode: Callable[[], str], on_error: Callable[[str], None]) -> None:
        """Write every later change of ``registry``'s objects here (a failed write is reported
        through ``on_error`` and never fails the change itself)."""

        def changed(event: str, payload) -> None:
            try:
                if event == "clear":
                    self.remove(payload)
                else:
                    self.save(payload, mode(), moved=event == "advance")
            except OSError as exc:
                on_error(f"objects.state_dir: cannot write {self.dir}: {exc}")

        registry.listeners.append(changed)

    def attach(self, registry: ObjectRegistry, cameras: Sequence[str], mode: Callable[[], str], *,
               info: Callable[[str], None], warning: Callable[[str], None], error: Callable[[str], None]) -> List[int]:
        """What a node does at configure: restore the stored objects of ``cameras`` into
        ``registry`` (saying what was restored and what was set aside), then follow it."""
        ids, problems = self.restore_into(registry, {name: None for name in cameras})
        for problem in problems:
            warning(f"objects.state_dir: {problem}")
        if ids:
            info(f"restored {len(ids)} object(s) from {self.dir}: ids {ids}")
        self.follow(registry, mode, error)
        return ids
