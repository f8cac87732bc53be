"""Drive a running ``vggts`` node from outside: publish camera images, call its services,
collect what it publishes. Used by ``vggts demo``, the node tests and the node benchmark,
all over real DDS.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import yaml

from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.srv import SetParameters
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from vggts_ros.config import NodeConfig
from vggts_ros.geometry.depth import camera_info_topic, encode_depth
from vggts_ros.msg import Objects3D, ProjectedPoints
from vggts_ros.ros.conversions import fill_image, to_uint8_array
from vggts_ros.ros.runner import stop_executor
from vggts_ros.srv import ClearObjects, SetSourceMask


def to_time(seconds: float) -> Time:
    sec = int(np.floor(seconds))
    return Time(sec=sec, nanosec=int(round((seconds - sec) * 1e9)) % 1_000_000_000)


@dataclass
class PlayedCamera:
    name: str
    topic: str
    image: np.ndarray
    compressed: bool = False
    paused: bool = False
    frame_id: str = ""
    clock_offset: float = 0.0  # added to this camera's stamps (a camera with its own clock)
    # A registered depth camera: ``depth`` (HxW metres, NaN = no reading) published on
    # ``depth_topic`` as ``depth_encoding`` (32FC1 / 16UC1) with each frame's stamp and frame_id;
    # ``depth_raw`` = (array, encoding) publishes that array as it is instead (bad input tests).
    depth: Optional[np.ndarray] = None
    depth_topic: str = ""
    depth_encoding: str = "32FC1"
    depth_raw: Optional[tuple] = None
    depth_paused: bool = False
    # Intrinsics: a 3x3 K published as CameraInfo (P = [K | 0]) beside the image topic (None: none).
    K: Optional[np.ndarray] = None


class CameraPlayer(Node):
    """Publishes one still image per camera at ``rate_hz``, all frames of a tick sharing
    one stamp (a hardware-synchronised rig). Cameras can be paused to simulate a failure,
    an image can be swapped at any time, a camera can stamp with an offset clock, the
    whole rig's time can jump (``shift_time``: a looped bag) and a single message can be
    given an arbitrary stamp (``inject``)."""

    def __init__(self, cameras: Sequence[PlayedCamera], rate_hz: float = 5.0, name: str = "vggts_player",
                 reliable: bool = False) -> None:
        super().__init__(name)
        # Reliable: lost fragments of a large image are sent again (the node's subscription
        # must be made reliable too, through its qos_overrides); default: camera QoS.
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE) if reliable else qos_profile_sensor_data
        self._cams = {c.name: c for c in cameras}
        self._lock = threading.Lock()
        self._pubs = {}
        self._depth_pubs = {}
        self._info_pubs = {}
        for cam in cameras:
            msg_type = CompressedImage if cam.compressed else Image
            self._pubs[cam.name] = self.create_publisher(msg_type, cam.topic, qos)
            if cam.depth_topic:
                self._depth_pubs[cam.name] = self.create_publisher(Image, cam.depth_topic, qos)
            self._info_pubs[cam.name] = self.create_publisher(CameraInfo, camera_info_topic(cam.topic), qos)
        self.stamps: List[float] = []
        self.publish_times: Dict[float, float] = {}
        self.time_shift = 0.0
        self._injected: Dict[str, float] = {}
        self.create_timer(1.0 / rate_hz, self.tick)

    def pause(self, camera: str, paused: bool = True) -> None:
        with self._lock:
            self._cams[camera].paused = paused

    def set_image(self, camera: str, image: np.ndarray) -> None:
        with self._lock:
            self._cams[camera].image = image

    def set_depth(self, camera: str, depth: Optional[np.ndarray] = None, encoding: str = "32FC1",
                  raw: Optional[tuple] = None) -> None:
        """From the next tick on, ``camera`` publishes ``depth`` (metres) as ``encoding``, or
        ``raw`` = (array, encoding label) as it is."""
        self._replace(camera, depth=depth, depth_encoding=encoding, depth_raw=raw)

    def _replace(self, camera: str, **changes) -> None:
        # A new object, not a change in place: a tick in progress keeps the one it took.
        import dataclasses

        with self._lock:
            self._cams[camera] = dataclasses.replace(self._cams[camera], **changes)

    def set_camera_info(self, camera: str, K: Optional[np.ndarray]) -> None:
        """From the next tick on, ``camera`` publishes a CameraInfo with ``K`` (None: none)."""
        self._replace(camera, K=K)

    def pause_depth(self, camera: str, paused: bool = True) -> None:
        """Stop (or resume) ``camera``'s depth stream while its colour stream goes on."""
        self._replace(camera, depth_paused=paused)

    def set_clock_offset(self, camera: str, offset: float) -> None:
        with self._lock:
            self._cams[camera].clock_offset = offset

    def shift_time(self, delta: float) -> None:
        """From the next tick on, every stamp moves by ``delta`` seconds."""
        with self._lock:
            self.time_shift += delta

    def inject(self, camera: str, stamp: float) -> None:
        """The next frame of ``camera`` carries ``stamp`` instead of the tick's stamp."""
        with self._lock:
            self._injected[camera] = stamp

    def tick(self) -> None:
        with self._lock:
            stamp_sec = time.time() + self.time_shift
            cams = [c for c in self._cams.values() if not c.paused]
            injected, self._injected = self._injected, {}
        for cam in cams:
            own = injected.get(cam.name, stamp_sec + cam.clock_offset)
            if cam.compressed:
                import cv2

                ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(cam.image[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95])
                msg = CompressedImage(format="jpeg")
                msg.data = to_uint8_array(buf)
            else:
                msg = Image()
                fill_image(msg, cam.image, "rgb8")
            msg.header.stamp = to_time(own)
            msg.header.frame_id = cam.frame_id or f"{cam.name}_optical_frame"
            self._pubs[cam.name].publish(msg)
            self._publish_geometry(cam, msg.header)
        self.stamps.append(stamp_sec)
        self.publish_times[round(stamp_sec, 6)] = time.monotonic()


    def _publish_geometry(self, cam: PlayedCamera, header) -> None:
        """The camera's depth image and camera_info with the colour frame's header."""
        pub = self._depth_pubs.get(cam.name)
        if pub is not None and not cam.depth_paused and (cam.depth is not None or cam.depth_raw is not None):
            if cam.depth_raw is not None:
                arr, encoding = cam.depth_raw
                arr = np.ascontiguousarray(arr)
            else:
                encoding = cam.depth_encoding
                arr = encode_depth(cam.depth, encoding)
            msg = Image(header=header, height=int(arr.shape[0]), width=int(arr.shape[1]), encoding=encoding,
                        is_bigendian=0, step=int(arr.shape[1] * arr.itemsize * (arr.shape[2] if arr.ndim == 3 else 1)))
            msg.data = to_uint8_array(arr.view(np.uint8))
            pub.publish(msg)
        info_pub = self._info_pubs.get(cam.name)
        if info_pub is not None and cam.K is not None:
            h, w = cam.image.shape[:2]
            K = np.asarray(cam.K, np.float64).reshape(3, 3)
            info = CameraInfo(header=header, height=h, width=w, distortion_model="plumb_bob", d=[0.0] * 5,
                              k=K.reshape(-1).tolist(), r=np.eye(3).reshape(-1).tolist(),
                              p=np.hstack([K, np.zeros((3, 1))]).reshape(-1).tolist())
            info_pub.publish(info)


class SequencePlayer(CameraPlayer):
    """Plays the frames of a moving sequence (:mod:`vggts_ros.sequences`), one per tick at
    ``rate_hz``, once ``go`` is set: frame 0 until then (objects can be drawn on it), the
    last frame after the end. ``frame_at[round(stamp, 6)]`` is the frame index sent with
    that stamp. Every frame is rendered here, before the first tick. ``cameras``: the
    played cameras (their topics), one per camera of the sequence."""

    def __init__(self, seq, cameras: Sequence[PlayedCamera], rate_hz: float = 10.0, name: str = "vggts_seqplayer",
                 reliable: bool = False) -> None:
        self.seq, self.index, self.go = seq, 0, False
        self.frame_at: Dict[float, int] = {}
        self._frames = [seq.frame(i) for i in range(len(seq))]
        super().__init__(cameras, rate_hz=rate_hz, name=name, reliable=reliable)

    def frame(self, k: int):
        """Frame ``k`` as played (a :class:`vggts_ros.scenes.Scene`, its exact masks included)."""
        return self._frames[k]

    @property
    def finished(self) -> bool:
        """Every frame of the sequence has been sent."""
        return self.index >= len(self._frames)

    def sent(self) -> List[tuple]:
        """(stamp, frame index) of every tick so far, in order."""
        with self._lock:
            return sorted(self.frame_at.items())

    def tick(self) -> None:
        k = min(self.index, len(self._frames) - 1)
        for cam in self.seq.cameras:
            self.set_image(cam, self._frames[k].image(cam))
        n = len(self.stamps)
        super().tick()
        with self._lock:
            self.frame_at[round(self.stamps[n], 6)] = k
        if self.go:
            self.index += 1


@dataclass
class Received:
    stamp: float
    arrival: float
    msg: object


class OutputCollector(Node):
    """Subscribes to the node's per-camera outputs and ``/diagnostics``; calls its services."""

    def __init__(self, node_name: str, cameras: Sequence[str], name: str = "vggts_collector",
                 objects3d: bool = False, clouds: bool = False) -> None:
        """``objects3d``: also collect ``~/<camera>/objects3d`` and the fused ``~/objects3d``
        (key ``""``); ``clouds``: ``~/<camera>/object_cloud`` (subscribing makes the node publish it)."""
        super().__init__(name)
        self._lock = threading.Lock()
        self.masks: Dict[str, List[Received]] = {c: [] for c in cameras}
        self.points: Dict[str, List[Received]] = {c: [] for c in cameras}
        self.overlays: Dict[str, List[Received]] = {c: [] for c in cameras}
        self.diagnostics: List[DiagnosticArray] = []
        self.objects3d: Dict[str, List[Received]] = {c: [] for c in list(cameras) + [""]}
        self.clouds: Dict[str, List[Received]] = {c: [] for c in cameras}
        base = f"/{node_name}"
        self._node_name = node_name.strip("/")
        for cam in cameras:
            self.create_subscription(Image, f"{base}/{cam}/mask", self._store(self.masks, cam), 10)
            self.create_subscription(ProjectedPoints, f"{base}/{cam}/points", self._store(self.points, cam), 10)
            self.create_subscription(Image, f"{base}/{cam}/overlay", self._store(self.overlays, cam), 10)
        if objects3d:
            for cam in cameras:
                self.create_subscription(Objects3D, f"{base}/{cam}/objects3d", self._store(self.objects3d, cam), 10)
            self.create_subscription(Objects3D, f"{base}/objects3d", self._store(self.objects3d, ""), 10)
        if clouds:
            from sensor_msgs.msg import PointCloud2

            for cam in cameras:
                self.create_subscription(PointCloud2, f"{base}/{cam}/object_cloud", self._store(self.clouds, cam), 10)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self._set = self.create_client(SetSourceMask, f"{base}/set_source_mask")
        self._clear = self.create_client(ClearObjects, f"{base}/clear_objects")
        self._params = self.create_client(SetParameters, f"{base}/set_parameters")

    def _store(self, table, camera):
        def callback(msg):
            stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            with self._lock:
                table[camera].append(Received(stamp, time.monotonic(), msg))
        return callback

    def _on_diag(self, msg):
        with self._lock:
            self.diagnostics.append(msg)

    def count(self, table: str, camera: str) -> int:
        with self._lock:
            return len(getattr(self, table)[camera])

    def latest(self, table: str, camera: str) -> Optional[Received]:
        with self._lock:
            items = getattr(self, table)[camera]
            return items[-1] if items else None

    def at_stamp(self, table: str, camera: str, stamp: float) -> Optional[Received]:
        """The newest message of ``table`` for ``camera`` stamped ``stamp`` (outputs of one
        set travel separately: a large mask may arrive after its small points message)."""
        with self._lock:
            for item in reversed(getattr(self, table)[camera]):
                if abs(item.stamp - stamp) < 1e-6:
                    return item
        return None

    def clear_received(self) -> None:
        with self._lock:
            for table in (self.masks, self.points, self.overlays, self.objects3d, self.clouds):
                for items in table.values():
                    items.clear()
            self.diagnostics.clear()

    def pipeline_status(self) -> Optional[Dict[str, str]]:
        """Key/values of the node's latest pipeline diagnostic status."""
        with self._lock:
            arrays = list(self.diagnostics)
        for array in reversed(arrays):
            for status in array.status:
                if status.name == f"{self._node_name}: pipeline":
                    return {kv.key: kv.value for kv in status.values}
        return None

    def camera_status(self, camera: str) -> Optional[Dict[str, str]]:
        """Key/values of the node's latest diagnostic status for ``camera``."""
        with self._lock:
            arrays = list(self.diagnostics)
        for array in reversed(arrays):
            for status in array.status:
                if status.name == f"{self._node_name}: camera {camera}":
                    return {kv.key: kv.value for kv in status.values}
        return None

    def wait_for_frames(self, cameras: Sequence[str], timeout: float) -> bool:
        """Wait until the node reports frames received from every camera in ``cameras``."""
        return wait_until(
            lambda: all(int((self.camera_status(c) or {}).get("received", 0)) > 0 for c in cameras), timeout)

    def _call(self, client, request, timeout: float):
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {client.srv_name} is not available")
        future = client.call_async(request)
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        if not done.wait(timeout):
            raise TimeoutError(f"service {client.srv_name} did not answer within {timeout} s")
        return future.result()

    def set_source_mask(self, camera: str, mask: np.ndarray, object_id: int = 0, stamp: float = 0.0,
                        label: str = "", encoding: str = "mono8", timeout: float = 30.0):
        req = SetSourceMask.Request()
        req.camera = camera
        fill_image(req.mask, (np.asarray(mask) != 0).astype(np.uint8) * 255 if mask.dtype == bool else np.asarray(mask), encoding)
        req.object_id = object_id
        req.stamp = to_time(stamp) if stamp else Time()
        req.label = label
        return self._call(self._set, req, timeout)

    def set_parameters(self, timeout: float = 30.0, **values):
        """What ``ros2 param set`` does; keys use '__' for '.' (``sync__slop=0.1``).
        Returns the node's SetParametersResult per parameter."""
        from rclpy.parameter import Parameter

        req = SetParameters.Request()
        req.parameters = [Parameter(k.replace("__", "."), value=v).to_parameter_msg() for k, v in values.items()]
        return self._call(self._params, req, timeout).results

    def pipeline_level(self) -> Optional[int]:
        """Level (0 OK, 1 WARN, 2 ERROR) of the latest pipeline status."""
        status = self.pipeline_diagnostic()
        if status is None:
            return None
        return int.from_bytes(status.level, "little") if isinstance(status.level, bytes) else int(status.level)

    def pipeline_diagnostic(self):
        """The latest pipeline ``DiagnosticStatus`` of the node."""
        with self._lock:
            arrays = list(self.diagnostics)
        for array in reversed(arrays):
            for status in array.status:
                if status.name == f"{self._node_name}: pipeline":
                    return status
        return None

    def clear_objects(self, object_id: int = 0, timeout: float = 30.0):
        return self._call(self._clear, ClearObjects.Request(object_id=object_id), timeout)


class Spinner:
    """Spins some nodes on a background executor until closed."""

    def __init__(self, *nodes: Node) -> None:
        self.executor = MultiThreadedExecutor(num_threads=4)
        self.nodes = list(nodes)
        for node in nodes:
            self.executor.add_node(node)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._closing.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        # Stop the spin loop before shutting the executor down: shutdown destroys the
        # executor's guard condition at once, and a spin still inside the executor would
        # raise InvalidHandle on it. Detach the nodes before destroying them, so that no
        # callback is still scheduled on a node its owner is about to destroy.
        self._closing.set()
        self._thread.join(timeout=5)
        for node in self.nodes:
            self.executor.remove_node(node)
        stop_executor(self.executor, 2.0)


def wait_until(predicate: Callable[[], bool], timeout: float, period: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period)
    return predicate()


def write_params_file(cfg: NodeConfig, path: str, node_name: str = "vggts", extra: Optional[Dict] = None) -> str:
    """Write ``cfg`` as a ROS 2 parameters file (nested ``ros__parameters``) keyed by
    ``node_name`` (``/**`` for any node); ``extra`` adds nested parameters as they are
    (e.g. ``{"qos_overrides": {...}}``)."""
    tree: Dict = dict(extra or {})
    for key, value in cfg.to_parameters().items():
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    with open(path, "w", encoding="utf-8") as handle:
        yaml.safe_dump({node_name: {"ros__parameters": tree}}, handle, sort_keys=False)
    return path


@dataclass
class NodeProcess:
    """The real node executable in a child process, with its output captured to a file."""

    cfg: NodeConfig
    node_name: str = "vggts"
    extra_args: Sequence[str] = ()
    env: Optional[Dict[str, str]] = None
    workdir: Optional[str] = None
    params_file: Optional[str] = None  # use this file instead of writing ``cfg``
    extra_params: Dict = field(default_factory=dict)  # nested parameters written next to ``cfg``'s
    proc: Optional[subprocess.Popen] = field(default=None, init=False)
    log_path: str = field(default="", init=False)

    def start(self) -> "NodeProcess":
        workdir = self.workdir or tempfile.mkdtemp(prefix="vggts_node_")
        params = self.params_file or write_params_file(self.cfg, os.path.join(workdir, "params.yaml"),
                                                       "/" + self.node_name.strip("/"), self.extra_params)
        self.log_path = os.path.join(workdir, "node.log")
        namespace, _, name = self.node_name.strip("/").rpartition("/")
        cmd = [sys.executable, "-m", "vggts_ros.ros.node", "--ros-args", "--params-file", params,
               "-r", f"__node:={name}", *(["-r", f"__ns:=/{namespace}"] if namespace else []), *self.extra_args]
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self._log = open(self.log_path, "w", encoding="utf-8")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        return self

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8") as handle:
                return handle.read()
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> Optional[int]:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(2)  # SIGINT: the node shuts down cleanly
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode
