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
"""

from __future__ import annotations

from collections import Counter
from typing import Dict, Hashable, Optional, Tuple

from torch import Tensor

from .models.temporal import MemoryBank, TemporalMemory
from .models.union_head.union_head import HeadContext, UnionSegmentationHead

StreamKey = Tuple[Hashable, str]


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

    def check(self, stamp: float, source_version: Hashable, size: Tuple[int, int]) -> Optional[str]:
        """Reset the bank if this step cannot continue the last one; returns the reason."""
        reason = None
        stale = self.module.cfg.stale_after_s
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

    def stream(self, object_id: Hashable, camera: str) -> TargetStream:
        key = (object_id, camera)
        if key not in self.streams:
            self.streams[key] = TargetStream(self.module)
        return self.streams[key]

    def step(self, object_id: Hashable, camera: str, head: UnionSegmentationHead, ctx: HeadContext, **kwargs):
        """:meth:`TargetStream.step` of the ``(object_id, camera)`` stream (with
        ``enabled=False`` the plain decode, and no stream is created)."""
        if not kwargs.get("enabled", True):
            return plain_decode(head, ctx, kwargs.get("refine_iterations", 1))
        return self.stream(object_id, camera).step(head, ctx, **kwargs)

    def clear(self, object_id: Optional[Hashable] = None) -> int:
        """Forget one object's streams (all objects when None); returns how many went."""
        keys = [k for k in self.streams if object_id is None or k[0] == object_id]
        for k in keys:
            self.streams.pop(k).reset("clear")
        return len(keys)

    def bank_sizes(self) -> Dict[str, int]:
        """Entries per stream, keyed ``"<object>/<camera>"`` (for diagnostics)."""
        return {f"{o}/{c}": len(s.bank) for (o, c), s in sorted(self.streams.items(), key=lambda kv: str(kv[0]))}
