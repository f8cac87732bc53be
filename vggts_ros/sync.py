"""Approximate-time synchronisation of N camera streams, without ROS.

``ApproximateTimeSync`` groups messages from several cameras by their stamps, in the
spirit of message_filters' ApproximateTime policy, with the robustness the node needs
(a silent camera never stalls the others).

Semantics (deterministic; all times in seconds, stamps are the header stamps):

* Each camera has a queue of at most ``queue_size`` messages, kept sorted by stamp.
  When it overflows, the oldest message is dropped (reason ``"overflow"``).
* A camera is *live* while its last accepted message arrived at most ``stale_after``
  seconds ago on the ``now`` clock (``time.monotonic`` unless ``now`` is passed). A
  camera that never published counts from the first ``add``/``poll`` call.
  With ``stale_periods = k > 0`` the limit follows each camera's own rate: it is
  ``max(stale_after_min, k x period)``, where ``period`` is the larger of the median of
  its last 8 stamp gaps and the median of the 8 matching arrival gaps (so neither a bag
  played slower than recorded nor bursty delivery makes it stale early), measured over
  every message with a usable stamp, late ones included (a slow camera that always
  arrives just after the set still has a rate); until 3 gaps are known (and after the
  camera restarts on a time jump) the fixed ``stale_after`` applies.
  A camera that slows down or stops is thus stale after k periods of its old rate, and
  is live again with its next message. k = 5 (the node's suggested value) rides out a
  few lost frames; the floor ``stale_after_min`` (0.25 s) keeps a scheduling hiccup from
  making a fast camera stale. ``stale_after=None`` turns staleness off altogether.
  Below, "stale limit" means whichever of the two applies.
  ``required`` cameras are always waited for; the other cameras are waited for only
  while live. Stale cameras may still contribute a queued message that fits (and when
  no camera is waited for, the stale ones' queues are grouped as if they were).
* Pivot: among the waited-for cameras (all of which must have a queued message), the
  pivot is the camera whose oldest queued message is the newest; its stamp is ``T``.
  Every queued message older than ``T - slop`` can never be grouped with the pivot
  (nor with anything later) and is dropped (reason ``"unmatched"``).
* Tightest set: the set always contains the pivot message; every other waited-for
  camera contributes either its newest message at or before ``T`` or its oldest one
  after ``T`` (the only useful choices), picked so that the spread (newest minus
  oldest stamp) is smallest, ties going to the earlier messages. The spread never
  exceeds ``slop``.
* When to emit: a camera whose chosen message is before ``T`` and that has nothing
  queued after ``T`` could still send a closer message; the set waits for it unless
  its next stamp is known to be too late to help, i.e. ``newest + bound >= T + spread``
  where ``bound`` is the inter-message lower bound (given per camera, or learned as
  half the smallest of its recent stamp gaps; unknown means wait), or it goes stale.
  ``inter_message_lower_bound=0`` gives the C++ policy's default (always wait for the
  next message).
* On emission the used messages and every older queued message of the same cameras
  are removed (older ones count as ``"unmatched"`` drops). Sets come out with strictly
  increasing ``stamp`` (the newest stamp in the set); a message whose stamp is not newer
  than the last emitted set is dropped on arrival (``"late"``), as are non-finite
  stamps (``"invalid"``) and a second message with a stamp already queued
  (``"duplicate"``). Accepted messages refresh a camera's liveness, and so do late ones
  less than the camera's stale limit older than the last set (a camera that rejoins with the
  stamp of a set just emitted without it is live again for the next one); invalid or
  far-too-old stamps do not, so a camera with a broken clock cannot stall the others.
* A set needs at least ``min_cameras`` messages (default: 2, or 1 for a single
  camera); a pivot that cannot reach that is dropped (``"unmatched"``).
* A live camera that has been in no set for ``max(stale limit, 4 x its frame gap)``
  (its stamps never fall within ``slop`` of the others', e.g. an uncorrected clock
  offset) is no longer waited for (``unmatched_cameras()``); it may still join a set
  with a message that fits, and is waited for again once it does.

Clocks (``jump_threshold``, ``correct_offset_above``):

* Time going back (a looped bag, a simulator reset): a message stamped more than
  ``jump_threshold`` before its camera's newest one restarts that camera (queue, rate
  and delay estimates); if it is also that far before the last set, the whole
  synchroniser restarts (every queue, the last-set watermark) and sets come again as
  soon as the cameras' new stamps match. ``time_jumped()`` does the same for a jump
  signalled from outside (a ROS clock jump callback). Queued messages dropped by a
  restart count as ``"reset"``.
* Each message's delay ``now - stamp`` is kept per camera (last 15); a camera's clock
  offset is its smallest recent delay (latency only adds to it) minus the lower median
  of those over all cameras with at least 5 samples. A message whose delay is more than
  ``jump_threshold`` below the camera's previous one is stamped in the future and is
  dropped on arrival (``"future"``); the third such message in a row is taken as a
  lasting jump forward: accepted, and the camera restarts.
* An offset beyond ``correct_offset_above`` (0 disables) is corrected: that camera's
  stamps are matched as ``stamp + offset``. The applied offset follows the estimate
  when they differ by more than ``slop / 2``; ``SyncSet.stamps`` keep the original
  stamps. Below the threshold stamps are used as they are, since a difference in
  delays can also be transport latency.

Time passing alone can complete a set (a camera going stale): call ``poll(now)``
periodically, e.g. from a timer. All public methods are thread-safe.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

DROP_REASONS = ("overflow", "unmatched", "late", "duplicate", "invalid", "future", "reset")
_DELAYS = 15
_MIN_DELAYS = 5
_FUTURE_STREAK = 3
_MIN_GAPS = 3  # gaps needed before a camera's period counts as known
_EPS = 1e-9


@dataclass(frozen=True)
class SyncSet:
    """One synchronised group: the newest stamp, one message per present camera."""

    stamp: float
    messages: Dict[str, Any]
    stamps: Dict[str, float]
    missing: Tuple[str, ...] = ()

    @property
    def spread(self) -> float:
        return max(self.stamps.values()) - min(self.stamps.values()) if self.stamps else 0.0


@dataclass
class _Camera:
    name: str
    # (matching stamp = original + applied offset, seq, msg, original stamp)
    queue: List[Tuple[float, int, Any, float]] = field(default_factory=list)
    last_arrival: Optional[float] = None
    first_arrival: Optional[float] = None
    last_matched: Optional[float] = None
    newest: Optional[float] = None  # original stamps
    gaps: deque = field(default_factory=lambda: deque(maxlen=8))
    delays: deque = field(default_factory=lambda: deque(maxlen=_DELAYS))
    offset: float = 0.0  # applied to this camera's stamps
    last_delay: Optional[float] = None
    # Rate, from every message with a usable stamp (late ones too): newest stamp seen, its
    # arrival time, and the gaps in stamps and in arrival times between successive ones.
    rate_stamp: Optional[float] = None
    rate_arrival: float = 0.0
    stamp_gaps: deque = field(default_factory=lambda: deque(maxlen=8))
    arrival_gaps: deque = field(default_factory=lambda: deque(maxlen=8))
    future_streak: int = 0
    received: int = 0
    dropped: Dict[str, int] = field(default_factory=lambda: {r: 0 for r in DROP_REASONS})

    def stamps(self) -> List[float]:
        return [item[0] for item in self.queue]

    def restart(self) -> None:
        """Forget what the camera's stamps were like (after its time went back)."""
        self.dropped["reset"] += len(self.queue)
        self.queue.clear()
        self.newest = None
        self.gaps.clear()
        self.delays.clear()
        self.last_delay = None
        self.rate_stamp = None
        self.stamp_gaps.clear()
        self.arrival_gaps.clear()

    def measure_rate(self, stamp: float, now: float) -> None:
        if self.rate_stamp is not None and stamp <= self.rate_stamp:
            return  # out of order: says nothing about the rate
        if self.rate_stamp is not None:
            self.stamp_gaps.append(stamp - self.rate_stamp)
            self.arrival_gaps.append(max(0.0, now - self.rate_arrival))
        self.rate_stamp, self.rate_arrival = stamp, now


class ApproximateTimeSync:
    """Approximate-time synchroniser over named cameras (see the module docstring)."""

    def __init__(
        self,
        cameras: Sequence[str],
        slop: float = 0.05,
        queue_size: int = 10,
        stale_after: Optional[float] = 1.0,
        required: Iterable[str] = (),
        min_cameras: Optional[int] = None,
        inter_message_lower_bound: Union[None, float, Mapping[str, float]] = None,
        clock: Callable[[], float] = time.monotonic,
        jump_threshold: float = 1.0,
        correct_offset_above: float = 0.25,
        stale_periods: float = 0.0,
        stale_after_min: float = 0.25,
    ) -> None:
        names = list(cameras)
        if not names:
            raise ValueError("at least one camera is needed")
        if len(set(names)) != len(names):
            raise ValueError(f"camera names must be unique: {names}")
        if not (slop >= 0 and math.isfinite(slop)):
            raise ValueError(f"slop must be a finite number >= 0, got {slop!r}")
        if int(queue_size) < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size!r}")
        if stale_after is not None and not stale_after > 0:
            raise ValueError(f"stale_after must be > 0 (or None to disable), got {stale_after!r}")
        required = tuple(required)
        unknown = [r for r in required if r not in names]
        if unknown:
            raise ValueError(f"required camera(s) {unknown} are not among {names}")
        if min_cameras is None:
            min_cameras = min(2, len(names))
        if not 1 <= int(min_cameras) <= len(names):
            raise ValueError(f"min_cameras must be in [1, {len(names)}], got {min_cameras!r}")
        bounds: Dict[str, Optional[float]] = {n: None for n in names}
        if isinstance(inter_message_lower_bound, Mapping):
            for key, value in inter_message_lower_bound.items():
                if key not in bounds:
                    raise ValueError(f"inter_message_lower_bound names unknown camera {key!r}")
                bounds[key] = float(value)
        elif inter_message_lower_bound is not None:
            bounds = {n: float(inter_message_lower_bound) for n in names}
        if any(b is not None and b < 0 for b in bounds.values()):
            raise ValueError("inter_message_lower_bound must be >= 0")
        if not (jump_threshold > 0 and math.isfinite(jump_threshold)):
            raise ValueError(f"jump_threshold must be a finite number > 0, got {jump_threshold!r}")
        if not (correct_offset_above >= 0 and math.isfinite(correct_offset_above)):
            raise ValueError(f"correct_offset_above must be a finite number >= 0, got {correct_offset_above!r}")
        if not (stale_periods >= 0 and math.isfinite(stale_periods)):
            raise ValueError(f"stale_periods must be a finite number >= 0 (0: fixed stale_after), "
                             f"got {stale_periods!r}")
        if not (stale_after_min > 0 and math.isfinite(stale_after_min)):
            raise ValueError(f"stale_after_min must be a finite number > 0, got {stale_after_min!r}")

        self.cameras: Tuple[str, ...] = tuple(names)
        self.slop = float(slop)
        self.queue_size = int(queue_size)
        self.stale_after = None if stale_after is None else float(stale_after)
        self.required = required
        self.min_cameras = int(min_cameras)
        self._bounds = bounds
        self._clock = clock
        self.jump_threshold = float(jump_threshold)
        self.correct_offset_above = float(correct_offset_above)
        self.stale_periods = float(stale_periods)
        self.stale_after_min = float(stale_after_min)
        self._lock = threading.RLock()
        self._seq = 0
        self.reset()

    @classmethod
    def from_config(cls, sync, cameras: Sequence, **kwargs) -> "ApproximateTimeSync":
        """The synchroniser of a :class:`vggts_ros.config.SyncConfig` over ``cameras``
        (:class:`vggts_ros.config.CameraConfig`: their names, and which are required); the
        one constructor the node and ``vggts replay`` share. ``kwargs``: e.g. ``clock``."""
        names = [c.name for c in cameras]
        return cls(names, slop=sync.slop, queue_size=sync.queue_size, stale_after=sync.stale_after,
                   required=[c.name for c in cameras if getattr(c, "required", False)],
                   min_cameras=min(sync.min_cameras, len(names)), jump_threshold=sync.jump_threshold,
                   correct_offset_above=sync.correct_offset_above, stale_periods=sync.stale_periods,
                   stale_after_min=sync.stale_after_min, **kwargs)

    def configure_from(self, sync) -> None:
        """:meth:`configure` with every setting of a :class:`vggts_ros.config.SyncConfig`."""
        self.configure(slop=sync.slop, queue_size=sync.queue_size, stale_after=sync.stale_after,
                       min_cameras=min(sync.min_cameras, len(self.cameras)), jump_threshold=sync.jump_threshold,
                       correct_offset_above=sync.correct_offset_above, stale_periods=sync.stale_periods,
                       stale_after_min=sync.stale_after_min)

    # ------------------------------------------------------------------ public API
    def reset(self) -> None:
        """Forget every queued message, liveness and counter."""
        with self._lock:
            self._cams = {n: _Camera(n) for n in self.cameras}
            self._start: Optional[float] = None
            self._watermark = -math.inf
            self.emitted = 0
            self.resets = 0

    def configure(self, slop: Optional[float] = None, queue_size: Optional[int] = None,
                  stale_after: Optional[float] = None, min_cameras: Optional[int] = None,
                  jump_threshold: Optional[float] = None, correct_offset_above: Optional[float] = None,
                  stale_periods: Optional[float] = None, stale_after_min: Optional[float] = None) -> None:
        """Change settings while running (None keeps one, ``stale_periods=0`` turns the
        rate-following limit off); queued messages and measured rates are kept."""
        checks = {
            "slop": (slop, lambda v: v >= 0 and math.isfinite(v)),
            "queue_size": (queue_size, lambda v: int(v) >= 1),
            "stale_after": (stale_after, lambda v: v > 0),
            "min_cameras": (min_cameras, lambda v: 1 <= int(v) <= len(self.cameras)),
            "jump_threshold": (jump_threshold, lambda v: v > 0 and math.isfinite(v)),
            "correct_offset_above": (correct_offset_above, lambda v: v >= 0 and math.isfinite(v)),
            "stale_periods": (stale_periods, lambda v: v >= 0 and math.isfinite(v)),
            "stale_after_min": (stale_after_min, lambda v: v > 0 and math.isfinite(v)),
        }
        for name, (value, ok) in checks.items():
            if value is not None and not ok(value):
                raise ValueError(f"{name}: invalid value {value!r}")
        with self._lock:
            if slop is not None:
                self.slop = float(slop)
            if queue_size is not None:
                self.queue_size = int(queue_size)
            if stale_after is not None:
                self.stale_after = float(stale_after)
            if min_cameras is not None:
                self.min_cameras = int(min_cameras)
            if jump_threshold is not None:
                self.jump_threshold = float(jump_threshold)
            if correct_offset_above is not None:
                self.correct_offset_above = float(correct_offset_above)
            if stale_periods is not None:
                self.stale_periods = float(stale_periods)
            if stale_after_min is not None:
                self.stale_after_min = float(stale_after_min)

    def time_jumped(self) -> None:
        """Time went back (signalled from outside): drop every queued message and the
        last-set watermark, keep counters and liveness."""
        with self._lock:
            self._restart_all()

    def add(self, camera: str, stamp: float, msg: Any, now: Optional[float] = None) -> List[SyncSet]:
        """Queue one message and return the sets it completes (possibly none)."""
        with self._lock:
            cam = self._cams.get(camera)
            if cam is None:
                raise ValueError(f"unknown camera {camera!r}; expected one of {list(self.cameras)}")
            now = self._now(now)
            cam.received += 1
            if self._is_stale(cam, now):  # back from silence: patience starts again
                cam.first_arrival, cam.last_matched = None, None
            try:
                raw = float(stamp)
            except (TypeError, ValueError):
                raw = math.nan
            if not math.isfinite(raw):
                cam.dropped["invalid"] += 1
                return self._drain(now)
            if cam.newest is not None and raw < cam.newest - self.jump_threshold:
                # This camera's time went back; past the last set too: everyone's did.
                went_past = raw + cam.offset < self._watermark - self.jump_threshold
                cam.restart()
                if went_past:
                    self._restart_all()
            delay = now - raw
            if cam.last_delay is not None and delay < cam.last_delay - self.jump_threshold:
                cam.future_streak += 1
                if cam.future_streak < _FUTURE_STREAK:
                    cam.dropped["future"] += 1
                    return self._drain(now)
                cam.restart()  # a lasting jump forward: the camera's clock was set
            cam.future_streak = 0
            cam.last_delay = delay
            cam.delays.append(delay)
            cam.measure_rate(raw, now)
            self._update_offsets()
            stamp = raw + cam.offset
            if stamp <= self._watermark:
                cam.dropped["late"] += 1
                # Lost this round but still in step with the others: it counts as live.
                limit = self._stale_limit(cam)
                if limit is None or stamp > self._watermark - limit:
                    cam.last_arrival = now
                    if cam.first_arrival is None:
                        cam.first_arrival = now
                return self._drain(now)
            stamps = cam.stamps()
            pos = bisect.bisect_left(stamps, stamp)
            if pos < len(stamps) and stamps[pos] == stamp:
                cam.dropped["duplicate"] += 1
                cam.last_arrival = now
                return self._drain(now)
            self._seq += 1
            cam.queue.insert(pos, (stamp, self._seq, msg, raw))
            if cam.newest is not None and raw > cam.newest:
                cam.gaps.append(raw - cam.newest)
            cam.newest = raw if cam.newest is None else max(cam.newest, raw)
            cam.last_arrival = now
            if cam.first_arrival is None:
                cam.first_arrival = now
            while len(cam.queue) > self.queue_size:
                cam.queue.pop(0)
                cam.dropped["overflow"] += 1
            return self._drain(now)

    def poll(self, now: Optional[float] = None) -> List[SyncSet]:
        """Return sets completed by time passing (cameras that went stale)."""
        with self._lock:
            return self._drain(self._now(now))

    def stale_cameras(self, now: Optional[float] = None) -> Tuple[str, ...]:
        """Cameras with no accepted message for longer than their stale limit."""
        with self._lock:
            now = self._now(now)
            return tuple(n for n in self.cameras if self._is_stale(self._cams[n], now))

    def stale_limits(self) -> Dict[str, Optional[float]]:
        """Seconds of silence after which each camera is stale now (None: never)."""
        with self._lock:
            return {n: self._stale_limit(c) for n, c in self._cams.items()}

    def unmatched_cameras(self, now: Optional[float] = None) -> Tuple[str, ...]:
        """Live cameras no longer waited for because none of their messages made a set."""
        with self._lock:
            now = self._now(now)
            return tuple(n for n in self.cameras if self._is_unmatched(self._cams[n], now))

    def clock_offsets(self) -> Dict[str, Optional[float]]:
        """Estimated clock offset per camera (s; None until 5 messages arrived)."""
        with self._lock:
            return self._estimates()

    def applied_offsets(self) -> Dict[str, float]:
        """Offset added to each camera's stamps for matching (0 unless corrected)."""
        with self._lock:
            return {n: c.offset for n, c in self._cams.items()}

    @property
    def dropped(self) -> Dict[str, int]:
        """Dropped messages per camera (all reasons)."""
        with self._lock:
            return {n: sum(c.dropped.values()) for n, c in self._cams.items()}

    def stats(self) -> Dict[str, Any]:
        """Counters for diagnostics: emitted sets, per-camera received/dropped/queued."""
        with self._lock:
            return {
                "emitted": self.emitted,
                "received": {n: c.received for n, c in self._cams.items()},
                "queued": {n: len(c.queue) for n, c in self._cams.items()},
                "dropped": {n: sum(c.dropped.values()) for n, c in self._cams.items()},
                "dropped_by_reason": {n: dict(c.dropped) for n, c in self._cams.items()},
                "last_stamp": None if self._watermark == -math.inf else self._watermark,
                "resets": self.resets,
                "clock_offsets": self._estimates(),
                "applied_offsets": {n: c.offset for n, c in self._cams.items()},
            }

    # ------------------------------------------------------------------ internals
    def _now(self, now: Optional[float]) -> float:
        now = self._clock() if now is None else float(now)
        if self._start is None:
            self._start = now
        return now

    def _stale_limit(self, cam: _Camera) -> Optional[float]:
        """The fixed ``stale_after``, or k periods of the camera's measured rate."""
        if self.stale_after is None or self.stale_periods <= 0:
            return self.stale_after
        if len(cam.stamp_gaps) < _MIN_GAPS:
            return self.stale_after  # rate not known yet
        period = max(_median(cam.stamp_gaps), _median(cam.arrival_gaps))
        return max(self.stale_after_min, self.stale_periods * period)

    def _is_stale(self, cam: _Camera, now: float) -> bool:
        limit = self._stale_limit(cam)
        if limit is None:
            return False
        seen = cam.last_arrival if cam.last_arrival is not None else self._start
        return seen is not None and now - seen > limit

    def _is_unmatched(self, cam: _Camera, now: float) -> bool:
        limit = self._stale_limit(cam)
        if limit is None or cam.first_arrival is None or self._is_stale(cam, now):
            return False
        since = cam.last_matched if cam.last_matched is not None else cam.first_arrival
        patience = max(limit, 4 * max(cam.gaps)) if cam.gaps else limit
        return now - since > patience

    def _restart_all(self) -> None:
        for cam in self._cams.values():
            cam.dropped["reset"] += len(cam.queue)
            cam.queue.clear()
            cam.last_matched = None
            cam.first_arrival = cam.last_arrival
        self._watermark = -math.inf
        self.resets += 1

    def _estimates(self) -> Dict[str, Optional[float]]:
        # The smallest recent delay: latency only ever adds to it (backlogs, scheduling).
        medians = {n: min(c.delays) for n, c in self._cams.items() if len(c.delays) >= _MIN_DELAYS}
        if not medians:
            return {n: None for n in self.cameras}
        ordered = sorted(medians.values())
        reference = ordered[(len(ordered) - 1) // 2]
        return {n: (medians[n] - reference if n in medians else None) for n in self.cameras}

    def _update_offsets(self) -> None:
        if self.correct_offset_above <= 0:
            return
        for name, estimate in self._estimates().items():
            cam = self._cams[name]
            if estimate is None:
                continue
            target = estimate if abs(estimate) > self.correct_offset_above else 0.0
            if target == 0.0 and cam.offset == 0.0 or abs(target - cam.offset) <= self.slop / 2:
                continue
            delta = target - cam.offset
            cam.offset = target
            cam.queue = sorted((m + delta, seq, msg, raw) for m, seq, msg, raw in cam.queue)

    def _bound(self, cam: _Camera) -> Optional[float]:
        given = self._bounds[cam.name]
        if given is not None:
            return given
        return 0.5 * min(cam.gaps) if cam.gaps else None

    def _drop_front(self, cam: _Camera, limit: float, inclusive: bool) -> None:
        while cam.queue and (cam.queue[0][0] <= limit if inclusive else cam.queue[0][0] < limit):
            cam.queue.pop(0)
            cam.dropped["unmatched"] += 1

    def _drain(self, now: float) -> List[SyncSet]:
        out: List[SyncSet] = []
        while True:
            result = self._step(now)
            if result is None:
                return out
            if isinstance(result, SyncSet):
                out.append(result)

    def _step(self, now: float):
        """One decision: a SyncSet, True (state changed, look again) or None (wait)."""
        waited = [n for n in self.cameras if n in self.required
                  or not (self._is_stale(self._cams[n], now) or self._is_unmatched(self._cams[n], now))]
        optional = [n for n in self.cameras if n not in waited and self._cams[n].queue]
        if not waited:  # everyone is silent: group what is left, nothing more will come
            waited, optional = optional, []
        if not waited or len(waited) + len(optional) < self.min_cameras:
            return None
        if any(not self._cams[n].queue for n in waited):
            return None
        heads = {n: self._cams[n].queue[0][0] for n in waited}
        pivot = max(waited, key=lambda n: (heads[n], -self.cameras.index(n)))
        t = heads[pivot]
        # Nothing older than T - slop can join this or any later set.
        changed = False
        for n in waited + optional:
            before = len(self._cams[n].queue)
            self._drop_front(self._cams[n], t - self.slop - _EPS, inclusive=False)
            changed |= len(self._cams[n].queue) != before
        if changed:
            return True

        # Candidates per waited-for camera: newest <= T and oldest > T.
        pred: Dict[str, float] = {}
        succ: Dict[str, Optional[float]] = {}
        for n in waited:
            stamps = self._cams[n].stamps()
            i = bisect.bisect_right(stamps, t)
            pred[n] = stamps[i - 1]
            succ[n] = stamps[i] if i < len(stamps) and n != pivot else None
        best = None  # (spread, b)
        for b in [0.0] + sorted(s - t for s in succ.values() if s is not None):
            if b > self.slop + _EPS:
                break
            a = max([t - pred[n] for n in waited if not (succ[n] is not None and succ[n] - t <= b)] + [0.0])
            if best is None or a + b < best[0] - _EPS:
                best = (a + b, b)
        spread, b = best
        chosen = {
            n: (succ[n] if succ[n] is not None and succ[n] - t <= b else pred[n]) for n in waited
        }
        # Could a message still to come make the set tighter?
        for n in waited:
            if n == pivot or chosen[n] >= t or succ[n] is not None or spread <= _EPS:
                continue
            if self._is_stale(self._cams[n], now):
                continue  # a stale required camera: keep its message, do not wait for more
            bound = self._bound(self._cams[n])
            if bound is None or self._cams[n].newest + bound < t + spread - _EPS:
                return None
        lo, hi = min(chosen.values()), max(chosen.values())
        # Stale cameras join with their message nearest to T if it keeps the spread.
        for n in optional:
            stamps = self._cams[n].stamps()
            fits = [s for s in stamps if s >= hi - self.slop - _EPS and s <= lo + self.slop + _EPS]
            if fits:
                s = min(fits, key=lambda s: (abs(s - t), s))
                chosen[n] = s
                lo, hi = min(lo, s), max(hi, s)
        if len(chosen) < self.min_cameras:
            self._cams[pivot].queue.pop(0)
            self._cams[pivot].dropped["unmatched"] += 1
            return True
        messages, stamps, matched = {}, {}, {}
        for n in self.cameras:
            if n not in chosen:
                continue
            cam = self._cams[n]
            idx = cam.stamps().index(chosen[n])
            stamp, _, msg, raw = cam.queue.pop(idx)
            messages[n], stamps[n], matched[n] = msg, raw, stamp
            cam.last_matched = now
            self._drop_front(cam, stamp, inclusive=True)
        self._watermark = max(matched.values())
        for cam in self._cams.values():
            self._drop_front(cam, self._watermark, inclusive=True)
        self.emitted += 1
        missing = tuple(n for n in self.cameras if n not in messages)
        return SyncSet(stamp=self._watermark, messages=messages, stamps=stamps, missing=missing)


def _median(values) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])
