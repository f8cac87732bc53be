"""One camera's depth stream, kept briefly and matched to the colour frames of the sets.

A registered depth camera publishes its depth images next to (not together with) its
colour images; a set is processed some time after its colour frames arrived (behind a
set in inference, and for as long as the model takes). A :class:`DepthStream` keeps the
last ``keep`` seconds of depth messages (by stamp, at most ``capacity`` of them; the
messages are decoded only when matched), plus those near the stamps of the sets waiting
for inference (:meth:`DepthStream.hold`: the last two handed over; a newer one replaces a
waiting one, as the inference thread does) and in inference (:meth:`DepthStream.begin`,
until matched), whatever their age, and gives, for a colour frame's stamp, the depth
image whose stamp is nearest within ``slop`` seconds (:meth:`DepthStream.match`). A
missing match is never filled in with an older image: a stream that stopped, or a set
older than what is kept, gets no depth and a reason that says which. Thread-safe: a subscription callback adds while the inference thread matches
(and may wait briefly for a depth image that is still on its way).

Counters for diagnostics (:meth:`DepthStream.values`): images received, their rate,
sets matched and missed, the last reason a set got no depth.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple


@dataclass
class DepthMatch:
    """The depth message matched to a colour frame (``message`` None: no match, ``reason`` says why)."""

    message: Any = None
    stamp: float = 0.0
    reason: str = ""


class DepthStream:
    """See the module docstring. ``topic`` is only for messages; ``clock`` gives arrival times (s)."""

    def __init__(self, topic: str = "", *, keep: float = 2.0, capacity: int = 90, holds: int = 2,
                 clock: Callable[[], float] = time.monotonic, rate_window: float = 5.0) -> None:
        if keep <= 0 or capacity < 1:
            raise ValueError(f"a depth stream keeps > 0 s and >= 1 image, got keep={keep}, capacity={capacity}")
        self.topic = topic
        self.keep = float(keep)
        self.capacity = int(capacity)
        self.clock = clock
        self.rate_window = float(rate_window)
        self._cond = threading.Condition()
        self._stamps: List[float] = []  # sorted
        self._messages: List[Any] = []
        self._arrivals: Deque[float] = deque()
        self._held: Deque[Tuple[float, float]] = deque(maxlen=max(1, int(holds)))  # (stamp, slop): sets waiting
        self._active: List[Tuple[float, float]] = []  # (stamp, slop): sets in inference
        self._dropped_upto = float("-inf")  # newest stamp evicted so far
        self.received = 0
        self.matched = 0
        self.missed = 0
        self.last_reason = ""  # why the last set without depth had none (kept after a later match)
        self.last_ok: Optional[bool] = None  # whether the last set got usable depth
        self.last_arrival: Optional[float] = None

    # ------------------------------------------------------------------ input
    def add(self, stamp: float, message: Any) -> None:
        """A depth image arrived (``stamp``: its header stamp, s)."""
        now = self.clock()
        with self._cond:
            i = bisect.bisect_right(self._stamps, stamp)
            if i > 0 and self._stamps[i - 1] == stamp:  # the same stamp again: the newer message wins
                self._messages[i - 1] = message
            else:
                self._stamps.insert(i, stamp)
                self._messages.insert(i, message)
            self._evict()
            self.received += 1
            self.last_arrival = now
            self._arrivals.append(now)
            while self._arrivals and self._arrivals[0] < now - self.rate_window:
                self._arrivals.popleft()
            self._cond.notify_all()

    def _evict(self) -> None:
        newest = self._stamps[-1]
        drop = max(bisect.bisect_left(self._stamps, newest - self.keep), len(self._stamps) - self.capacity)
        if drop <= 0:
            return
        pinned = list(self._held) + self._active
        keep = [i for i in range(drop) if any(abs(self._stamps[i] - s) <= slop for s, slop in pinned)]
        gone = [self._stamps[i] for i in range(drop) if i not in keep]
        if gone:
            self._dropped_upto = max(self._dropped_upto, gone[-1])
        self._stamps = [self._stamps[i] for i in keep] + self._stamps[drop:]
        self._messages = [self._messages[i] for i in keep] + self._messages[drop:]

    def hold(self, stamp: float, slop: float) -> None:
        """A set with a colour frame at ``stamp`` waits for inference: keep the depth images
        within ``slop`` of it (present or still to come). Only the last ``holds`` waiting sets
        are held (a newer set replaces a waiting one in the inference thread)."""
        with self._cond:
            self._held.append((float(stamp), float(slop)))

    def begin(self, stamp: float, slop: float) -> None:
        """The set at ``stamp`` is in inference: its depth images are kept until it is matched."""
        with self._cond:
            self._active.append((float(stamp), float(slop)))
            del self._active[:-8]  # a bound, should a set never be matched (inference failed)

    def reset(self) -> None:
        """Forget the kept images (a time jump back: their stamps no longer compare)."""
        with self._cond:
            self._stamps.clear()
            self._messages.clear()
            self._held.clear()
            self._active.clear()
            self._dropped_upto = float("-inf")

    # ------------------------------------------------------------------ matching
    def _nearest(self, stamp: float) -> Optional[int]:
        if not self._stamps:
            return None
        i = bisect.bisect_left(self._stamps, stamp)
        near = [j for j in (i - 1, i) if 0 <= j < len(self._stamps)]
        return min(near, key=lambda j: (abs(self._stamps[j] - stamp), -j))

    def match(self, stamp: float, slop: float, wait: float = 0.0) -> DepthMatch:
        """The depth message nearest to ``stamp`` within ``slop`` s. While every kept image
        is older than ``stamp`` (the matching one may still be on its way) wait up to
        ``wait`` s for a newer one."""
        deadline = self.clock() + max(0.0, wait)
        with self._cond:
            while wait > 0 and (not self._stamps or self._stamps[-1] < stamp):
                left = deadline - self.clock()
                if left <= 0:
                    break
                self._cond.wait(left)
            self._active = [(s, sl) for s, sl in self._active if abs(s - stamp) > max(sl, slop)]
            j = self._nearest(stamp)
            if j is not None and abs(self._stamps[j] - stamp) <= slop:
                self.matched += 1
                self.last_ok = True
                return DepthMatch(self._messages[j], self._stamps[j])
            reason = self._why_none(stamp, slop, j)
            self.missed += 1
            self.last_reason, self.last_ok = reason, False
            return DepthMatch(None, 0.0, reason)

    def unusable(self, reason: str) -> None:
        """The matched image could not be used (its encoding, size or readings): counted as missed."""
        with self._cond:
            self.matched -= 1
            self.missed += 1
            self.last_reason, self.last_ok = reason, False

    def _why_none(self, stamp: float, slop: float, j: Optional[int]) -> str:
        where = f" on {self.topic}" if self.topic else ""
        if self.received == 0:
            return f"no depth image received{where}"
        if j is None:
            return f"no depth image kept{where}"
        nearest = self._stamps[j]
        newest = self._stamps[-1]
        if newest < stamp - slop:
            since = "" if self.last_arrival is None else \
                f", the last one arrived {self.clock() - self.last_arrival:.1f} s ago"
            return (f"no depth image within {slop:g} s of the colour frame at {stamp:.3f} s{where}: the newest is "
                    f"{stamp - newest:.3f} s older (the depth stream stopped or lags{since})")
        if stamp - slop <= self._dropped_upto:
            return (f"no depth image within {slop:g} s of the colour frame at {stamp:.3f} s{where}: it was dropped "
                    f"(the set is older than the {self.keep:g} s of depth kept, and was not held for inference)")
        if self._stamps[0] > stamp + slop:
            return (f"no depth image within {slop:g} s of the colour frame at {stamp:.3f} s{where}: none arrived "
                    f"for that time (the first after it is {self._stamps[0] - stamp:.3f} s later)")
        return (f"no depth image within {slop:g} s of the colour frame at {stamp:.3f} s{where} (nearest "
                f"{nearest - stamp:+.3f} s): depth and colour stamps differ (not registered or not synchronised?)")

    # ------------------------------------------------------------------ diagnostics
    def rate(self) -> float:
        """Depth images per second over the last ``rate_window`` s."""
        now = self.clock()
        with self._cond:
            recent = [t for t in self._arrivals if t >= now - self.rate_window]
        if len(recent) < 2:
            return 0.0
        span = max(recent[-1] - recent[0], 1e-9)
        return (len(recent) - 1) / span if now - recent[-1] < self.rate_window else 0.0

    def values(self) -> Dict[str, str]:
        """Diagnostics key/values (prefixed ``depth_``)."""
        since = "" if self.last_arrival is None else f"{self.clock() - self.last_arrival:.2f}"
        return {"depth_topic": self.topic, "depth_rate_hz": f"{self.rate():.2f}", "depth_received": str(self.received),
                "depth_since_last_s": since, "depth_sets_matched": str(self.matched),
                "depth_sets_missed": str(self.missed), "depth_last_reason": self.last_reason,
                "depth_ok": "" if self.last_ok is None else str(self.last_ok).lower()}

    def kept(self) -> Tuple[float, ...]:
        with self._cond:
            return tuple(self._stamps)
