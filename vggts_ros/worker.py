"""The inference thread of a streaming node: always the newest set, never a queue (no ROS).

Sets arrive faster than a model can process them. :class:`LatestWorker` keeps one slot: a
set submitted while another waits replaces it (counted in ``replaced``), so the latency
stays bounded by one set's processing time. ``max_rate`` (sets per second, 0 = no limit)
spaces the starts. A set that raises is reported through ``on_error`` and the thread goes
on with the next one. :meth:`stop` lets the set in progress finish.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional, Tuple


class _Thread:
    """A daemon thread running ``_loop`` with a condition to wake it, stopped by :meth:`stop`."""

    def __init__(self, process, on_error, name: str) -> None:
        self._process = process
        self._on_error = on_error
        self._wake = threading.Condition()
        self._running = True
        self.replaced = 0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def stop(self, timeout: float = 20.0) -> None:
        """Take no more items; the one in progress finishes (waits up to ``timeout`` s)."""
        with self._wake:
            self._running = False
            self._wake.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:  # pragma: no cover - each worker's own
        raise NotImplementedError


class LatestWorker(_Thread):
    """One background thread processing the newest submitted item (see the module docstring).

    ``process(item, queued_seconds)`` runs on the thread; ``on_error(item, exc)`` is called
    when it raises; ``max_rate()`` is read before every start (a live setting)."""

    def __init__(self, process: Callable[[Any, float], None], on_error: Callable[[Any, BaseException], None],
                 max_rate: Callable[[], float] = lambda: 0.0, name: str = "vggts-inference") -> None:
        super().__init__(process, on_error, name)
        self._max_rate = max_rate
        self._pending: Optional[Tuple[Any, float]] = None
        self._thread.start()

    def submit(self, item: Any) -> bool:
        """Process ``item`` next, replacing any item still waiting (then True)."""
        with self._wake:
            replaced = self._pending is not None
            self.replaced += int(replaced)
            self._pending = (item, time.monotonic())
            self._wake.notify()
        return replaced

    def discard(self) -> None:
        """Drop the waiting item, if any (e.g. every object was cleared)."""
        with self._wake:
            self._pending = None

    def _loop(self) -> None:
        last_start = -1e9
        while True:
            with self._wake:
                while self._running:
                    rate = self._max_rate()
                    wait = last_start + (1.0 / rate if rate > 0 else 0.0) - time.monotonic()
                    if self._pending is not None and wait <= 0:
                        break
                    # Not yet: a newer item may replace the pending one while we wait.
                    self._wake.wait(timeout=min(0.5, wait) if self._pending is not None else 0.5)
                if not self._running:
                    return
                (item, queued_at), self._pending = self._pending, None
            last_start = time.monotonic()
            try:
                self._process(item, last_start - queued_at)
            except Exception as exc:  # noqa: BLE001 - a failed item is reported, the thread goes on
                self._on_error(item, exc)


class LatestPerKeyWorker(_Thread):
    """One background thread processing, for each key (a camera), the newest submitted
    item: an item submitted while an older one of the same key waits replaces it (counted
    in ``replaced``) and keeps that key's place, so keys are served in the order they
    started waiting and no key starves when items come faster than they are processed
    (moving a replaced key to the back starved the camera sent last in each tick). Camera-rate
    work (propagation of masks to every new frame) that must never queue up or hold up the
    executor. ``process(key, item)`` runs on the thread; ``on_error(key, item, exc)`` is
    called when it raises."""

    def __init__(self, process: Callable[[Any, Any], None], on_error: Callable[[Any, Any, BaseException], None],
                 name: str = "vggts-camera-rate") -> None:
        super().__init__(process, on_error, name)
        self._pending: "dict[Any, Any]" = {}  # key -> newest item, keys in the order they started waiting
        self._thread.start()

    def submit(self, key: Any, item: Any) -> bool:
        with self._wake:
            replaced = key in self._pending
            self.replaced += int(replaced)
            self._pending[key] = item  # a waiting key keeps its place (dict order)
            self._wake.notify()
        return replaced

    def _loop(self) -> None:
        while True:
            with self._wake:
                while self._running and not self._pending:
                    self._wake.wait(timeout=0.5)
                if not self._running:
                    return
                key = next(iter(self._pending))
                item = self._pending.pop(key)
            try:
                self._process(key, item)
            except Exception as exc:  # noqa: BLE001 - reported, the thread goes on
                self._on_error(key, item, exc)
