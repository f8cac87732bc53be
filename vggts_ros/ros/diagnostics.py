"""The node's ``/diagnostics``: one status for the pipeline and one per camera.

Pipeline (``<node>: pipeline``): the lifecycle state (``unconfigured``/``inactive`` say so at
WARN, so a monitoring stack sees why nothing comes out), device and backend, objects,
output and set rates, the time since the last output against the stall timeout, sets
received/processed/dropped/failed/discarded, stale and unmatched cameras, the stream
state (Temporal VGGT-S memory per object and camera) and the last set's latency split
(pipeline, queue, node overhead, per stage). Camera (``<node>: camera <name>``): topic,
role, staleness, frames and rejections (with the last reason), synchroniser counters,
the estimated and applied clock offset, frame size and size changes, and with a depth
topic its depth status (rate, sets matched and missed, the last reason a set got no depth).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Dict, Optional

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from vggts_ros.health import ERROR, OK, WARN

LEVELS = {OK: DiagnosticStatus.OK, WARN: DiagnosticStatus.WARN, ERROR: DiagnosticStatus.ERROR}


@dataclass(frozen=True)
class SetTiming:
    """Where the time of one processed set went (seconds)."""

    stamp: float
    latency: float  # last image of the set received -> its outputs published
    pipeline: float  # inside the backend
    queued: float  # waiting for the inference thread to finish the previous set
    stages: Dict[str, float]

    @property
    def overhead(self) -> float:
        """What the node itself adds: synchronising, decoding, composing, publishing."""
        return self.latency - self.pipeline - self.queued


def status(level: str, name: str, message: str, values: Dict[str, object], hardware_id: str = "") -> DiagnosticStatus:
    out = DiagnosticStatus(level=LEVELS[level], name=name, message=message, hardware_id=hardware_id)
    out.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
    return out


def not_running(name: str, state: str, cameras, device: str = "", reason: str = "") -> DiagnosticStatus:
    """The pipeline status of a node that processes nothing now (``state``: unconfigured,
    inactive, finalized), with why when it is known (a failed configure)."""
    message = f"{state}: not processing" + (f" ({reason})" if reason else "")
    return status(WARN, name, message, {"state": state, "device": device, "cameras": ",".join(cameras),
                                        "last_error": reason}, device)


def pipeline_status(name: str, *, now: float, cfg, health, sync, registry, state_values: Dict[str, str],
                    sets_processed: int, last: Optional[SetTiming], device: str, backend: str,
                    lifecycle_state: str = "active") -> DiagnosticStatus:
    stale = sync.stale_cameras(now)
    unmatched = sync.unmatched_cameras(now)
    h = health
    period = cfg.publish.diagnostics_period
    level, message = h.assess(now, stale, unmatched, period, cfg.publish.stall_timeout)
    since = h.since_output(now)
    values: Dict[str, object] = {
        "state": lifecycle_state,
        "device": device,
        "backend": backend,
        "objects": len(registry),
        "generation": registry.generation,
        "rate_hz": f"{h.outputs.rate(now):.2f}",
        "sets_rate_hz": f"{h.sets.rate(now):.2f}",
        "rate_window_s": f"{h.window:g}",
        "time_since_output_s": "" if since is None else f"{since:.2f}",
        "stall_timeout_s": f"{h.stall_timeout(period, cfg.publish.stall_timeout):.2f}",
        "sets_received": h.sets.total,
        "sets_processed": sets_processed,
        "sets_dropped": h.replaced,
        "sets_failed": h.failures.total,
        "sets_failed_recent": h.failures.count(now),
        "sets_discarded_stale": h.stale_discarded,
        "stale_cameras": ",".join(stale),
        "unmatched_cameras": ",".join(unmatched),
        "sync_resets": sync.stats()["resets"],
        "last_error": h.last_error,
    }
    values.update(state_values)
    if last is not None:
        values.update({
            "last_set_stamp": f"{last.stamp:.6f}",
            "latency_ms": f"{1000 * last.latency:.1f}",
            "pipeline_ms": f"{1000 * last.pipeline:.1f}",
            "queued_ms": f"{1000 * last.queued:.1f}",
            "node_overhead_ms": f"{1000 * last.overhead:.1f}",
        })
        for stage, seconds in sorted(last.stages.items()):
            values[f"stage_{stage}_ms"] = f"{1000 * seconds:.1f}"
    return status(level, name, message, values, device)


def camera_statuses(name_of, *, now: float, cfg, health, sync, sizes, topics: Dict[str, str], extra=None):
    """One status per camera (``name_of(what)`` makes the status name); ``extra(camera)``:
    more key/values (the camera's depth: ``depth_*``, see vggts_ros.geometry.depth_stream;
    a last set without usable depth is a WARN naming why)."""
    stale = sync.stale_cameras(now)
    unmatched = sync.unmatched_cameras(now)
    stats = sync.stats()
    limits = sync.stale_limits()
    offsets = stats["clock_offsets"]
    out = []
    for cam in cfg.cameras:
        n = cam.name
        cam_values = health.camera_values(n, now)
        is_stale, is_unmatched = n in stale, n in unmatched
        recent_rejects = int(cam_values["frames_rejected_recent"])
        level = ERROR if is_stale and len(stale) == len(cfg.cameras) else \
            WARN if (is_stale or is_unmatched or recent_rejects) else OK
        message = "stale" if is_stale else "matches no other camera" if is_unmatched else \
            f"frames rejected: {cam_values['last_reject_reason']}" if recent_rejects else "ok"
        size = sizes.size(n)
        values = {
            "topic": topics[n],
            "role": cam.role,
            "required": str(cam.required).lower(),
            "stale": str(is_stale).lower(),
            "stale_after_s": f"{limits[n]:.3f}",  # rate-following or fixed
            "unmatched": str(is_unmatched).lower(),
            **cam_values,
            "sync_received": str(stats["received"][n]),
            "sync_dropped": str(stats["dropped"][n]),
            "clock_offset_ms": "" if offsets[n] is None else f"{1000 * offsets[n]:.1f}",
            "clock_offset_applied_ms": f"{1000 * stats['applied_offsets'][n]:.1f}",
            "frame_size": "" if size is None else f"{size[1]}x{size[0]}",
            "size_changes": str(sizes.changes.get(n, 0)),
        }
        for reason, count in stats["dropped_by_reason"][n].items():
            values[f"sync_dropped_{reason}"] = str(count)
        more = extra(n) if extra is not None else {}
        values.update(more)
        if more.get("depth_ok") == "false" and level == OK:
            level, message = WARN, f"no depth for 3D: {more.get('depth_last_reason', '')}"
        out.append(status(level, name_of(f"camera {n}"), message, values, topics[n]))
    return out


def array(stamp, statuses) -> DiagnosticArray:
    out = DiagnosticArray()
    out.header.stamp = stamp
    out.status = list(statuses)
    return out


def node_statuses(node) -> list:
    """Every status of a :class:`vggts_ros.ros.node.VGGTSNode` now (and one log line per camera
    that went stale, rejoined or changed size since the last call)."""
    now = time.monotonic()
    name = node.status_name("pipeline")
    if not node._active or node.sync is None:
        error = "" if node._configure_error is None else f"configure failed: {node._configure_error}"
        return [not_running(name, node.lifecycle_state, [c.name for c in node.cfg.cameras], node.device, error)]
    processor, cfg = node.processor, node.cfg
    state_values = processor.state.describe(node.registry.ids()) if processor is not None else {}
    if node.camera_rate is not None and node.last is not None:
        state_values = dict(state_values, **node.camera_rate.diagnostics(node.last.stamp))
    statuses = [pipeline_status(
        name, now=now, cfg=cfg, health=node.health, sync=node.sync, registry=node.registry, state_values=state_values,
        sets_processed=node.sets_processed, last=node.last, device=node.device,
        backend=processor.backend if processor is not None else "", lifecycle_state=node.lifecycle_state)]
    statuses += camera_statuses(node.status_name, now=now, cfg=cfg, health=node.health, sync=node.sync,
                                sizes=processor.sizes, topics=node.topics, extra=node.io3d.camera_values)
    sizes = {c.name: processor.sizes.size(c.name) for c in cfg.cameras}
    log = node.get_logger()
    for level, line in node.camera_events.update(node.sync.stale_cameras(now), dict(processor.sizes.changes), sizes,
                                                 node.sync.stale_limits()):
        if level == WARN:  # rclpy: one severity per call site
            log.warning(line)
        else:
            log.info(line)
    return statuses
