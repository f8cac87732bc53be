"""The node's ROS-free parts: object registry (generations, limits), frame history (in
seconds), frame-size tracking, diagnostics bookkeeping, size checks before decoding."""

import array

import cv2
import numpy as np
import pytest

from vggts_ros.frame_history import Frame, FrameHistory, SizeTracker
from vggts_ros.health import ERROR, OK, WARN, Health, RateWindow, Throttle
from vggts_ros.registry import ObjectRegistry, RegistryError
from vggts_ros.ros.conversions import ImageError, check_size, compressed_size, compressed_to_rgb, to_uint8_array


def obj_args(value=1):
    image = np.full((4, 5, 3), value, np.uint8)
    return image, np.ones((4, 5), bool)


def test_registry_generation_marks_every_change_and_snapshots_go_stale():
    reg = ObjectRegistry(max_objects=3)
    gen0, objects = reg.snapshot()
    assert objects == [] and reg.is_current(gen0)
    a, replaced = reg.put("ego", "a", *obj_args(), stamp=1.0)
    assert a.object_id == 1 and not replaced and not reg.is_current(gen0)
    gen1, objects = reg.snapshot()
    assert [o.object_id for o in objects] == [1]
    # Track-mode advance of the same object keeps the generation (results stay valid)...
    assert reg.advance(objects[0], *obj_args(2), stamp=2.0)
    assert reg.is_current(gen1) and reg.get(1).stamp == 2.0
    # ...but a replace or a clear makes every older snapshot stale, and an advance
    # computed for the old object no longer applies.
    b, replaced = reg.put("ego", "b", *obj_args(3), stamp=3.0, object_id=1)
    assert replaced and not reg.is_current(gen1)
    assert not reg.advance(objects[0], *obj_args(4), stamp=4.0)
    assert reg.get(1).label == "b" and reg.get(1).stamp == 3.0
    gen2, _ = reg.snapshot()
    assert reg.clear(0) == [1] and not reg.is_current(gen2)
    with pytest.raises(RegistryError, match="no object with id 7"):
        reg.clear(7)


def test_registry_limits_refuse_with_the_parameter_name():
    reg = ObjectRegistry(max_objects=2, max_label_length=5)
    reg.put("ego", "", *obj_args(), stamp=0.0)
    reg.put("ego", "", *obj_args(), stamp=0.0, object_id=9)
    with pytest.raises(RegistryError, match="inference.max_objects = 2"):
        reg.put("ego", "", *obj_args(), stamp=0.0)
    reg.put("ego", "", *obj_args(), stamp=0.0, object_id=9)  # replacing is always possible
    with pytest.raises(RegistryError, match="inference.max_label_length"):
        reg.check_request(9, "x" * 6)
    with pytest.raises(RegistryError, match="1..255"):
        reg.check_request(300, "")


def frame(cam, stamp):
    return Frame(cam, stamp, 0.0, payload=stamp)


def test_frame_history_keeps_seconds_not_frames_and_restarts_after_a_jump_back():
    hist = FrameHistory(["a"], seconds=1.0, max_frames=1000)
    for k in range(300):  # 100 Hz for 3 s
        hist.add(frame("a", k * 0.01))
    kept = hist.frames("a")
    assert kept[-1].stamp == pytest.approx(2.99) and kept[0].stamp == pytest.approx(1.99)
    found, why = hist.find("a", 2.5004, tolerance=0.002)
    assert found.stamp == pytest.approx(2.5) and why == ""
    missing, why = hist.find("a", 1.0, tolerance=0.002)
    assert missing is None and "keyframe_history = 1 s" in why
    assert hist.find("a", 0.0, 0.002)[0].stamp == pytest.approx(2.99)  # 0 = newest
    # 1 Hz camera: the same setting keeps 2 frames, not 30 s worth of frames.
    slow = FrameHistory(["a"], seconds=1.0)
    for k in range(5):
        slow.add(frame("a", float(k)))
    assert [f.stamp for f in slow.frames("a")] == [3.0, 4.0]
    slow.add(frame("a", 0.5))  # a looped recording starts again
    assert [f.stamp for f in slow.frames("a")] == [0.5]
    capped = FrameHistory(["a"], seconds=100.0, max_frames=3)
    for k in range(10):
        capped.add(frame("a", k * 0.1))
    assert len(capped.frames("a")) == 3


def test_size_tracker_rejects_a_stray_frame_and_relocks_on_a_lasting_change():
    sizes = SizeTracker(relock_after=3)
    assert sizes.check("a", (480, 640)) == ""
    assert "changed mid-stream to 320x240" in sizes.check("a", (240, 320))
    assert sizes.check("a", (480, 640)) == ""  # a stray frame: the stream goes on
    assert sizes.check("a", (240, 320)) and sizes.check("a", (240, 320))
    assert sizes.check("a", (240, 320)) == ""  # third in a row: the new size
    assert sizes.size("a") == (240, 320) and sizes.changes == {"a": 1}
    assert "changed" in sizes.check("a", (480, 640))


def test_rates_are_windowed_and_fall_to_zero():
    window = RateWindow(window=2.0)
    for k in range(10):
        window.add(k * 0.1)
    assert window.rate(1.0) == pytest.approx(5.0)
    assert window.rate(5.0) == 0.0 and window.total == 10


def test_health_levels():
    h = Health(["a", "b"], window=5.0)
    assert h.assess(0.0, (), (), 1.0) == (OK, "ok")
    h.frame("a", 0.1, 0.02)
    h.objects_changed(1, now=1.0)
    level, message = h.assess(2.5, (), (), 1.0)  # 1.5 s without output < 2 periods
    assert level == OK
    level, message = h.assess(3.5, (), (), 1.0)
    assert level == ERROR and "no output for 2.5 s" in message
    h.output(3.6, 0.1)
    assert h.assess(3.7, (), (), 1.0)[0] == OK
    assert h.assess(3.7, ("b",), ("a",), 1.0) == (
        WARN, "stale camera(s): b; camera(s) matching no other camera's stamps: a")
    level, message = h.assess(3.7, ("a", "b"), (), 1.0)
    assert level == ERROR and "no camera publishes" in message
    h.failure(4.0, "RuntimeError: CUDA out of memory")
    level, message = h.assess(4.1, (), (), 1.0)
    assert level == WARN and "CUDA out of memory" in message
    h.output(9.0, 0.1)
    assert h.assess(9.5, (), (), 1.0)[0] == OK  # one failure is not WARN forever
    h.objects_changed(0, now=10.0)
    assert h.assess(100.0, (), (), 1.0)[0] == OK  # no objects: no output expected
    values = h.camera_values("a", 0.2)
    assert values["stamp_delay_ms"] == "20.0" and values["received"] == "1"
    # The stall timeout follows the model: 3 x the median set time when that is longer.
    for _ in range(5):
        h.output(10.0, 4.0)
    assert h.stall_timeout(1.0) == pytest.approx(12.0)
    assert h.stall_timeout(1.0, given=2.0) == 2.0


def test_throttle():
    t = Throttle(5.0)
    assert t.ready("x", 0.0) and not t.ready("x", 1.0) and not t.ready("x", 4.9)
    assert t.ready("y", 1.0)
    assert t.take_suppressed("x") == 2 and t.take_suppressed("x") == 0
    assert t.ready("x", 5.1)


def test_sizes_are_checked_before_decoding():
    assert check_size(100, 100, 10_000, "frame") == ""
    assert "more than inference.max_image_pixels" in check_size(101, 100, 10_000, "frame")
    assert "no pixels" in check_size(0, 100, 10_000, "mask")
    # A small PNG that would decode to 20000x20000 pixels is refused from its header.
    big = cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes()
    bomb = bytearray(big)
    bomb[16:24] = (20000).to_bytes(4, "big") * 2
    assert compressed_size(bytes(bomb)) == (20000, 20000)

    class Msg:
        format = "png"
        data = array.array("B", bytes(bomb))

    with pytest.raises(ImageError, match="max_image_pixels"):
        compressed_to_rgb(Msg, max_pixels=1_000_000)
    Msg.data = array.array("B", b"GIF89a....")
    with pytest.raises(ImageError, match="no readable PNG/JPEG header"):
        compressed_to_rgb(Msg, max_pixels=1_000_000)
    jpg = cv2.imencode(".jpg", np.zeros((33, 77, 3), np.uint8))[1]
    assert compressed_size(jpg.tobytes()) == (33, 77)


def test_uint8_array_holds_the_same_bytes():
    pixels = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    out = to_uint8_array(pixels[:, ::-1])  # non-contiguous input
    assert out.typecode == "B" and bytes(out) == np.ascontiguousarray(pixels[:, ::-1]).tobytes()
