"""The objects a node tracks, with one global generation counter (no ROS).

Why a generation: inference runs on a snapshot of the objects while services may clear
or replace them. Every change bumps ``generation``; results computed from an older
snapshot are stale and must not be published (``is_current``), so a cleared object
never reappears and a replaced one never shows its old mask. Track-mode updates of an
object's source frame (``advance``) apply only to the very object they were computed
for.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

MAX_OBJECT_ID = 255  # object ids are the pixel values of the mono8 label masks


class RegistryError(ValueError):
    """A request the registry refuses; the message says why."""


@dataclass
class TrackedObject:
    object_id: int
    camera: str
    label: str
    image: np.ndarray  # source frame the mask belongs to (RGB)
    mask: np.ndarray  # bool, same size as image
    stamp: float
    generation: int  # registry generation at which this object was set


class ObjectRegistry:
    """Thread-safe id -> object table with limits and a generation counter."""

    def __init__(self, max_objects: int = 32, max_label_length: int = 256) -> None:
        self.max_objects = int(max_objects)
        self.max_label_length = int(max_label_length)
        self.lock = threading.RLock()
        self._objects: Dict[int, TrackedObject] = {}
        self.generation = 0
        # change listeners ``fn(event, payload)``, called under the lock: ("put", object),
        # ("advance", object), ("clear", [ids]) (e.g. the node's object store)
        self.listeners: List[Callable[[str, object], None]] = []

    def _notify(self, event: str, payload) -> None:
        for fn in list(self.listeners):
            fn(event, payload)

    def __len__(self) -> int:
        with self.lock:
            return len(self._objects)

    def ids(self) -> List[int]:
        with self.lock:
            return sorted(self._objects)

    def get(self, object_id: int) -> Optional[TrackedObject]:
        with self.lock:
            return self._objects.get(object_id)

    def check_request(self, object_id: int, label: str) -> None:
        """Refuse an id or label before any costly work is done for the request."""
        if not 0 <= object_id <= MAX_OBJECT_ID:
            raise RegistryError(f"object_id must be 0 (pick a free one) or 1..{MAX_OBJECT_ID}, got {object_id}")
        if len(label) > self.max_label_length:
            raise RegistryError(f"label is {len(label)} characters long; at most {self.max_label_length} "
                                "(inference.max_label_length)")
        with self.lock:
            if object_id not in self._objects and len(self._objects) >= self.max_objects:
                raise RegistryError(f"{len(self._objects)} objects are set, the most this node tracks "
                                    f"(inference.max_objects = {self.max_objects}); clear one first")

    def put(self, camera: str, label: str, image: np.ndarray, mask: np.ndarray, stamp: float,
            object_id: int = 0) -> Tuple[TrackedObject, bool]:
        """Set (or replace) an object; returns it and whether an object was replaced."""
        with self.lock:
            self.check_request(object_id, label)
            if object_id == 0:
                free = [i for i in range(1, MAX_OBJECT_ID + 1) if i not in self._objects]
                if not free:
                    raise RegistryError(f"all object ids 1..{MAX_OBJECT_ID} are in use; clear one first")
                object_id = free[0]
            replaced = object_id in self._objects
            self.generation += 1
            obj = TrackedObject(object_id, camera, label, image, mask, stamp, self.generation)
            self._objects[object_id] = obj
            self._notify("put", obj)
            return obj, replaced

    def clear(self, object_id: int = 0) -> List[int]:
        """Remove one object (or all with 0); returns the removed ids."""
        with self.lock:
            if object_id == 0:
                removed = sorted(self._objects)
                self._objects.clear()
            elif object_id in self._objects:
                removed = [object_id]
                del self._objects[object_id]
            else:
                raise RegistryError(f"no object with id {object_id}; current ids: {sorted(self._objects)}")
            self.generation += 1
            self._notify("clear", removed)
            return removed

    def snapshot(self) -> Tuple[int, List[TrackedObject]]:
        """The current generation and objects (the objects must be treated as read-only)."""
        with self.lock:
            return self.generation, list(self._objects.values())

    def is_current(self, generation: int) -> bool:
        with self.lock:
            return generation == self.generation

    def advance(self, obj: TrackedObject, image: np.ndarray, mask: np.ndarray, stamp: float) -> bool:
        """Track mode: move ``obj``'s source to a newer frame, unless it was cleared or
        replaced meanwhile. Does not change the generation (the object is the same)."""
        with self.lock:
            current = self._objects.get(obj.object_id)
            if current is not obj:
                return False
            moved = TrackedObject(obj.object_id, obj.camera, obj.label, image, mask, stamp, obj.generation)
            self._objects[obj.object_id] = moved
            self._notify("advance", moved)
            return True
