"""Streaming memory state of Temporal VGGT-S, one bank per (object, target camera).

The pipeline calls :meth:`TemporalState.step` once per synchronised set for every
(object, target camera) it decodes, with the head context of that target. A stream's bank
is emptied when

* the object is cleared (:meth:`TemporalState.clear`),
* its source mask is new or replaced (``source_version`` differs from the last step's),
* the target camera went stale (``stamp`` more than ``stale_after_s`` after the last
  step's, or earlier than it),
* the target image changed size,

so memory never mixes two objects, two source masks or two unrelated moments. With
``enabled=False`` a step is exactly the plain head's decode and the bank is left alone.

:meth:`TemporalState.decode_rows` is the batched form :class:`vggts_ros.pipeline.VGGTSegmentor`
calls (one :class:`StreamRef` per target row); the state is part of the caller's
:class:`vggts_ros.stream.StreamState` (``segmentor.init_stream()``), the memory modules are the
segmentor's (:func:`memory_from_config`).
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Dict, Hashable, Optional, Sequence, Tuple

from torch import Tensor

from .models.temporal import MemoryBank, TemporalConfig, TemporalMemory, load_temporal
from .models.union_head.union_head import HeadContext, UnionSegmentationHead

StreamKey = Tuple[Hashable, str]


@dataclass(frozen=True)
class StreamRef:
    """Where one decoded target sits in its stream: the object, the target camera, the
    set's stamp (s), the version of the object's source mask, the target image size and
    the gap (s) after which the camera counts as stale (None: ``stale_after_s`` of the
    memory's configuration)."""

    object_id: Hashable
    camera: str
    stamp: float
    source_version: Hashable
    size: Tuple[int, int]
    stale_after: Optional[float] = None


def plain_decode(head: UnionSegmentationHead, ctx: HeadContext, refine_iterations: int = 1) -> Tuple[Tensor, Tensor]:
    """The head's own first pass plus refinements (what ``head.predict`` does after encode)."""
    full, low = head.decode(ctx)
    for _ in range(int(refine_iterations)):
        full, low = head.decode(ctx, low)
    return full, low


class TargetStream:
    """Memory of one object seen by one target camera."""

    def __init__(self, module: TemporalMemory) -> None:
        self.module = module
        self.bank: MemoryBank = module.new_bank()
        self.last_stamp: Optional[float] = None
        self.source_version: Optional[Hashable] = None
        self.size: Optional[Tuple[int, int]] = None
        self.resets: Counter = Counter()

    def reset(self, reason: str) -> None:
        if len(self.bank):
            self.resets[reason] += 1
        self.bank.reset()

    def check(self, stamp: float, source_version: Hashable, size: Tuple[int, int],
              stale_after: Optional[float] = None) -> Optional[str]:
        """Reset the bank if this step cannot continue the last one; returns the reason."""
        reason = None
        stale = self.module.cfg.stale_after_s if stale_after is None else float(stale_after)
        if self.source_version is not None and source_version != self.source_version:
            reason = "source"
        elif self.size is not None and tuple(size) != self.size:
            reason = "size"
        elif self.last_stamp is not None and (stamp < self.last_stamp or stamp - self.last_stamp > stale):
            reason = "stale"
        if reason is not None:
            self.reset(reason)
        self.last_stamp = float(stamp)
        self.source_version = source_version
        self.size = (int(size[0]), int(size[1]))
        return reason

    def step(self, head: UnionSegmentationHead, ctx: HeadContext, *, stamp: float, source_version: Hashable,
             size: Tuple[int, int], refine_iterations: int = 1, enabled: bool = True) -> Tuple[Tensor, Tensor]:
        """Decode one target (``ctx`` from ``head.encode``, batch 1) with this stream's
        memory and write the result to it. Returns the head's (full, low-res) logits."""
        if not enabled:
            return plain_decode(head, ctx, refine_iterations)
        self.check(stamp, source_version, size)
        return self.module.decode(head, ctx, self.bank, refine_iterations)


class TemporalState:
    """All streams of one segmentor, keyed ``(object_id, target camera)``."""

    def __init__(self, module: TemporalMemory) -> None:
        self.module = module
        self.streams: Dict[StreamKey, TargetStream] = {}
        # guards the stream table (a node clears it from a service thread while its worker
        # decodes); a decode in flight writes to the banks it started with
        self.lock = threading.RLock()

    def stream(self, object_id: Hashable, camera: str) -> TargetStream:
        key = (object_id, camera)
        with self.lock:
            if key not in self.streams:
                self.streams[key] = TargetStream(self.module)
            return self.streams[key]

    def step(self, object_id: Hashable, camera: str, head: UnionSegmentationHead, ctx: HeadContext, **kwargs):
        """:meth:`TargetStream.step` of the ``(object_id, camera)`` stream (with
        ``enabled=False`` the plain decode, and no stream is created)."""
        if not kwargs.get("enabled", True):
            return plain_decode(head, ctx, kwargs.get("refine_iterations", 1))
        return self.stream(object_id, camera).step(head, ctx, **kwargs)

    def decode_rows(self, head: UnionSegmentationHead, ctx: HeadContext, refs: Sequence[StreamRef],
                    refine_iterations: int = 1, identity: str = "accumulate") -> Tuple[Tensor, Tensor]:
        """Decode a batch of targets (``ctx`` from ``head.encode``, one row per ``refs``
        entry), each row with the memory of its own stream, after resetting the streams
        that cannot continue (:meth:`TargetStream.check`); every row's result is written to
        its stream. Rows whose bank is empty decode exactly as the plain head does."""
        if len(refs) != ctx.tar_feat.shape[0]:
            raise ValueError(f"{len(refs)} stream references for a batch of {ctx.tar_feat.shape[0]} targets")
        if len({(r.object_id, r.camera) for r in refs}) != len(refs):
            raise ValueError("two targets of one batch belong to the same (object, camera) stream")
        with self.lock:
            streams = [self.stream(r.object_id, r.camera) for r in refs]
            for st, r in zip(streams, refs):
                st.check(r.stamp, r.source_version, r.size, r.stale_after)
        return self.module.decode_rows(head, ctx, [st.bank for st in streams], refine_iterations, identity=identity)

    def clear(self, object_id: Optional[Hashable] = None) -> int:
        """Forget one object's streams (all objects when None); returns how many went."""
        with self.lock:
            keys = [k for k in self.streams if object_id is None or k[0] == object_id]
            for k in keys:
                self.streams.pop(k).reset("clear")
        return len(keys)

    def retain(self, object_ids) -> int:
        """Forget the streams of every object not in ``object_ids``; returns how many went."""
        keep = set(object_ids)
        with self.lock:
            gone = {k[0] for k in self.streams if k[0] not in keep}
        return sum(self.clear(o) for o in gone)

    def _per_stream(self, value) -> Dict[str, int]:
        with self.lock:
            items = sorted(self.streams.items(), key=lambda kv: str(kv[0]))
        return {f"{o}/{c}": int(value(s)) for (o, c), s in items}

    def bank_sizes(self) -> Dict[str, int]:
        """Entries per stream, keyed ``"<object>/<camera>"`` (for diagnostics)."""
        return self._per_stream(lambda s: len(s.bank))

    def bank_writes(self) -> Dict[str, int]:
        """Predictions written per stream since its last reset (``"<object>/<camera>"``)."""
        return self._per_stream(lambda s: s.bank.added)


def memory_from_config(temporal: bool, memory_frames: int, weights: Optional[str], head: UnionSegmentationHead,
                       device=None) -> Optional[TemporalMemory]:
    """The memory modules a segmentor runs when ``temporal`` is on (None when off): loaded
    from ``weights`` (a ``temporal.pth``, strictly; its ``memory_frames`` must equal
    ``memory_frames``) or, without weights, fresh modules whose zero gate leaves every output
    identical to the plain head's (no trained temporal weights are published). The banks
    live in each caller's :class:`TemporalState` (``segmentor.init_stream()``)."""
    if not temporal:
        return None
    cfg = TemporalConfig(memory_frames=int(memory_frames)).validate()
    if weights:
        module = load_temporal(weights, head.cfg)
        if module.cfg.memory_frames != cfg.memory_frames:
            raise ValueError(f"temporal weights {weights} were trained with memory_frames "
                             f"{module.cfg.memory_frames}, the configuration asks for {cfg.memory_frames}")
    else:
        module = TemporalMemory.seeded(head.cfg, cfg, seed=0)
    module = module.eval().requires_grad_(False)
    if device is not None:
        module = module.to(device)
    return module
