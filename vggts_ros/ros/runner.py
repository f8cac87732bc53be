"""Run one node as a process: spin until SIGINT or SIGTERM, then tear down in order.

Why not rclpy's own signal handler: it shuts the context down the moment the signal
arrives, so the node's publishers are destroyed afterwards on a dead context, with
reliable samples (a cleared mask, the last diagnostics) possibly still unacknowledged.
Fast DDS crashed there (SIGSEGV inside ``Publisher.destroy``) in about 1 of 100 stops.
Here a signal only asks to stop; then, in this order: the executor stops spinning, the
inference thread finishes, each reliable output waits (bounded) until its subscribers
acknowledged what was sent, the node is destroyed on a live context, and only then is
the context shut down. A second signal during that exits at once.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
import time
import traceback
from typing import Callable, List, Optional

import rclpy
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from vggts_ros.ros import compat

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
FLUSH_TIMEOUT = 1.0  # seconds for all reliable outputs together to be acknowledged at exit


def flush_publishers(node, timeout: float = FLUSH_TIMEOUT) -> bool:
    """Wait until every publisher's subscribers acknowledged what it sent (best-effort
    ones return at once), ``timeout`` seconds for all of them together."""
    deadline = time.monotonic() + timeout
    complete = True
    for publisher in list(node.publishers):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        try:
            complete &= bool(publisher.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9))))
        except Exception:  # a publisher already gone, or a middleware without the call
            complete = False
    return complete


def stop_executor(executor, timeout: float = 5.0) -> None:
    """Shut ``executor`` down once the callbacks it already handed to its threads have run
    (its spin loop must have stopped). rclpy 9's shutdown destroys the executor's guard
    condition before it joins its threads, so a callback just starting raised
    InvalidHandle ("exception was never retrieved" at exit)."""
    deadline = time.monotonic() + timeout
    handed = list(getattr(executor, "_futures", ()))  # rclpy internals; absent: nothing to wait for
    while any(not task.done() for task in handed) and time.monotonic() < deadline:
        time.sleep(0.01)
    for task in handed:
        if task.done() and task.exception() is not None:
            sys.stderr.write(f"vggts: a callback failed while stopping: {task.exception()}\n")
    compat.shutdown_executor(executor, max(0.0, deadline - time.monotonic()))  # joins its threads on every rclpy


class _Stop:
    """The stop request: the first signal sets it; a second one exits the process now."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signals = 0

    def __call__(self, signum, frame) -> None:
        self.signals += 1
        if self.signals > 1:
            sys.stderr.write(f"vggts: {signal.Signals(signum).name} again: exiting without cleaning up\n")
            sys.stderr.flush()
            os._exit(128 + signum)
        self.event.set()


def _spin(executor, stop: _Stop, failure: List[BaseException]) -> None:
    try:
        while not stop.event.is_set():
            executor.spin_once(timeout_sec=0.1)
    except ExternalShutdownException:  # someone else shut the context down
        pass
    except BaseException as exc:  # noqa: BLE001 - reported by run() after teardown
        failure.append(exc)
    finally:
        stop.event.set()


def run(make_node: Callable[[], object], argv: List[str], configure: Optional[Callable[[], None]] = None,
        refusals: tuple = (), num_threads: int = 4) -> int:
    """Create the node with ``make_node`` and serve it until a stop signal. Exceptions in
    ``refusals`` while creating it print one line and return 2; an exception escaping the
    executor is printed and returns 1; a clean stop returns 0."""
    faulthandler.enable()  # a native crash (driver, DDS, torch) prints every thread's Python stack
    if configure is not None:
        configure()
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    stop = _Stop()
    previous = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    node = executor = thread = None
    failure: List[BaseException] = []
    try:
        try:
            node = make_node()
        except refusals as exc:
            print(f"vggts_node: {exc}", file=sys.stderr)
            return 2
        executor = MultiThreadedExecutor(num_threads=num_threads)
        executor.add_node(node)
        thread = threading.Thread(target=_spin, args=(executor, stop, failure), name="executor", daemon=True)
        thread.start()
        while not stop.event.wait(0.5):  # the main thread only waits, so signals reach it at once
            pass
    finally:
        stop.event.set()
        if thread is not None:
            thread.join(timeout=10)
        if executor is not None:
            if node is not None:
                executor.remove_node(node)
            stop_executor(executor, 5.0)
        if node is not None:
            stopping = getattr(node, "stop_processing", None)
            if stopping is not None:
                stopping()  # the inference thread finishes its set and publishes it
            if rclpy.ok():
                flush_publishers(node)
            node.destroy_node()
        rclpy.try_shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if node is not None and getattr(node, "busy", False):
            print("vggts_node: inference still running at exit; leaving without waiting", file=sys.stderr)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
    if failure:
        traceback.print_exception(failure[0])
        return 1
    return 0
