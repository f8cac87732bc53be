"""The node's objects in 3D, wired: depth subscriptions (:mod:`vggts_ros.ros.depth_input`),
3D publishers (:mod:`vggts_ros.ros.objects3d_outputs`) and the set processor's 3D step
(:class:`vggts_ros.geometry.objects3d_step.Objects3DStep`), which reads the depth streams
and the camera_info the node's outputs already receive.

The node calls :func:`make_step` when it builds its set processor (configure),
:meth:`Objects3DIO.update` when it creates its topics, :meth:`Objects3DIO.hold` with each
set it hands to inference, :meth:`Objects3DIO.publish` with
each processed set (before the per-camera outputs, which take :meth:`Objects3DIO.markers`)
and :meth:`Objects3DIO.camera_values` for each camera's diagnostics. Subscriptions and
publishers are kept across cleanup/configure and made anew only when the cameras' depth
topics change (as the camera subscriptions are).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from vggts_ros.geometry.objects3d_step import Objects3DStep
from vggts_ros.ros.depth_input import DepthInput
from vggts_ros.ros.objects3d_outputs import Objects3DOutputs

DEPTH_WAIT = 0.1  # s the inference thread waits for a depth image still on its way


def make_step(cfg, slop: Callable[[], float]) -> Optional[Objects3DStep]:
    """The 3D step of a node configuration (None when 3D is off or no camera has depth);
    VGGT's heads count only with the VGGT backend."""
    import dataclasses

    geometry = dataclasses.replace(cfg.geometry, vggt_heads=cfg.vggt_heads())
    step = Objects3DStep(cfg.cameras, geometry, slop, depth_wait=DEPTH_WAIT)
    return step if step.active else None


class Objects3DIO:
    """See the module docstring. ``header_of(frame)``: a set frame's colour header."""

    def __init__(self, node, callback_group, header_of: Callable[[Any], Any]) -> None:
        self.node = node
        self.group = callback_group
        self.header_of = header_of
        self.depth: Optional[DepthInput] = None
        self.outputs: Optional[Objects3DOutputs] = None
        self._key: Tuple = ()
        self.step: Optional[Objects3DStep] = None

    def update(self, cfg, step: Optional[Objects3DStep], camera_info: Dict[str, Any],
               active: Callable[[], bool]) -> None:
        """Topics for ``cfg`` (kept when unchanged) bound to ``step`` and the node's camera_info."""
        self.step = step
        names = [c.name for c in cfg.cameras if step is not None and step.has_depth_source(c.name)]
        ref = cfg.reference_frame()
        key = (DepthInput.key(cfg.cameras), tuple(names), ref, ref in [c.name for c in cfg.cameras])
        if key != self._key:
            self.destroy()
            self._key = key
            if step is not None:
                self.depth = DepthInput(self.node, cfg.cameras, active, self.group)
                self.outputs = Objects3DOutputs(self.node, names, ref, key[3])
        if self.depth is not None:
            self.depth.bind(step.depth if step is not None else None)
        if step is None:
            return
        step.camera_info = camera_info
        log = self.node.get_logger()
        log.info("objects in 3D: " + "; ".join(step.describe()) + f"; fused in {ref!r}")
        if self.outputs is not None and self.outputs.tf_note:
            log.info(self.outputs.tf_note)

    def destroy(self) -> None:
        if self.depth is not None:
            self.depth.destroy()
        if self.outputs is not None:
            self.outputs.destroy()
        self.depth = self.outputs = None
        self._key = ()

    def publish(self, output, frames: Mapping[str, Any]) -> None:
        """One processed set's 3D (``output.objects3d``), stamped with its colour frames."""
        if self.outputs is None:
            return
        self.outputs.publish(getattr(output, "objects3d", None), {n: self.header_of(f) for n, f in frames.items()})

    def hold(self, item) -> None:
        """A synchronised set is handed to the inference thread: its cameras' depth streams
        keep the images near its frames' stamps while it waits (the set processor's 3D step
        keeps them through inference)."""
        step = self.step
        if step is None:
            return
        for name, frame in item.messages.items():
            stream = step.depth.get(name)
            if stream is not None:
                stream.hold(frame.stamp, step.slop)

    def markers(self, camera: str) -> List[Any]:
        return self.outputs.markers(camera) if self.outputs is not None else []

    def reset(self) -> None:
        """A ROS time jump back: forget the kept depth images."""
        if self.depth is not None:
            self.depth.reset()

    def camera_values(self, camera: str) -> Dict[str, str]:
        """Diagnostics of a camera's depth (rate, sets matched/missed, the last reason)."""
        return self.depth.values(camera) if self.depth is not None else {}
