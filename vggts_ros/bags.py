"""Reading and writing ROS 2 bags (rosbag2 sqlite3/MCAP directories, bare MCAP files)
without ROS, with the ``rosbags`` library.

The project's own messages (``msg/*.msg``) are registered in a ``rosbags`` type store
next to the standard ROS 2 types, so ``vggts_ros/msg/ProjectedPoints`` is serialised
exactly as the node's publisher would (CDR) and its definition is stored in the file
(MCAP schema), which is what Foxglove needs to show it.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

PACKAGE = "vggts_ros"
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
POINTS = f"{PACKAGE}/msg/ProjectedPoints"


class BagError(ValueError):
    """A bag that cannot be read or written as asked (the message says why)."""


def _msg_dir() -> Path:
    """``msg/`` of the source tree, of a pip install (``<prefix>/share/vggts_ros/msg``,
    setup.py's data files), or of the installed ROS package share directory."""
    import sysconfig

    here = Path(__file__).resolve().parent
    prefixes = dict.fromkeys([sysconfig.get_path("data"), sys.prefix])
    for candidate in (here.parent / "msg", here / "msg", *(Path(p) / "share" / PACKAGE / "msg" for p in prefixes)):
        if (candidate / "ProjectedPoints.msg").is_file():
            return candidate
    try:  # an installed ROS package (colcon) keeps msg/ in its share directory
        from ament_index_python.packages import get_package_share_directory

        candidate = Path(get_package_share_directory(PACKAGE)) / "msg"
        if (candidate / "ProjectedPoints.msg").is_file():
            return candidate
    except Exception:
        pass
    raise BagError("cannot find the vggts_ros msg/*.msg definitions next to the package")


_TYPESTORE = None


def typestore():
    """The ROS 2 type store (newest distribution rosbags knows) plus vggts_ros/msg types."""
    global _TYPESTORE
    if _TYPESTORE is None:
        try:
            from rosbags.typesys import Stores, get_types_from_msg, get_typestore
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise BagError("reading and writing bags needs the 'rosbags' package (pip install rosbags)") from exc
        store = get_typestore(Stores.LATEST)
        types: Dict = {}
        for path in sorted(_msg_dir().glob("*.msg")):
            types.update(get_types_from_msg(path.read_text(encoding="utf-8"), f"{PACKAGE}/msg/{path.stem}"))
        store.register(types)
        _TYPESTORE = store
    return _TYPESTORE


def to_ns(sec: int, nanosec: int) -> int:
    return int(sec) * 1_000_000_000 + int(nanosec)


def stamp_of(msg) -> int:
    """Header stamp of a deserialised message, in nanoseconds."""
    return to_ns(msg.header.stamp.sec, msg.header.stamp.nanosec)


def header(stamp_ns: int, frame_id: str = ""):
    ts = typestore()
    Time = ts.types["builtin_interfaces/msg/Time"]
    Header = ts.types["std_msgs/msg/Header"]
    return Header(stamp=Time(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000)),
                  frame_id=frame_id)


def image_msg(array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str = ""):
    """``sensor_msgs/msg/Image`` holding ``array`` (HxW or HxWxC uint8)."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise BagError(f"expected uint8 pixels, got {array.dtype}")
    channels = array.shape[2] if array.ndim == 3 else 1
    Image = typestore().types[IMAGE]
    return Image(header=header(stamp_ns, frame_id), height=int(array.shape[0]), width=int(array.shape[1]),
                 encoding=encoding, is_bigendian=0, step=int(array.shape[1] * channels),
                 data=array.reshape(-1).view(np.uint8))


def depth_msg(depth: np.ndarray, encoding: str, stamp_ns: int, frame_id: str = ""):
    """``sensor_msgs/msg/Image`` of a depth map in metres (NaN = no reading) as REP 118
    publishes it: ``32FC1`` (metres) or ``16UC1`` (millimetres)."""
    from vggts_ros.geometry.depth import encode_depth

    arr = encode_depth(depth, encoding)
    Image = typestore().types[IMAGE]
    return Image(header=header(stamp_ns, frame_id), height=int(arr.shape[0]), width=int(arr.shape[1]),
                 encoding=encoding, is_bigendian=0, step=int(arr.shape[1] * arr.itemsize),
                 data=arr.reshape(-1).view(np.uint8))


def camera_info_msg(K: np.ndarray, size: Tuple[int, int], stamp_ns: int, frame_id: str = ""):
    """``sensor_msgs/msg/CameraInfo`` of a pinhole camera without distortion (``K`` 3x3,
    ``size`` = (width, height)); ``P = [K | 0]``."""
    K = np.asarray(K, np.float64).reshape(3, 3)
    P = np.hstack([K, np.zeros((3, 1))])
    ts = typestore()
    Info = ts.types["sensor_msgs/msg/CameraInfo"]
    Roi = ts.types["sensor_msgs/msg/RegionOfInterest"]
    return Info(header=header(stamp_ns, frame_id), height=int(size[1]), width=int(size[0]),
                distortion_model="plumb_bob", d=np.zeros(5), k=K.reshape(-1), r=np.eye(3).reshape(-1),
                p=P.reshape(-1), binning_x=0, binning_y=0,
                roi=Roi(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def compressed_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str = "", fmt: str = "png"):
    """``sensor_msgs/msg/CompressedImage`` of an RGB image (PNG or JPEG)."""
    import cv2

    ok, data = cv2.imencode(f".{fmt}", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise BagError(f"cannot encode the image as {fmt}")
    Compressed = typestore().types[COMPRESSED]
    return Compressed(header=header(stamp_ns, frame_id), format=fmt, data=data.reshape(-1))


def serialize(msg) -> bytes:
    return bytes(typestore().serialize_cdr(msg, msg.__msgtype__))


def deserialize(raw, msgtype: str):
    return typestore().deserialize_cdr(raw, msgtype)


def open_reader(path: str | Path):
    """A ``rosbags`` reader over a rosbag2 directory, a ``.mcap`` or a ``.db3`` file."""
    from rosbags.rosbag2 import Reader

    path = Path(path)
    if not path.exists():
        raise BagError(f"bag not found: {path}")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        raise BagError(f"{path} is a directory without metadata.yaml, not a rosbag2 bag")
    if path.is_file() and path.suffix not in (".mcap", ".db3"):
        raise BagError(f"{path}: expected a rosbag2 directory, a .mcap or a .db3 file")
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:
        raise BagError(f"cannot open bag {path}: {type(exc).__name__}: {exc}") from exc
    return reader


class BagWriter:
    """Writes a rosbag2 directory, or (``path`` ending in ``.mcap``) one bare MCAP file.

    Output is deterministic: the same messages give the same bytes (no wall-clock
    time, random ids or temporary path names end up in the file).
    """

    def __init__(self, path: str | Path, storage: str = "mcap") -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"output {self.path} exists already; remove it or choose another path")
        self.single_file = self.path.suffix == ".mcap"
        if self.single_file and storage != "mcap":
            raise BagError(f"{self.path}: a .mcap output needs the mcap storage")
        plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}.get(storage)
        if plugin is None:
            raise BagError(f"storage must be mcap or sqlite3, got {storage!r}")
        self._tmp: Optional[Path] = None
        target = self.path
        if self.single_file:
            # rosbags writes <dir>/<dir name>.mcap; the stem keeps the stored file name
            # identical to the final one whatever the temporary directory is called.
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = Path(tempfile.mkdtemp(prefix=".vggts-bag-", dir=self.path.parent))
            target = self._tmp / self.path.stem
        self._writer = Writer(target, version=9, storage_plugin=plugin)
        self._target = target
        self._writer.open()
        self._connections: Dict[Tuple[str, str], object] = {}

    def connection(self, topic: str, msgtype: str):
        key = (topic, msgtype)
        if key not in self._connections:
            self._connections[key] = self._writer.add_connection(topic, msgtype, typestore=typestore())
        return self._connections[key]

    def write(self, topic: str, msg, log_time_ns: int) -> None:
        self.write_raw(topic, msg.__msgtype__, serialize(msg), log_time_ns)

    def write_raw(self, topic: str, msgtype: str, raw: bytes, log_time_ns: int) -> None:
        self._writer.write(self.connection(topic, msgtype), int(log_time_ns), raw)

    def close(self) -> None:
        self._writer.close()
        if self.single_file:
            produced = self._target / f"{self._target.name}.mcap"
            shutil.move(str(produced), str(self.path))
            shutil.rmtree(self._tmp, ignore_errors=True)

    def abort(self) -> None:
        try:
            self._writer.abort()
        finally:
            shutil.rmtree(self._tmp or self.path, ignore_errors=True)

    def __enter__(self) -> "BagWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


def write_scene_bag(scene, path: str | Path, frames: int = 3, period: float = 0.2, jitter: float = 0.004,
                    start: float = 100.0, storage: str = "mcap", gt: bool = True, namespace: str = "/scene",
                    mask_camera: Optional[str] = None, drop: Sequence[Tuple[str, int]] = (),
                    compressed: bool = False, noise: float = 0.0, depth: Optional[Dict[str, str]] = None,
                    camera_info: bool = False) -> Dict[str, str]:
    """A bag of a bundled scene (``vggts_ros.scenes``) seen as still camera streams.

    Every camera publishes ``frames`` images at ``period`` s; camera ``k``'s stamps are
    offset by ``k * jitter`` s (cameras are never exactly in step). With ``gt`` the exact
    label images (value = object id) go on ``<namespace>/<camera>/gt``; with
    ``mask_camera`` that camera's labels of the first frame also go on
    ``<namespace>/<camera>/source_mask``. ``drop`` lists (camera, frame index) pairs
    left out, as a camera that missed a frame. ``compressed`` writes PNG
    ``sensor_msgs/CompressedImage`` on ``.../image_raw/compressed`` instead of raw images;
    ``noise`` adds seeded Gaussian noise of that sigma to every frame (frames differ, as
    a real camera's do). ``depth``: camera -> encoding (``32FC1``/``16UC1``): that camera's
    exact depth on ``<namespace>/<camera>/depth/image_raw`` with each frame's stamp;
    ``camera_info``: every camera's ``K`` on ``<namespace>/<camera>/camera_info``. Returns
    camera name -> image topic.
    """
    topics = {}
    with BagWriter(path, storage=storage) as bag:
        for i in range(frames):
            for k, name in enumerate(scene.views):
                stamp = int(round((start + i * period + k * jitter) * 1e9))
                topic = f"{namespace}/{name}/image_raw" + ("/compressed" if compressed else "")
                topics[name] = topic
                if (name, i) in drop:
                    continue
                image = scene.image(name)
                if noise > 0:
                    rng = np.random.default_rng([i, k])
                    image = np.clip(image + rng.normal(0.0, noise, image.shape), 0, 255).astype(np.uint8)
                if compressed:
                    bag.write(topic, compressed_msg(image, stamp, name), stamp)
                else:
                    bag.write(topic, image_msg(image, "rgb8", stamp, name), stamp)
                if depth and name in depth:
                    bag.write(f"{namespace}/{name}/depth/image_raw",
                              depth_msg(scene.depth(name), depth[name], stamp, name), stamp)
                if camera_info:
                    cam = scene.cameras[name]
                    bag.write(f"{namespace}/{name}/camera_info", camera_info_msg(cam.K, cam.size, stamp, name), stamp)
                labels = np.zeros(scene.image(name).shape[:2], np.uint8)
                for oid in scene.object_ids:
                    labels[scene.mask(name, oid)] = oid
                if gt:
                    bag.write(f"{namespace}/{name}/gt", image_msg(labels, "mono8", stamp, name), stamp)
                if mask_camera == name and i == 0:
                    bag.write(f"{namespace}/{name}/source_mask", image_msg(labels, "mono8", stamp, name), stamp + 1)
    return topics


def write_sequence_bag(seq, path: str | Path, start: float = 100.0, jitter: float = 0.004, storage: str = "mcap",
                       gt: bool = True, namespace: str = "/scene", mask_camera: Optional[str] = None) -> Dict[str, str]:
    """A bag of a moving sequence (``vggts_ros.sequences``): every camera's frames at the
    sequence's rate (camera ``k``'s stamps offset by ``k * jitter`` s), with ``gt`` the
    exact label images of every frame on ``<namespace>/<camera>/gt``, and with
    ``mask_camera`` that camera's first-frame labels on ``<namespace>/<camera>/source_mask``.
    Returns camera name -> image topic."""
    topics = {}
    with BagWriter(path, storage=storage) as bag:
        for i in range(len(seq)):
            for k, name in enumerate(seq.cameras):
                stamp = int(round((start + seq.stamp(i) + k * jitter) * 1e9))
                topic = f"{namespace}/{name}/image_raw"
                topics[name] = topic
                image, masks = seq.view(i, name)
                bag.write(topic, image_msg(image, "rgb8", stamp, name), stamp)
                labels = np.zeros(image.shape[:2], np.uint8)
                for oid, m in masks.items():
                    labels[m] = oid
                if gt:
                    bag.write(f"{namespace}/{name}/gt", image_msg(labels, "mono8", stamp, name), stamp)
                if mask_camera == name and i == 0:
                    bag.write(f"{namespace}/{name}/source_mask", image_msg(labels, "mono8", stamp, name), stamp + 1)
    return topics
