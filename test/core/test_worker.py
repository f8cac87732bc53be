"""The camera-rate thread (vggts_ros.worker.LatestPerKeyWorker): per camera only the newest
frame waits, cameras are served in the order they started waiting (none starves), a failing item is
reported and the thread goes on, stop lets the item in progress finish."""

import threading

from vggts_ros.worker import LatestPerKeyWorker


def test_newest_item_per_key_in_arrival_order_and_errors_reported():
    gate = threading.Event()
    started = threading.Event()
    done = []
    errors = []
    finished = threading.Event()

    def process(key, item):
        if item == "block":
            started.set()
            gate.wait(10)
        if item == "boom":
            raise RuntimeError("bad frame")
        done.append((key, item))
        if item == "last":
            finished.set()

    w = LatestPerKeyWorker(process, lambda k, i, e: errors.append((k, i, str(e))))
    try:
        w.submit("ego", "block")
        assert started.wait(10)
        # while the thread is busy: exo1 gets three frames (only the newest stays),
        # exo2 one that fails, then ego one more
        assert w.submit("exo1", 1) is False
        assert w.submit("exo2", "boom") is False
        assert w.submit("exo1", 2) is True
        assert w.submit("exo1", 3) is True
        w.submit("ego", "last")
        gate.set()
        assert finished.wait(10)
        assert done == [("ego", "block"), ("exo1", 3), ("ego", "last")]
        assert errors == [("exo2", "boom", "bad frame")]
        assert w.replaced == 2 and w.alive
    finally:
        w.stop(timeout=5)
    assert not w.alive


def test_no_camera_starves_when_frames_come_faster_than_they_are_processed():
    """Each tick sends ego, exo1, exo2 while the thread is still busy with the previous
    frame (the demo's moving scene under load): every camera is still served, in turn. A
    replaced frame that moved its camera to the back of the queue starved the camera sent
    last in each tick."""
    done = []
    finished = threading.Event()

    def process(key, item):
        done.append(key)
        if len(done) < 30:
            for cam in ("ego", "exo1", "exo2"):  # the next tick arrives during this frame
                w.submit(cam, len(done))
        else:
            finished.set()

    w = LatestPerKeyWorker(process, lambda k, i, e: None)
    try:
        for cam in ("ego", "exo1", "exo2"):
            w.submit(cam, 0)
        assert finished.wait(10)
        assert done[:30] == ["ego", "exo1", "exo2"] * 10
        assert w.replaced > 0
    finally:
        w.stop(timeout=5)


def test_stop_lets_the_item_in_progress_finish():
    gate = threading.Event()
    started = threading.Event()
    done = []

    def process(key, item):
        started.set()
        gate.wait(10)
        done.append(item)

    w = LatestPerKeyWorker(process, lambda k, i, e: None)
    w.submit("cam", "first")
    assert started.wait(10)
    w.submit("cam", "never")
    stopper = threading.Thread(target=w.stop, kwargs=dict(timeout=10))
    stopper.start()
    gate.set()
    stopper.join(10)
    assert done == ["first"] and not w.alive


def test_the_inference_thread_takes_the_newest_set_spaced_by_max_rate_and_survives_errors():
    """LatestWorker (the node's inference thread): a set submitted while another waits
    replaces it, max_rate spaces the starts, a failing set is reported and the next runs."""
    import time

    from vggts_ros.worker import LatestWorker

    gate, started, finished = threading.Event(), threading.Event(), threading.Event()
    starts, done, errors = [], [], []

    def process(item, queued):
        starts.append(time.monotonic())
        if item == "block":
            started.set()
            gate.wait(10)
        if item == "boom":
            raise RuntimeError("CUDA out of memory")
        done.append(item)
        if item == "last":
            finished.set()

    rate = [0.0]
    w = LatestWorker(process, lambda item, exc: errors.append((item, str(exc))), lambda: rate[0])
    try:
        w.submit("block")
        assert started.wait(10)
        assert w.submit(1) is False and w.submit(2) is True and w.submit("boom") is True  # only the newest waits
        gate.set()
        assert wait_for(lambda: errors == [("boom", "CUDA out of memory")])
        rate[0] = 4.0  # at most 4 sets a second from now on
        w.submit("a")
        assert wait_for(lambda: "a" in done)
        w.submit("last")
        assert finished.wait(10)
        assert done == ["block", "a", "last"] and w.replaced == 2
        assert starts[-1] - starts[-2] >= 0.25 - 1e-3  # spaced by 1 / max_rate
        w.submit("late")
        w.discard()  # every object cleared: the waiting set goes
    finally:
        w.stop(timeout=5)
    assert not w.alive and "late" not in done


def wait_for(predicate, timeout=10.0):
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
