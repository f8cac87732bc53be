"""Stream state: what a segmentor remembers between the synchronised sets of one video.

A plain call (``segment`` / ``segment_objects`` without a state) is stateless. A caller that
streams (the node, ``vggts replay``, a script over a recording) owns a :class:`StreamState`,
made by the backend, and passes it with every set together with a :class:`StreamStep` that
says which set this is::

    state = segmentor.init_stream()
    for stamp, image, masks, targets in video:
        results = segmentor.segment_objects(image, masks, targets, state=state,
                                            step=StreamStep(stamp, object_ids))
    state.remove_object(object_id)      # an object was cleared
    state.reset()                        # a new recording, a time jump

What it holds depends on the backend's configuration: Temporal VGGT-S memory banks per
(object, target camera) (:mod:`vggts_ros.temporal`, ``PipelineConfig.temporal``) and the
stream-reuse record of each target's last masks (:mod:`vggts_ros.stream_reuse`,
``PipelineConfig.stream_reuse``). With neither on, a state holds nothing and a streamed call
computes exactly what a plain one does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Hashable, Iterable, Optional, Sequence

if TYPE_CHECKING:  # stream reuse needs torch (view transforms); a weight-free backend never does
    from vggts_ros.stream_reuse import StreamReuse


@dataclass(frozen=True)
class StreamStep:
    """One synchronised set of a stream: its ``stamp`` (s), one id per object (the key of
    its memory, together with the target camera's name) and, per object, the version of its
    source mask (a new version restarts that object's memory; None: the ids themselves,
    i.e. the masks never change). ``stale_after``: a target camera whose previous set is
    older than this (s) restarts its memory (a node passes its ``sync.stale_after``; None:
    the memory's own default)."""

    stamp: float
    object_ids: Sequence[Hashable]
    source_versions: Optional[Sequence[Hashable]] = None
    stale_after: Optional[float] = None

    def versions(self) -> Sequence[Hashable]:
        return self.object_ids if self.source_versions is None else self.source_versions

    def refs(self, index: int, targets) -> list:
        """:class:`vggts_ros.temporal.StreamRef` of object ``index`` in each target view (the
        camera is the view's ``name``, or ``target<i>`` when it has none)."""
        from vggts_ros.temporal import StreamRef

        version = self.versions()[index]
        return [StreamRef(self.object_ids[index], v.name or f"target{i}", float(self.stamp), version,
                          (int(v.image.shape[0]), int(v.image.shape[1])), self.stale_after)
                for i, v in enumerate(targets)]

    def check(self, objects: int) -> None:
        """Refuse a step that does not describe ``objects`` source masks."""
        if len(self.object_ids) != objects:
            raise ValueError(f"stream: {len(self.object_ids)} object ids for {objects} source masks")
        if self.source_versions is not None and len(self.source_versions) != objects:
            raise ValueError(f"stream: {len(self.source_versions)} source versions for {objects} source masks")
        if len(set(self.object_ids)) != len(self.object_ids):
            raise ValueError(f"stream: object ids must be distinct, got {list(self.object_ids)}")


class StreamState:
    """Everything a backend remembers about one stream, owned by the caller.

    ``temporal``: the Temporal VGGT-S memory (:class:`vggts_ros.temporal.TemporalState`) or
    None; ``reuse``: the stream-reuse record (:class:`vggts_ros.stream_reuse.StreamReuse`) or
    None. Thread-safe for a clear from another thread while a set is in inference: a set in
    flight writes to the banks it started with, and :meth:`retain` after it drops whatever it
    wrote for objects that are gone.
    """

    def __init__(self, temporal=None, reuse: Optional["StreamReuse"] = None) -> None:
        self.temporal = temporal
        self.reuse = reuse

    @property
    def empty(self) -> bool:
        """True when the backend keeps nothing between sets (calls are stateless)."""
        return self.temporal is None and self.reuse is None

    def remove_object(self, object_id: Hashable) -> None:
        """Forget everything about one object (it was cleared or its mask replaced)."""
        if self.temporal is not None:
            self.temporal.clear(object_id)
        if self.reuse is not None:
            self.reuse.remove_object(object_id)

    def retain(self, object_ids: Iterable[Hashable]) -> None:
        """Forget every object not in ``object_ids``."""
        keep = set(object_ids)
        if self.temporal is not None:
            self.temporal.retain(keep)
        if self.reuse is not None:
            self.reuse.retain(keep)

    def reset(self) -> None:
        """Forget everything (a new recording, a time jump back)."""
        if self.temporal is not None:
            self.temporal.clear()
        if self.reuse is not None:
            self.reuse.reset()

    def describe(self, object_ids: Optional[Iterable[Hashable]] = None) -> Dict[str, str]:
        """Diagnostics key/values: ``temporal`` (true/false) and, with the memory on, the
        entries and writes since the last reset of each ``<object>/<camera>`` stream
        (of ``object_ids`` only, when given)."""
        values: Dict[str, str] = {"temporal": str(self.temporal is not None).lower()}
        if self.temporal is None:
            return values
        keep = None if object_ids is None else {str(i) for i in object_ids}
        for prefix, table in (("memory_bank_", self.temporal.bank_sizes()),
                              ("memory_writes_", self.temporal.bank_writes())):
            for key, n in table.items():
                if keep is None or key.split("/", 1)[0] in keep:
                    values[prefix + key] = str(n)
        return values


def check_stream(state: Optional[StreamState], step: Optional[StreamStep], objects: int) -> None:
    """The rules of a streamed call: a state needs a step describing the set, a step needs a state."""
    if state is None and step is None:
        return
    if state is None:
        raise ValueError("a StreamStep describes one set of a stream: pass state=segmentor.init_stream() with it")
    if step is None:
        raise ValueError("a stream state needs the set it is used for: pass step=StreamStep(stamp, object_ids)")
    if not isinstance(state, StreamState):
        raise ValueError(f"state must be a StreamState from init_stream(), got {type(state).__name__}")
    step.check(objects)


class StatelessSegmentor:
    """Base of a backend that segments one object at a time and keeps nothing between sets:
    it implements ``segment``; this gives it :meth:`init_stream` and :meth:`segment_objects`
    (the rest of :class:`vggts_ros.types.Segmentor`)."""

    name = "stateless"

    def init_stream(self) -> StreamState:
        """This backend keeps nothing between sets: an empty state (calls stay stateless)."""
        return StreamState()

    def segment_objects(self, source_image, masks, targets, *, state: Optional[StreamState] = None,
                        step: Optional[StreamStep] = None) -> list:
        """Each object's ``segment`` (``result[o][t]``)."""
        import numpy as np

        if isinstance(masks, np.ndarray) and masks.ndim == 2:
            raise ValueError("masks must be a sequence of HxW masks (use segment() for one mask)")
        check_stream(state, step, len(masks))
        return [self.segment(source_image, m, targets) for m in masks]

    def segment(self, source_image, source_mask, targets) -> list:  # pragma: no cover - the subclass's
        raise NotImplementedError
