"""The node's object services: ``~/set_source_mask``, ``~/click_to_mask``, ``~/clear_objects``
and the ``~/click`` topic, as adapters from ROS messages to the core's object intake
(:mod:`vggts_ros.intake`, NumPy in). Every request is answered with a message that says
exactly what was wrong (or what was stored); a refused request changes nothing.
"""

from __future__ import annotations

import time

import numpy as np

from vggts_ros.intake import IntakeError
from vggts_ros.registry import RegistryError
from vggts_ros.ros import diagnostics
from vggts_ros.ros.conversions import check_size, fill_image, mask_from_image
from vggts_ros.ros.outputs import latest_header


def stamp_to_sec(stamp) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


class ObjectServices:
    """The handlers, bound to the node whose intake, registry and outputs they use."""

    def __init__(self, node) -> None:
        self.node = node

    def _answer(self, what: str, ok: bool, message: str) -> None:
        if ok:
            self.node.get_logger().info(f"{what}: {message}")
        else:
            self.node.get_logger().warning(f"{what} refused: {message[:500]}")

    def set_source_mask(self, request, response):
        try:
            m = request.mask
            self.node.intake.camera(request.camera)
            self.node.intake.check(request.object_id, request.label)
            problem = check_size(int(m.height), int(m.width), self.node.cfg.inference.max_image_pixels, "mask")
            if problem:
                raise IntakeError(f"bad mask image: {problem}")
            accepted = self.node.intake.set_mask(request.camera, lambda: mask_from_image(m), stamp_to_sec(request.stamp),
                                                 request.object_id, request.label, (int(m.height), int(m.width)))
            self.objects_changed()
            response.success, response.message, response.object_id = True, accepted.message, accepted.object.object_id
            response.frame_stamp = accepted.frame.payload.msg.header.stamp
        except IntakeError as exc:
            response.success, response.message, response.object_id = False, str(exc), 0
        except Exception as exc:  # noqa: BLE001 - the node must answer, whatever went wrong
            self.node.get_logger().error(f"set_source_mask failed: {type(exc).__name__}: {exc}")
            response.success, response.message, response.object_id = False, f"internal error: {type(exc).__name__}: {exc}", 0
        self._answer("set_source_mask", response.success, response.message)
        return response

    def click_to_mask(self, camera: str, points=None, labels=None, box=None, object_id: int = 0, label: str = ""):
        """Points/box on a camera's newest frame -> GrabCut mask -> a stored object.
        Returns (accepted, mask); raises IntakeError naming the problem."""
        accepted, mask = self.node.intake.click(camera, points, labels, box, object_id, label)
        self.objects_changed()
        return accepted, mask

    def click(self, msg) -> None:
        """``~/click`` (``geometry_msgs/PointStamped``): ``header.frame_id`` names the camera (its
        name, or the ``frame_id`` of its images), ``point.x, point.y`` a pixel on the object
        in that camera's newest frame."""
        self.click_at(msg.header.frame_id, msg.point.x, msg.point.y, "click")

    def mouse_click(self, camera: str):
        """rqt_image_view's ``<image topic>_mouse_left`` (``geometry_msgs/Point``, a pixel, no
        header) of ``camera``: a click on that camera's stream makes a mask there."""
        return lambda msg: self.click_at(camera, msg.x, msg.y, "click")

    def click_at(self, camera: str, x: float, y: float, what: str) -> None:
        """One positive click -> a new object; the outcome is logged and published as the
        node's ``click`` diagnostics status (OK, or WARN with the reason)."""
        if not self.node._active:
            self.node.get_logger().warning(f"{what} ignored: the node is not active")
            return
        try:
            ok, message = True, self.click_to_mask(camera, [(x, y)])[0].message
        except IntakeError as exc:
            ok, message = False, str(exc)
        except Exception as exc:  # noqa: BLE001 - a bad click must not take the node down
            ok, message = False, f"internal error: {type(exc).__name__}: {exc}"
        self._answer(what, ok, message)
        level = diagnostics.OK if ok else diagnostics.WARN
        self.node._diag_pub.publish(diagnostics.array(self.node.get_clock().now().to_msg(), [diagnostics.status(
            level, self.node.status_name("click"), message if ok else f"click refused: {message}", {})]))

    def click_to_mask_service(self, request, response):
        pts = np.asarray(request.points, np.float64)
        try:
            if len(pts) % 2:
                raise IntakeError(f"points must be x, y pairs; got {len(pts)} numbers")
            accepted, mask = self.click_to_mask(
                request.camera, pts.reshape(-1, 2).tolist() if len(pts) else None,
                list(request.labels) if len(request.labels) else None,
                list(request.box) if len(request.box) else None, request.object_id, request.label)
            response.success, response.message, response.object_id = True, accepted.message, accepted.object.object_id
            response.frame_stamp = accepted.frame.payload.msg.header.stamp
            fill_image(response.mask, mask.astype(np.uint8) * 255, "mono8")
        except IntakeError as exc:
            response.success, response.message, response.object_id = False, str(exc), 0
        except Exception as exc:  # noqa: BLE001 - the node must answer, whatever went wrong
            response.success, response.message, response.object_id = False, f"internal error: {type(exc).__name__}: {exc}", 0
        self._answer("click_to_mask", response.success, response.message)
        return response

    def objects_changed(self) -> None:
        self.node.health.objects_changed(len(self.node.registry), time.monotonic())

    def clear_objects(self, request, response):
        oid = int(request.object_id)
        try:
            with self.node.registry.lock:
                removed = self.node.registry.clear(oid)
                for gone in removed:
                    self.node.processor.remove_object(gone)
                self._publish_cleared()
            response.success = True
            response.message = f"cleared {len(removed)} object(s)" if oid == 0 else f"cleared object {oid}"
        except RegistryError as exc:
            response.success, response.message = False, str(exc)
        if response.success:
            self.objects_changed()
            if not len(self.node.registry):
                self.node.worker.discard()
        self.node.get_logger().info(f"clear_objects: {response.message}")
        return response

    def _publish_cleared(self) -> None:
        """Cameras that no remaining object will update get an empty output (their newest
        frame's stamp)."""
        _, objects = self.node.registry.snapshot()
        track = self.node.cfg.inference.source_mode == "track"
        still = {c.name for c in self.node.cfg.cameras for o in objects if o.camera != c.name or track}
        self.node.outputs.publish_cleared(self.node.outputs.published_on - still,
                                          lambda camera: latest_header(self.node.history, self.node.processor.sizes, camera))

