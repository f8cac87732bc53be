"""What differs between the rclpy releases of the ROS 2 distributions the node supports.

Kilted (rclpy 9.1, the default environment) and Jazzy (rclpy 7.1, ``VGGTS_ROS_DISTRO=jazzy``)
are tested in CI. Humble (rclpy 3.3) has no Python wheels and is not tested: each fallback
marked "Humble" below was written from reading rclpy's ``humble`` branch (3.3.15) and is
exercised on Jazzy and Kilted by forcing it. docs/ros_distributions.md lists every rclpy
API the adapter uses and where each distribution differs.

This module imports nothing from rclpy at import time (``transport`` runs before any ROS
context exists and must stay importable without it).
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
import time
from typing import Callable, Optional, Tuple

# rclpy's major version identifies the distribution: each distribution branches rclpy at
# its own major release (ros2/rclpy tags 3.3.x = humble, 7.1.x = jazzy, 9.x = kilted).
DISTRIBUTIONS = {3: "humble", 7: "jazzy", 9: "kilted"}


@functools.lru_cache(maxsize=1)
def rclpy_version() -> Tuple[int, int, int]:
    """rclpy's version as (major, minor, patch), read from its installed metadata (the
    wheels and a colcon/apt install both ship it), else from its ``package.xml``."""
    try:
        text = importlib.metadata.version("rclpy")
    except importlib.metadata.PackageNotFoundError:
        text = _package_xml_version("rclpy")
    numbers = [int(n) for n in re.findall(r"\d+", text)[:3]]
    if len(numbers) < 2:
        raise RuntimeError(f"rclpy reports an unreadable version {text!r}")
    return tuple(numbers + [0] * (3 - len(numbers)))  # type: ignore[return-value]


def _package_xml_version(package: str) -> str:
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError as exc:
        raise RuntimeError(f"cannot tell the {package} version: no installed metadata, no ament_index_python") \
            from exc
    try:
        share = get_package_share_directory(package)
    except PackageNotFoundError as exc:
        raise RuntimeError(f"cannot tell the {package} version: it is not installed") from exc
    with open(f"{share}/package.xml", encoding="utf-8") as f:
        found = re.search(r"<version>\s*([^<\s]+)\s*</version>", f.read())
    if found is None:
        raise RuntimeError(f"{share}/package.xml has no <version>")
    return found.group(1)


def ros_distro() -> Optional[str]:
    """'humble', 'jazzy' or 'kilted' from the rclpy in use; None for any other release."""
    return DISTRIBUTIONS.get(rclpy_version()[0])


# ---------------------------------------------------------------- parameters
def has_post_set_parameters_callbacks() -> bool:
    """rclpy 4 (Iron) and later call a post-set callback after new values are stored;
    Humble's Node has only the on-set (validating) callback."""
    from rclpy.node import Node

    return hasattr(Node, "add_post_set_parameters_callback")


def add_parameter_callbacks(node, validate: Callable, after_stored: Callable[[list], None],
                            before_stored: Callable[[list], None]) -> str:
    """Make ``node`` check every parameter change with ``validate(params) ->
    SetParametersResult`` and then act on it. Where rclpy has post-set callbacks (Jazzy,
    Kilted) ``after_stored(params)`` runs once the new values are stored. Humble has none:
    there ``before_stored(params)`` runs inside the on-set callback once ``validate``
    passed, so it must take the new values from ``params``, not from the node (Humble
    stores them right after its on-set callbacks succeed; this is the node's only one).
    Returns 'post-set' or 'on-set'."""
    if has_post_set_parameters_callbacks():
        node.add_on_set_parameters_callback(validate)
        node.add_post_set_parameters_callback(after_stored)
        return "post-set"

    def validate_then_apply(params):
        result = validate(params)
        if result.successful:
            before_stored(params)
        return result

    node.add_on_set_parameters_callback(validate_then_apply)
    return "on-set"


# ---------------------------------------------------------------- executors
def shutdown_executor(executor, timeout_sec: float) -> bool:
    """``executor.shutdown`` and, for a MultiThreadedExecutor, its worker threads stopped
    and joined (``timeout_sec`` for everything together; a thread still inside a callback
    then is left to finish on its own).

    rclpy 9 (Kilted) joins them in ``shutdown``; rclpy 7 (Jazzy) and 3 (Humble) leave the
    executor's ThreadPoolExecutor running, so its threads outlive the shutdown until the
    executor object is garbage-collected. This is a no-op on Kilted (already done) and
    makes the other two behave the same.
    """
    deadline = time.monotonic() + timeout_sec
    done = executor.shutdown(timeout_sec=timeout_sec)
    pool = getattr(executor, "_executor", None)  # rclpy internals; absent: no pool of its own
    if pool is None or not hasattr(pool, "shutdown"):
        return done
    pool.shutdown(wait=False)  # no new work; idle threads wake up and exit
    for thread in list(getattr(pool, "_threads", ())):
        thread.join(max(0.0, deadline - time.monotonic()))
        done = done and not thread.is_alive()
    return done


# ---------------------------------------------------------------- transport
def fastdds_accepts_transport_options() -> bool:
    """Fast DDS reads options such as ``sockets_size`` in ``FASTDDS_BUILTIN_TRANSPORTS``
    from 2.14 on (Jazzy ships 2.14, Kilted 3.x). Humble's Fast DDS 2.6 knows only a bare
    transport name there: it logs "Wrong value" for ``DEFAULT?sockets_size=...`` and keeps
    its defaults, so on Humble the variable is better left unset."""
    return rclpy_version()[0] >= 7
