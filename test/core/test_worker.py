"""The camera-rate thread (vggts_ros.worker.LatestPerKeyWorker): per camera only the newest
frame waits, cameras are served in the order their newest frames came, a failing item is
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
