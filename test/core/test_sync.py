"""Approximate-time synchroniser: exact sets for hand-made stamp sequences."""

import math
import random
import threading

import pytest

from vggts_ros.sync import ApproximateTimeSync, SyncSet


def r(x):
    return round(x, 6)


def feed(sync, events):
    """events: (camera, stamp, now); returns [(emitting event index, SyncSet)]."""
    out = []
    for i, (cam, stamp, now) in enumerate(events):
        for s in sync.add(cam, stamp, msg=(cam, stamp), now=now):
            out.append((i, s))
    return out


def as_stamps(sets):
    return [dict(s.stamps) for _, s in sets]


def test_jitter_within_slop_pairs_every_frame():
    sync = ApproximateTimeSync(["a", "b"], slop=0.02, queue_size=5, stale_after=1.0)
    jitter = [0.004, -0.003, 0.005, -0.005, 0.0, 0.002]
    events = []
    for k, j in enumerate(jitter):
        events.append(("a", r(0.1 * k), r(0.1 * k + 0.01)))
        events.append(("b", r(0.1 * k + j), r(0.1 * k + 0.012)))
    sets = feed(sync, events)
    assert as_stamps(sets) == [{"a": r(0.1 * k), "b": r(0.1 * k + j)} for k, j in enumerate(jitter)]
    # Messages are the ones that were added, nothing is missing.
    assert all(s.messages == {"a": ("a", s.stamps["a"]), "b": ("b", s.stamps["b"])} for _, s in sets)
    assert all(s.missing == () for _, s in sets)
    assert [s.stamp for _, s in sets] == [max(d.values()) for d in as_stamps(sets)]
    # The first set waits for a's next message (its rate is unknown yet); once the
    # rate is known each set leaves as soon as its last message arrives.
    assert [i for i, _ in sets] == [2] + [2 * k + 1 for k in range(1, len(jitter))]
    assert sync.emitted == len(jitter)
    assert sync.dropped == {"a": 0, "b": 0}


def test_zero_lower_bound_always_waits_for_the_next_message():
    # Like message_filters' C++ default: a set whose members are not exactly aligned
    # waits until every camera shows a message after the pivot.
    sync = ApproximateTimeSync(["a", "b"], slop=0.02, inter_message_lower_bound=0.0, stale_after=None)
    assert sync.add("a", 0.0, "a0") == []
    assert sync.add("b", 0.004, "b0") == []
    sets = sync.add("a", 0.1, "a1")  # a's next frame shows 0.0 was its closest
    assert [s.stamps for s in sets] == [{"a": 0.0, "b": 0.004}]
    assert [s.stamps for s in sync.add("b", 0.1, "b1")] == [{"a": 0.1, "b": 0.1}]


def test_tightest_set_prefers_the_closer_later_message():
    sync = ApproximateTimeSync(["a", "b"], slop=0.02, inter_message_lower_bound=0.0, stale_after=None)
    sync.add("a", 1.000, "a0")
    sync.add("a", 1.010, "a1")
    sets = sync.add("b", 1.009, "b0")
    # Pivot is b (newest head); a's 1.010 is closer than 1.000, which is dropped.
    assert [s.stamps for s in sets] == [{"a": 1.010, "b": 1.009}]
    assert sets[0].stamp == 1.010
    assert sync.stats()["dropped_by_reason"]["a"]["unmatched"] == 1


def test_offset_beyond_slop_never_syncs():
    sync = ApproximateTimeSync(["a", "b"], slop=0.02, queue_size=5, stale_after=None)
    events = []
    for k in range(20):
        events.append(("a", r(0.1 * k), r(0.1 * k)))
        events.append(("b", r(0.1 * k + 0.05), r(0.1 * k + 0.05)))
    assert feed(sync, events) == []
    assert sync.emitted == 0
    st = sync.stats()
    # Every message but the newest of each stream was discarded as unmatchable.
    assert st["dropped_by_reason"]["a"]["unmatched"] == 20
    assert st["dropped_by_reason"]["b"]["unmatched"] == 19
    assert st["queued"] == {"a": 0, "b": 1}


def test_queue_overflow_drops_oldest_and_late_messages_are_dropped():
    sync = ApproximateTimeSync(["a", "b"], slop=0.02, queue_size=3, stale_after=None)
    for k in range(5):
        assert sync.add("a", r(0.1 * k), f"a{k}") == []
    st = sync.stats()
    assert st["dropped_by_reason"]["a"]["overflow"] == 2
    assert st["queued"]["a"] == 3
    sets = sync.add("b", 0.2, "b2")
    assert [(s.messages, s.stamp) for s in sets] == [({"a": "a2", "b": "b2"}, 0.2)]
    # b's message for a time before the last set can never be used.
    assert sync.add("b", 0.1, "b1") == []
    assert sync.stats()["dropped_by_reason"]["b"]["late"] == 1
    sets = sync.add("b", 0.3, "b3")
    assert [s.messages for s in sets] == [{"a": "a3", "b": "b3"}]
    assert sync.dropped == {"a": 2, "b": 1}


def test_out_of_order_duplicate_and_invalid_stamps():
    sync = ApproximateTimeSync(["a", "b"], slop=0.02, stale_after=None)
    assert sync.add("a", 0.1, "a1") == []
    assert sync.add("b", 0.11, "b11") == []  # waits: a might still send 0.11
    # b's older frame arrives late but before any set used it: inserted in order.
    sets = sync.add("b", 0.1, "b10")
    assert [s.messages for s in sets] == [{"a": "a1", "b": "b10"}]
    assert sync.add("b", 0.1, "again") == []  # not newer than the last set
    assert sync.add("a", float("nan"), "nan") == []
    assert sync.add("a", float("inf"), "inf") == []
    assert sync.add("a", "not a time", "str") == []
    assert sync.add("a", 0.2, "a2") == []
    assert sync.add("a", 0.2, "a2-dup") == []
    by = sync.stats()["dropped_by_reason"]
    assert by["a"]["invalid"] == 3 and by["a"]["duplicate"] == 1
    assert by["b"]["late"] == 1
    # b's 0.11 was older than the next pivot (0.2) minus slop: dropped, and the
    # original a2 (not the duplicate) pairs with b.
    sets = sync.add("b", 0.2, "b20")
    assert [s.messages for s in sets] == [{"a": "a2", "b": "b20"}]
    assert by["b"]["unmatched"] == 1
    with pytest.raises(ValueError):
        sync.add("nope", 1.0, None)


def test_three_cameras_at_different_rates():
    # a at 30 Hz, b at 10 Hz (+3 ms), c at 15 Hz (-2 ms): all three agree within
    # 10 ms only every 0.2 s.
    sync = ApproximateTimeSync(["a", "b", "c"], slop=0.01, queue_size=10, stale_after=None)
    events = []
    for k in range(31):
        events.append(("a", r(k / 30), r(k / 30)))
    for k in range(11):
        events.append(("b", r(k / 10 + 0.003), r(k / 10 + 0.003)))
    for k in range(16):
        events.append(("c", r(k / 15 - 0.002), r(k / 15 - 0.002)))
    events.sort(key=lambda e: (e[2], e[0]))
    sets = feed(sync, events)
    expected = [
        {"a": r(k * 0.2), "b": r(k * 0.2 + 0.003), "c": r(k * 0.2 - 0.002)} for k in range(5)
    ]
    # The 1.0 s set is found too once b's and c's rates are known.
    expected.append({"a": 1.0, "b": 1.003, "c": 0.998})
    assert as_stamps(sets) == expected
    stamps = [s.stamp for _, s in sets]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert all(s.spread <= 0.01 + 1e-9 for _, s in sets)


def test_silent_camera_does_not_stall_and_rejoins():
    sync = ApproximateTimeSync(["a", "b", "c"], slop=0.02, queue_size=10, stale_after=0.45)
    events = []
    for k in range(25):
        t = r(0.1 * k)
        for j, cam in enumerate("abc"):
            if cam == "c" and 4 <= k < 15:
                continue  # c silent from 0.4 s to 1.4 s
            events.append((cam, t, r(t + 0.005 + 0.001 * j)))
    sets = feed(sync, events)
    got = [(round(s.stamp, 6), s.missing) for _, s in sets]
    expected = [(r(0.1 * k), ()) for k in range(4)]
    expected += [(r(0.1 * k), ("c",)) for k in range(4, 16)]  # 1.5: c arrives after the set
    expected += [(r(0.1 * k), ()) for k in range(16, 25)]
    assert got == expected
    # Nothing was emitted while c could still have been on its way: the 0.4-0.7 sets
    # left together when a's 0.8 frame arrived after c had been silent > 0.45 s.
    emit_idx = {round(s.stamp, 6): i for i, s in sets}
    assert events[emit_idx[0.4]] == ("a", 0.8, 0.805)
    assert emit_idx[0.4] == emit_idx[0.7]
    by = sync.stats()["dropped_by_reason"]
    assert by["c"]["late"] == 1  # its 1.5 frame came just after the 1.5 set
    assert sync.stale_cameras(now=3.0) == ("a", "b", "c")
    assert sync.stale_cameras(now=2.41) == ()


def test_poll_releases_sets_when_a_camera_goes_stale():
    sync = ApproximateTimeSync(["a", "b", "c"], slop=0.02, stale_after=0.5)
    assert sync.add("a", 0.0, "a0", now=0.0) == []
    assert sync.add("b", 0.0, "b0", now=0.0) == []
    assert sync.poll(now=0.4) == []
    assert sync.stale_cameras(now=0.4) == ()
    sets = sync.poll(now=0.6)  # c never published
    assert [(s.messages, s.missing) for s in sets] == [({"a": "a0", "b": "b0"}, ("c",))]
    assert sync.stale_cameras(now=0.6) == ("a", "b", "c")


def test_stale_camera_contributes_its_queued_message():
    sync = ApproximateTimeSync(["a", "b", "c"], slop=0.02, stale_after=0.5, inter_message_lower_bound=0.0)
    sync.add("c", 0.004, "c0", now=0.0)  # c's frame is a bit late, then c goes silent
    sync.add("a", 0.0, "a0", now=0.0)
    assert sync.add("b", 0.0, "b0", now=0.0) == []  # a or b might still send 0.004
    assert sync.poll(now=0.3) == []
    sets = sync.poll(now=0.7)  # c is stale: a and b are final, c's frame still fits
    assert [(s.messages, s.missing) for s in sets] == [({"a": "a0", "b": "b0", "c": "c0"}, ())]
    sets = sync.add("a", 0.1, "a1", now=0.8) + sync.add("b", 0.1, "b1", now=0.8)
    assert [(s.messages, s.missing) for s in sets] == [({"a": "a1", "b": "b1"}, ("c",))]


def test_required_camera_is_always_waited_for():
    sync = ApproximateTimeSync(["src", "t1", "t2"], slop=0.02, stale_after=0.5, required=["src"])
    out = []
    for k in range(10):
        t = r(0.1 * k)
        if k < 3 or k >= 8:
            out += sync.add("src", t, f"s{k}", now=t)
        if k != 5:
            out += sync.add("t1", t, f"a{k}", now=t)
        if k < 2:
            out += sync.add("t2", t, f"b{k}", now=t)
    out += sync.poll(now=5.0)
    got = [(s.stamps, s.missing) for s in out]
    assert got[:2] == [({"src": 0.0, "t1": 0.0, "t2": 0.0}, ()), ({"src": 0.1, "t1": 0.1, "t2": 0.1}, ())]
    # t2 went silent: src + t1 continue once t2 is stale; src silent: nothing at all
    # for 0.3-0.7, even though t1 kept publishing (src is required).
    rest = [(sorted(s), m) for s, m in got[2:]]
    assert [round(max(s.values()), 6) for s, _ in got[2:]] == [0.2, 0.8, 0.9]
    assert all(names == ["src", "t1"] and miss == ("t2",) for names, miss in rest)
    assert sync.stats()["queued"]["src"] == 0


def test_required_camera_alone_is_not_enough():
    sync = ApproximateTimeSync(["src", "t1"], slop=0.02, stale_after=0.5, required=["src"])
    sync.add("src", 0.0, "s0", now=0.0)
    assert sync.poll(now=2.0) == []  # t1 stale: a set needs 2 cameras by default
    single = ApproximateTimeSync(["src", "t1"], slop=0.02, stale_after=0.5, min_cameras=1)
    single.add("src", 0.0, "s0", now=0.0)
    assert [s.missing for s in single.poll(now=2.0)] == [("t1",)]


def test_reset_and_validation():
    sync = ApproximateTimeSync(["a", "b"], slop=0.02, stale_after=None)
    sync.add("a", 1.0, "a")
    sync.add("b", 1.0, "b")
    assert sync.emitted == 1
    sync.reset()
    assert sync.emitted == 0 and sync.stats()["last_stamp"] is None
    # After a reset older stamps are accepted again (e.g. a bag played twice).
    assert [s.stamps for s in (sync.add("a", 0.5, "a") + sync.add("b", 0.5, "b"))] == [{"a": 0.5, "b": 0.5}]
    for kwargs in (dict(cameras=[]), dict(cameras=["a", "a"]), dict(cameras=["a"], slop=-1),
                   dict(cameras=["a"], queue_size=0), dict(cameras=["a"], required=["x"]),
                   dict(cameras=["a", "b"], min_cameras=3), dict(cameras=["a"], stale_after=0)):
        with pytest.raises(ValueError):
            ApproximateTimeSync(**kwargs)


def test_threads_every_message_accounted_for():
    cams = ["c0", "c1", "c2", "c3"]
    n = 200
    # Stamps run far faster than the real clock here: no offset correction.
    sync = ApproximateTimeSync(cams, slop=0.005, queue_size=1000, stale_after=None, correct_offset_above=0)
    results = []
    lock = threading.Lock()
    errors = []

    def publish(cam, seed):
        rng = random.Random(seed)
        try:
            for k in range(n):
                sets = sync.add(cam, k * 0.01, (cam, k))
                if rng.random() < 0.3:
                    threading.Event().wait(0.0005)
                with lock:
                    results.extend(sets)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(c, i)) for i, c in enumerate(cams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    # Identical stamps on every camera: whatever the interleaving, each frame makes
    # exactly one complete set and no message is used twice or lost.
    assert sorted(round(s.stamp / 0.01) for s in results) == list(range(n))
    assert all(sorted(s.messages) == cams for s in results)
    used = [m for s in results for m in s.messages.values()]
    assert len(used) == len(set(used)) == n * len(cams)
    assert sync.dropped == {c: 0 for c in cams}
    assert isinstance(results[0], SyncSet) and math.isclose(results[0].spread, 0.0)


def stream(cams, times, offsets=None, latency=0.01, skip=lambda cam, t: False):
    """Events of cameras publishing at each time t, camera clock = t - offset."""
    offsets = offsets or {}
    events = []
    for t in times:
        for j, cam in enumerate(cams):
            if not skip(cam, t):
                events.append((cam, r(t - offsets.get(cam, 0.0)), r(t + latency + 0.001 * j)))
    return events


def test_a_looped_recording_keeps_producing_after_the_loop():
    # A 2 s bag at 10 Hz played three times: stamps go back to 0 at every loop while
    # the arrival clock keeps running.
    sync = ApproximateTimeSync(["a", "b", "c"], slop=0.02, stale_after=1.0)
    events = []
    for loop in range(3):
        for cam, stamp, now in stream("abc", [0.1 * k for k in range(20)]):
            events.append((cam, stamp, r(now + 2.0 * loop)))
    sets = feed(sync, events)
    per_loop = [sum(1 for i, _ in sets if len(events) // 3 * loop <= i < len(events) // 3 * (loop + 1)) for loop in range(3)]
    # Each loop loses at most its first frame while the cameras restart.
    assert per_loop[0] == 20 and per_loop[1] >= 18 and per_loop[2] >= 18, per_loop
    assert sync.resets == 2
    assert all(s.missing == () for _, s in sets)
    assert sync.stats()["dropped_by_reason"]["a"]["late"] == 0


def test_time_jump_signalled_from_outside_restarts_matching():
    sync = ApproximateTimeSync(["a", "b"], slop=0.02, stale_after=None)
    assert len(sync.add("a", 100.0, "a", now=0.0) + sync.add("b", 100.0, "b", now=0.0)) == 1
    sync.time_jumped()
    # Older stamps (less than jump_threshold back, so no self-detection) are accepted again.
    assert [s.stamps for s in sync.add("a", 99.5, "a", now=0.1) + sync.add("b", 99.5, "b", now=0.1)] == [
        {"a": 99.5, "b": 99.5}]
    assert sync.resets == 1


def test_one_camera_with_a_clock_offset_is_corrected_and_reported():
    # c stamps with its own clock, 0.5 s behind; slop is 20 ms.
    sync = ApproximateTimeSync(["a", "b", "c"], slop=0.02, stale_after=1.0)
    events = stream("abc", [r(0.1 * k) for k in range(40)], offsets={"c": 0.5})
    sets = feed(sync, events)
    offsets = sync.clock_offsets()
    assert offsets["a"] == pytest.approx(0.0, abs=0.005) and offsets["b"] == pytest.approx(0.0, abs=0.005)
    assert offsets["c"] == pytest.approx(0.5, abs=0.005)
    assert sync.applied_offsets()["c"] == pytest.approx(0.5, abs=0.005)
    full = [s for _, s in sets if s.missing == ()]
    # Once 5 messages gave the estimate, every frame makes a full set; the stamps
    # reported are the cameras' own.
    assert len(full) >= 30
    for s in full:
        assert s.stamps["c"] == pytest.approx(s.stamps["a"] - 0.5, abs=1e-6)
    assert sync.unmatched_cameras(now=4.0) == ()


def test_small_uncorrected_offset_stops_being_waited_for_and_is_named():
    # c is 0.05 s off (half a frame): beyond slop, below the correction threshold (it
    # could be latency).
    sync = ApproximateTimeSync(["a", "b", "c"], slop=0.02, stale_after=0.5)
    events = stream("abc", [r(0.1 * k) for k in range(40)], offsets={"c": 0.05})
    sets = feed(sync, events)
    assert sync.applied_offsets()["c"] == 0.0
    assert sync.unmatched_cameras(now=4.0) == ("c",)
    assert sync.stale_cameras(now=4.0) == ()
    # a and b keep going without c (only the first 0.5 s may be lost waiting for it).
    assert len(sets) >= 30 and all(s.missing == ("c",) for _, s in sets[-25:])


def test_a_future_stamped_message_is_dropped_and_does_not_reduce_the_rate():
    times = [r(0.1 * k) for k in range(40)]
    clean = feed(ApproximateTimeSync(["a", "b", "c"], slop=0.02, stale_after=1.0), stream("abc", times))
    sync = ApproximateTimeSync(["a", "b", "c"], slop=0.02, stale_after=1.0)
    events = stream("abc", times)
    events.insert(30, ("b", 1000.0, events[29][2]))  # one frame stamped 1000 s ahead
    sets = feed(sync, events)
    assert len(sets) == len(clean) == 40
    assert sync.stats()["dropped_by_reason"]["b"]["future"] == 1
    assert [s.stamps for _, s in sets] == [s.stamps for _, s in clean]


def test_a_lasting_jump_forward_is_accepted_after_three_messages():
    sync = ApproximateTimeSync(["a", "b"], slop=0.02, stale_after=None, correct_offset_above=0)
    for k in range(10):
        sync.add("a", r(0.1 * k), "a", now=r(0.1 * k))
        sync.add("b", r(0.1 * k), "b", now=r(0.1 * k))
    out = []
    for k in range(10, 20):  # both cameras' clocks were set 100 s forward
        out += sync.add("a", r(100 + 0.1 * k), "a", now=r(0.1 * k))
        out += sync.add("b", r(100 + 0.1 * k), "b", now=r(0.1 * k))
    assert sync.stats()["dropped_by_reason"]["a"]["future"] == 2
    assert [round(s.stamp, 6) for s in out] == [r(100 + 0.1 * k) for k in range(12, 20)]


# ---------------------------------------------------------------- rate-following staleness
def _stream(sync, rates, until, delay=0.01):
    """Feed cameras at the given rates (Hz), stamps from 0 up to ``until`` inclusive,
    arriving ``delay`` after their stamp, in arrival order; returns the sets."""
    events = []
    for cam, hz in rates.items():
        n = int(round(until * hz))
        events += [(cam, r(i / hz), r(i / hz + delay)) for i in range(n + 1)]
    events.sort(key=lambda e: (e[2], e[0]))
    return feed(sync, events)


def test_a_slow_camera_is_not_stale_between_its_frames_but_a_fast_one_is():
    rates = {"fast": 30.0, "slow": 1.0}
    fixed = ApproximateTimeSync(list(rates), slop=0.02, queue_size=60, stale_after=0.5)
    adaptive = ApproximateTimeSync(list(rates), slop=0.02, queue_size=60, stale_after=0.5,
                                   stale_periods=5, stale_after_min=0.25)
    _stream(fixed, rates, 5.0)
    _stream(adaptive, rates, 5.0)
    last = 5.01  # both cameras' last message arrived then
    # 0.6 s of silence: k x 1 s has not passed for the 1 Hz camera, k x 1/30 s has for the 30 Hz one.
    assert adaptive.stale_cameras(now=last + 0.6) == ("fast",)
    assert fixed.stale_cameras(now=last + 0.6) == ("fast", "slow")  # the fixed limit ignores rates
    limits = adaptive.stale_limits()
    assert limits["fast"] == pytest.approx(0.25)  # 5/30 s is below the floor
    assert limits["slow"] == pytest.approx(5.0)
    assert fixed.stale_limits() == {"fast": 0.5, "slow": 0.5}
    assert adaptive.stale_cameras(now=last + 0.24) == ()
    assert adaptive.stale_cameras(now=last + 0.26) == ("fast",)
    assert adaptive.stale_cameras(now=last + 4.9) == ("fast",)
    assert adaptive.stale_cameras(now=last + 5.1) == ("fast", "slow")


def test_a_slow_camera_followed_by_its_rate_is_in_every_set():
    # Three cameras, one at 1 Hz: with a fixed 0.5 s limit it is stale between its frames
    # and most sets leave it out; following its rate it is waited for, so every set has it.
    rates = {"a": 10.0, "b": 10.0, "slow": 1.0}
    fixed = ApproximateTimeSync(list(rates), slop=0.02, queue_size=30, stale_after=0.5)
    adaptive = ApproximateTimeSync(list(rates), slop=0.02, queue_size=30, stale_after=0.5, stale_periods=5)
    fixed_sets = _stream(fixed, rates, 6.0)
    adaptive_sets = _stream(adaptive, rates, 6.0)
    assert any("slow" in s.missing for _, s in fixed_sets)
    # Once its rate is known (3 gaps: from 3 s on) the slow camera is in every set.
    later = [s for _, s in adaptive_sets if s.stamp > 3.0 + 1e-6]
    assert [r(s.stamp) for s in later] == [4.0, 5.0, 6.0]
    assert all(s.missing == () for s in later)
    assert adaptive.unmatched_cameras(now=6.01) == ()


def test_a_camera_whose_rate_drops_is_stale_after_k_periods_of_its_old_rate():
    sync = ApproximateTimeSync(["a", "b"], slop=0.02, stale_after=2.0, stale_periods=5, stale_after_min=0.1)
    _stream(sync, {"a": 10.0, "b": 10.0}, 2.0)  # last arrivals at 2.01
    assert sync.stale_limits() == {"a": pytest.approx(0.5), "b": pytest.approx(0.5)}
    # b drops to 1 Hz: its next frame (3.0) is a second away; a keeps 10 Hz.
    for i in range(21, 31):
        sync.add("a", r(i / 10), "a", now=r(i / 10 + 0.01))
        if i * 0.1 < 2.5:
            assert sync.stale_cameras(now=r(i / 10 + 0.01)) == ()
    assert sync.stale_cameras(now=2.50) == ()
    assert sync.stale_cameras(now=2.52) == ("b",)  # 5 x 0.1 s after its last frame, not 2 s
    sync.add("b", 3.0, "b", now=3.01)
    assert sync.stale_cameras(now=3.02) == ()  # live again with its next message
    # Off (stale_periods=0): the fixed limit applies whatever the rate.
    fixed = ApproximateTimeSync(["a", "b"], slop=0.02, stale_after=2.0)
    _stream(fixed, {"a": 10.0, "b": 10.0}, 2.0)
    assert fixed.stale_cameras(now=2.52) == ()
    assert fixed.stale_cameras(now=4.0) == ()
    assert fixed.stale_cameras(now=4.02) == ("a", "b")


def test_rate_following_falls_back_to_the_fixed_limit_until_the_rate_is_known():
    sync = ApproximateTimeSync(["a", "b"], slop=0.02, stale_after=1.0, stale_periods=5)
    for i in range(3):  # 3 frames = 2 gaps: not enough
        sync.add("a", r(5 + i / 30), "a", now=r(i / 30))
    assert sync.stale_limits()["a"] == 1.0
    assert sync.stale_cameras(now=r(2 / 30 + 0.9)) == ()  # not 0.25 s: the fixed 1 s applies
    assert sync.stale_cameras(now=1.01) == ("b",)  # b never published: 1 s from the start
    sync.add("a", r(5 + 3 / 30), "a", now=r(3 / 30))
    assert sync.stale_limits()["a"] == pytest.approx(0.25)
    # A clock jump back restarts the camera: its rate is forgotten, the fixed limit is back.
    sync.add("a", 0.2, "a", now=0.2)
    assert sync.stale_limits()["a"] == 1.0
    for i in range(1, 4):
        sync.add("a", r(0.2 + i / 30), "a", now=r(0.2 + i / 30))
    assert sync.stale_limits()["a"] == pytest.approx(0.25)


def test_rate_following_uses_the_slower_of_stamp_and_arrival_gaps():
    # A recording played at half speed: stamps 0.1 s apart arrive 0.2 s apart.
    sync = ApproximateTimeSync(["a", "b"], slop=0.02, stale_after=1.0, stale_periods=5, stale_after_min=0.1)
    for i in range(6):
        sync.add("a", r(0.1 * i), "a", now=r(0.2 * i))
    assert sync.stale_limits()["a"] == pytest.approx(1.0)  # 5 x 0.2 s, not 5 x 0.1 s
    assert sync.stale_cameras(now=1.0 + 0.9) == ("b",)
    # Bursty delivery: frames 0.1 s apart in stamps arrive in pairs.
    burst = ApproximateTimeSync(["a", "b"], slop=0.02, stale_after=1.0, stale_periods=5, stale_after_min=0.1)
    for i in range(8):
        burst.add("a", r(0.1 * i), "a", now=r(0.2 * (i // 2) + 0.2))
    assert burst.stale_limits()["a"] == pytest.approx(0.5)  # 5 x the stamp period


def test_rate_following_can_be_switched_live_and_is_validated():
    sync = ApproximateTimeSync(["a", "b"], slop=0.02, stale_after=1.0)
    _stream(sync, {"a": 30.0, "b": 30.0}, 1.0)
    assert sync.stale_cameras(now=1.61) == ()
    sync.configure(stale_periods=5)
    assert sync.stale_cameras(now=1.61) == ("a", "b")  # measured rates were kept while off
    sync.configure(stale_periods=0)
    assert sync.stale_cameras(now=1.61) == ()
    for bad in ({"stale_periods": -1}, {"stale_periods": math.inf}, {"stale_after_min": 0},
                {"stale_after_min": math.nan}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ApproximateTimeSync(["a", "b"], **bad)
        with pytest.raises(ValueError, match=next(iter(bad))):
            sync.configure(**bad)
