"""What the node's diagnostics say, computed without ROS.

Rates are counted over a sliding window (``RateWindow``), so they fall to zero when a
stream stalls instead of keeping their last value. ``Health.assess`` turns the counters
into a level and a message:

* ERROR when objects are set but nothing was published for longer than the stall
  timeout (``max(2 x diagnostics period, 3 x the median of the last 10 sets)`` unless given),
  or when no camera has sent anything for ``stale_after``;
* WARN when a camera is stale, matches nothing, or had frames rejected, or a set
  failed, within the window;
* OK otherwise.

``Throttle`` rate-limits repeated log lines per key. All times are on one monotonic
clock given by the caller (never ROS time, so this works with ``use_sim_time`` and no
``/clock``).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Deque, Dict, Iterable, List, Optional, Tuple

OK, WARN, ERROR = 0, 1, 2


class RateWindow:
    """Events per second over the last ``window`` seconds."""

    def __init__(self, window: float = 5.0, maxlen: int = 10000) -> None:
        self.window = float(window)
        self._times: Deque[float] = deque(maxlen=maxlen)
        self.total = 0
        self.last: Optional[float] = None

    def add(self, now: float) -> None:
        self._times.append(now)
        self.total += 1
        self.last = now

    def rate(self, now: float) -> float:
        while self._times and self._times[0] < now - self.window:
            self._times.popleft()
        return len(self._times) / self.window

    def count(self, now: float) -> int:
        self.rate(now)
        return len(self._times)


class Throttle:
    """``ready(key, now)`` is true at most once per ``period`` for each key."""

    def __init__(self, period: float = 5.0) -> None:
        self.period = float(period)
        self._last: Dict[str, float] = {}
        self.suppressed: Dict[str, int] = {}
        self._lock = threading.Lock()

    def ready(self, key: str, now: float) -> bool:
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.period:
                self.suppressed[key] = self.suppressed.get(key, 0) + 1
                return False
            self._last[key] = now
            return True

    def take_suppressed(self, key: str) -> int:
        """How many were suppressed since the last time this was asked (for '(+N more)')."""
        with self._lock:
            return self.suppressed.pop(key, 0)

    def say(self, key: str, now: float, emit, message: str, force: bool = False) -> bool:
        """``emit(message)`` unless said for ``key`` less than a period ago (``force``: say it
        anyway), with ``(+N more)`` for those suppressed since. True if it was said."""
        if not (self.ready(key, now) or force):
            return False
        more = self.take_suppressed(key)
        emit(message + (f" (+{more} more)" if more else ""))
        return True


@dataclass
class CameraHealth:
    frames: RateWindow
    rejected: RateWindow
    delays: Deque[float] = field(default_factory=lambda: deque(maxlen=50))
    last_reject: str = ""


class Health:
    """Counters the node updates as things happen; ``assess`` reads them."""

    def __init__(self, cameras: Iterable[str], window: float = 5.0, start: float = 0.0) -> None:
        self.window = float(window)
        self.start = start
        self._lock = threading.Lock()
        self.cameras: Dict[str, CameraHealth] = {c: CameraHealth(RateWindow(window), RateWindow(window))
                                                 for c in cameras}
        self.sets = RateWindow(window)
        self.outputs = RateWindow(window)
        self.failures = RateWindow(window)
        self.stale_discarded = 0
        self.replaced = 0
        self.last_error = ""
        self.set_seconds: Deque[float] = deque(maxlen=10)
        self.expect_since: Optional[float] = None  # objects were set at this time (None: no objects)

    # -- events ------------------------------------------------------------------------
    def frame(self, camera: str, now: float, stamp_delay: Optional[float]) -> None:
        with self._lock:
            cam = self.cameras[camera]
            cam.frames.add(now)
            if stamp_delay is not None:
                cam.delays.append(stamp_delay)

    def rejected(self, camera: str, now: float, reason: str) -> bool:
        """Count a rejected frame; true when the reason differs from the last one."""
        with self._lock:
            cam = self.cameras[camera]
            cam.rejected.add(now)
            changed = reason != cam.last_reject
            cam.last_reject = reason
            return changed

    def set_received(self, now: float) -> None:
        with self._lock:
            self.sets.add(now)

    def output(self, now: float, seconds: float) -> None:
        with self._lock:
            self.outputs.add(now)
            self.set_seconds.append(seconds)

    def failure(self, now: float, error: str) -> None:
        with self._lock:
            self.failures.add(now)
            self.last_error = error

    def objects_changed(self, count: int, now: float) -> None:
        """Outputs are expected from ``now`` on while objects are set."""
        with self._lock:
            self.expect_since = now if count else None

    # -- reading -----------------------------------------------------------------------
    def stall_timeout(self, diagnostics_period: float, given: float = 0.0) -> float:
        if given > 0:
            return given
        with self._lock:
            ordered = sorted(self.set_seconds)
        typical = ordered[len(ordered) // 2] if ordered else 0.0  # one slow warm-up set does not count
        return max(2.0 * diagnostics_period, 3.0 * typical)

    def since_output(self, now: float) -> Optional[float]:
        with self._lock:
            return None if self.outputs.last is None else now - self.outputs.last

    def camera_values(self, camera: str, now: float) -> Dict[str, str]:
        with self._lock:
            cam = self.cameras[camera]
            delays = sorted(cam.delays)
            return {
                "rate_hz": f"{cam.frames.rate(now):.2f}",
                "received": str(cam.frames.total),
                "stamp_delay_ms": f"{1000 * delays[len(delays) // 2]:.1f}" if delays else "",
                "frames_rejected": str(cam.rejected.total),
                "frames_rejected_recent": str(cam.rejected.count(now)),
                "last_reject_reason": cam.last_reject,
            }

    def assess(self, now: float, stale: Tuple[str, ...], unmatched: Tuple[str, ...], diagnostics_period: float,
               stall_timeout: float = 0.0) -> Tuple[int, str]:
        """The pipeline's level and a one-line message naming what is wrong."""
        problems: List[Tuple[int, str]] = []
        timeout = self.stall_timeout(diagnostics_period, stall_timeout)
        with self._lock:
            expect_since = self.expect_since
            last_out = self.outputs.last
            recent_failures = self.failures.count(now)
            last_error = self.last_error
            rejected = [c for c, h in self.cameras.items() if h.rejected.count(now)]
            total_frames = sum(h.frames.total for h in self.cameras.values())
        if len(stale) == len(self.cameras):
            what = "no camera has published yet" if total_frames == 0 else "no camera publishes"
            problems.append((ERROR, f"{what} (stale: {', '.join(stale)})"))
        if expect_since is not None:
            since = now - max(expect_since, last_out if last_out is not None else expect_since)
            if since > timeout:
                why = f"; last error: {last_error}" if recent_failures else ""
                problems.append((ERROR, f"no output for {since:.1f} s (stall timeout {timeout:.1f} s){why}"))
        if stale and len(stale) < len(self.cameras):
            problems.append((WARN, f"stale camera(s): {', '.join(stale)}"))
        if unmatched:
            problems.append((WARN, f"camera(s) matching no other camera's stamps: {', '.join(unmatched)}"))
        if rejected:
            problems.append((WARN, f"frames rejected recently: {', '.join(rejected)}"))
        if recent_failures:
            problems.append((WARN, f"{recent_failures} failed set(s) in the last {self.window:g} s: {last_error}"))
        if not problems:
            return OK, "ok"
        level = max(p[0] for p in problems)
        return level, "; ".join(m for _, m in sorted(problems, key=lambda p: -p[0]))


class CameraEvents:
    """Turns per-camera states seen over time into the events worth one log line each: a
    camera that went stale, rejoined, or changed its frame size (no ROS)."""

    def __init__(self) -> None:
        self._stale: set = set()
        self._changes: Dict[str, int] = {}

    def update(self, stale: Iterable[str], size_changes: Dict[str, int], sizes: Dict[str, Optional[tuple]],
               limits: Dict[str, Optional[float]]) -> List[Tuple[str, str]]:
        """``(level, message)`` per change since the last call (WARN: stale, INFO: rejoined or
        a new frame size accepted)."""
        stale = set(stale)
        out: List[Tuple[str, str]] = []
        for cam in sorted(stale - self._stale):
            limit = limits.get(cam)
            out.append((WARN, f"camera {cam!r} went stale: no frame matched for "
                              f"{'' if limit is None else f'{limit:.2f} s '}(sync.stale_after); sets go on without it"))
        for cam in sorted(self._stale - stale):
            out.append((OK, f"camera {cam!r} rejoined the synchronised sets"))
        for cam, n in sorted(size_changes.items()):
            if n > self._changes.get(cam, 0):
                size = sizes.get(cam)
                shown = f" to {size[1]}x{size[0]}" if size else ""
                out.append((OK, f"camera {cam!r} changed its frame size{shown}; frames of the new size are used"))
        self._stale = stale
        self._changes = dict(size_changes)
        return out
