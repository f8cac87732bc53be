"""Masks at camera rate: per-camera propagation between cross-view results (issue 22).

    python bench/bench_propagation.py cost      [--frames 40]            # (a) per-step cost, 640x480
    python bench/bench_propagation.py methods   [--seeds 0,1]            # KLT vs dense flow, IoU by age
    python bench/bench_propagation.py stream    [--seeds 0,1] [--duration 10] [--json out.json]   # (b)
                                                [--cache DIR] [--step-seconds 0.8]

(a) ``cost``: the tracker's ``update`` on the moving sequences rendered at 640x480 for
    every camera, 3 objects per camera; time per (object, target) = time of one camera's
    update / objects (the pyramids and the optical-flow call are shared), and alone (one
    object per camera); the catch-up ``start`` of a late cross-view result. Single thread.
(b) ``stream``: 3 cameras at 10 Hz (``ego`` the source, ``exo1`` panning, ``exo2``
    still), 3 objects, on ``moving:<seed>`` (10 s); the source masks follow the objects
    (the source camera's exact masks, as a perfect source tracker would give). The
    weight-free backend (``GeometricSegmentor``) runs for real as the cross-view step,
    on a simulated clock that advances by its measured cost: one cross-view worker takes
    the newest set, the (object, target) pairs the refresh schedule chooses (oldest
    first, 3 pairs = one target camera per step, lost tracks moved up by 3 s), and its
    results arrive when its measured time is up; frames arrive at 10 Hz and the
    propagation worker (the other core) runs on each frame as it arrives, taking the
    measured time of its own work. The online arms run the shipped path: a
    ``SetProcessor`` (``process(..., targets=)``) and, with propagation, a
    ``PropagationStage`` (``choose``/``accept``/``frame``; deadline ``--max-age`` 6 s,
    above the schedule's refresh bound). Costs are the working thread's CPU time
    (``time.thread_time``, OpenCV single-threaded): what the work takes on a core of its
    own, not the wall time of this shared machine; so the schedule (which frames the
    backend sees) varies a little from run to run. Three arms: every frame processed
    fully offline (no deadline), propagation on, propagation off (the same cross-view
    worker and schedule; each result published when it arrives). All arms start from
    the cross-view results on frame 0 (the objects were found once before the clock
    starts); frames 1.. are scored. ``--cache DIR`` keeps the offline arm's masks (the
    backend is deterministic), so a rerun only runs the online arms. ``--step-seconds S``:
    every cross-view step takes exactly S on the simulated clock (its results handed over
    at once), a reproducible schedule for comparing tracker changes.

    Per target and object, over the frames: the fraction of frames with a good mask
    published for that very frame; the age of each published mask, (a) as the issue
    defines it, the newest frame's stamp when it is published minus its own stamp, and
    (b) publication time minus its stamp (the latency, processing included); IoU against
    the ground truth over the published frames, and "held" IoU over every frame where
    the object is visible: the newest good mask published before the next frame arrives
    (what a consumer holds while that frame is current; 0 when it holds none).
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vggts_ros.geometric import GeometricSegmentor  # noqa: E402
from vggts_ros.metrics import iou  # noqa: E402
from vggts_ros.propagation import PropagationConfig, make_propagator  # noqa: E402
from vggts_ros.propagation_stage import PropagationStage  # noqa: E402
from vggts_ros.refresh import RefreshScheduler  # noqa: E402
from vggts_ros.registry import ObjectRegistry  # noqa: E402
from vggts_ros.set_processor import CameraFrame, SetProcessor  # noqa: E402
from vggts_ros.sequences import load_sequence  # noqa: E402
from vggts_ros.types import TargetView  # noqa: E402


def _stats(values) -> str:
    v = np.asarray(values, float)
    return f"median {np.median(v):.2f} ms, p95 {np.percentile(v, 95):.2f} ms, max {v.max():.2f} ms (n={len(v)})"


# ----------------------------------------------------------------------------- (a) cost
def bench_cost(args) -> Dict:
    """Wall and CPU (thread) time of each update, per (object, target)."""
    rows = defaultdict(list)

    def timed(fn):
        w, c = time.perf_counter(), time.thread_time()
        r = fn()
        return r, (time.perf_counter() - w) * 1e3, (time.thread_time() - c) * 1e3

    for seed in args.seeds:
        seq = load_sequence(f"moving:{seed}/{args.frames / 10:.1f}s", ego_size=(640, 480), exo_size=(640, 480))
        for cam in seq.cameras:
            views = [seq.view(i, cam) for i in range(len(seq))]
            img0, masks0 = views[0]
            prop = make_propagator(PropagationConfig(max_age=None))  # all objects of the camera together
            for oid, m in masks0.items():
                prop.start(oid, img0, 0.0, m)
            for i in range(1, len(views)):
                res, w, c = timed(lambda: prop.update(views[i][0], seq.stamp(i)))
                rows["shared_wall"].append(w / max(1, len(res)))
                rows["shared_cpu"].append(c / max(1, len(res)))
            for oid, m in masks0.items():  # one object per propagator
                p1 = make_propagator(PropagationConfig(max_age=None))
                p1.start(oid, img0, 0.0, m)
                for i in range(1, len(views)):
                    _, w, c = timed(lambda: p1.update(views[i][0], seq.stamp(i)))
                    rows["alone_wall"].append(w)
                    rows["alone_cpu"].append(c)
            k = min(10, len(views) - 1)  # a result on a frame 1 s old, caught up in one jump
            late = make_propagator(PropagationConfig(max_age=None))
            for i in range(k + 1):
                late.update(views[i][0], seq.stamp(i))
            for oid, m in masks0.items():
                _, w, c = timed(lambda: late.start(oid, img0, 0.0, m))
                rows["catch_wall"].append(w)
                rows["catch_cpu"].append(c)
    out = {k: dict(median=float(np.median(v)), p95=float(np.percentile(v, 95)), n=len(v)) for k, v in rows.items()}
    for label, key in (("update per (object, target), 3 objects sharing a camera's update", "shared"),
                       ("update per (object, target), one object per camera", "alone"),
                       ("start from a cross-view result 1 s old (features + catch-up)", "catch")):
        print(f"{label}:\n    wall {_stats(rows[key + '_wall'])}\n    CPU  {_stats(rows[key + '_cpu'])}")
    return out


# ----------------------------------------------------------------------------- methods
def bench_methods(args) -> Dict:
    out = {}
    horizon = 30
    for label, cfg in (("klt", PropagationConfig(max_age=None)),
                       ("dense@0.5", PropagationConfig(method="dense", dense_scale=0.5, max_age=None)),
                       ("dense@1.0", PropagationConfig(method="dense", dense_scale=1.0, max_age=None))):
        by_age = defaultdict(list)
        cost = []
        for seed in args.seeds:
            seq = load_sequence(f"moving:{seed}/6s")
            for cam in seq.cameras:
                views = [seq.view(i, cam) for i in range(len(seq))]
                for a0 in range(0, len(views) - horizon, 10):
                    prop = make_propagator(cfg)
                    img, masks = views[a0]
                    for oid, m in masks.items():
                        prop.start(oid, img, seq.stamp(a0), m)
                    for i in range(a0 + 1, a0 + horizon + 1):
                        img, gt = views[i]
                        t0 = time.perf_counter()
                        res = prop.update(img, seq.stamp(i))
                        cost.append((time.perf_counter() - t0) * 1e3 / max(1, len(res)))
                        for oid, r in res.items():
                            if oid in gt:
                                by_age[i - a0].append(iou(gt[oid], r.mask))
        ages = (1, 5, 10, 20, 30)
        row = {f"iou_at_{a}": float(np.mean(by_age[a])) for a in ages}
        row["iou_mean"] = float(np.mean([x for v in by_age.values() for x in v]))
        row["ms_per_object_median"] = float(np.median(cost))
        row["ms_per_object_p95"] = float(np.percentile(cost, 95))
        out[label] = row
        print(f"{label:10s} IoU after " + ", ".join(f"{a} frames {row[f'iou_at_{a}']:.3f}" for a in ages)
              + f"; mean {row['iou_mean']:.3f}; {row['ms_per_object_median']:.2f} ms per object (median)", flush=True)
    return out


# ----------------------------------------------------------------------------- (b) stream
@dataclass
class Publication:
    frame: int
    time: float  # when it was published (simulated seconds)
    newest: int  # the newest frame that had arrived then
    mask: np.ndarray
    good: bool


@dataclass
class Arm:
    name: str
    pubs: Dict[Tuple[int, str], List[Publication]] = field(default_factory=lambda: defaultdict(list))
    steps: List[Tuple[float, float, int, int]] = field(default_factory=list)  # (start, cost, frame, pairs)
    prop_cost: List[float] = field(default_factory=list)
    refresh_ages: Dict[Tuple[int, str], List[float]] = field(default_factory=lambda: defaultdict(list))


class Stream:
    """The frames of one sequence, preloaded, and the cross-view step on them."""

    def __init__(self, spec: str) -> None:
        self.seq = load_sequence(spec)
        self.rate = self.seq.rate
        self.n = len(self.seq)
        self.source = self.seq.source
        self.targets = self.seq.targets
        self.objects = self.seq.object_ids
        self.frames = [self.seq.frame(i) for i in range(self.n)]
        self.pairs = [(o, t) for t in self.targets for o in self.objects]

    def stamp(self, k: int) -> float:
        return k / self.rate

    def gt(self, k: int, pair) -> np.ndarray:
        o, t = pair
        return self.frames[k].mask(t, o)

    def cross_view(self, seg: GeometricSegmentor, k: int, pairs) -> Tuple[Dict, float]:
        """The backend on frame k for these pairs (grouped by object: one call per object
        with its targets); returns ({pair: result}, seconds)."""
        scene = self.frames[k]
        by_obj = defaultdict(list)
        for o, t in pairs:
            by_obj[o].append(t)
        out = {}
        t0 = time.thread_time()
        for o, ts in by_obj.items():
            views = [TargetView(scene.image(t), scene.role(t), t) for t in ts]
            res = seg.segment(scene.image(self.source), scene.mask(self.source, o), views)
            for t, r in zip(ts, res):
                out[(o, t)] = r
        return out, time.thread_time() - t0


def run_offline(stream: Stream, cache: Optional[Path] = None) -> Arm:
    """Every frame, every pair, no deadline. With ``cache``, the masks are kept in (and
    read back from) ``cache/<spec>.npz`` (the backend is deterministic)."""
    arm = Arm("offline")
    path = None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        path = cache / (stream.seq.name + ".npz")
        if path.exists():
            data = np.load(path)
            for key in data.files:
                if key.startswith("m_"):
                    _, k, o, t = key.split("_", 3)
                    shape = stream.frames[0].image(t).shape[:2]
                    mask = np.unpackbits(data[key])[: shape[0] * shape[1]].reshape(shape).astype(bool)
                    arm.pubs[(int(o), t)].append(Publication(int(k), stream.stamp(int(k)), int(k), mask, True))
            for p in arm.pubs:
                arm.pubs[p].sort(key=lambda x: x.frame)
            print(f"  offline masks read from {path}")
            return arm
    seg = GeometricSegmentor()
    for k in range(stream.n):
        res, cost = stream.cross_view(seg, k, stream.pairs)
        arm.steps.append((stream.stamp(k), cost, k, len(stream.pairs)))
        for p, r in res.items():
            arm.pubs[p].append(Publication(k, stream.stamp(k), k, r.mask, True))
        print(f"  offline frame {k + 1}/{stream.n}: {cost:.2f} s", end="\r", flush=True)
    print()
    if path is not None:
        np.savez_compressed(path, **{f"m_{x.frame}_{p[0]}_{p[1]}": np.packbits(x.mask)
                                                             for p, xs in arm.pubs.items() for x in xs})
    return arm


def run_online(stream: Stream, propagate: bool, max_pairs: Optional[int], max_age: float,
               lost_bonus: float, step_seconds: Optional[float] = None) -> Arm:
    """The simulated clock (module docstring), on the shipped code path: a
    ``SetProcessor`` with the geometric backend is the cross-view step (targets chosen by
    the refresh schedule), and with ``propagate`` a ``PropagationStage`` takes its results
    and gives each target frame its masks. ``step_seconds``: every cross-view step (and
    the hand-over of its results) takes exactly this long on the simulated clock instead
    of its measured CPU time (a reproducible schedule, for comparing tracker changes)."""
    arm = Arm("propagation on" if propagate else "propagation off")
    roles = {c: stream.seq.role(c) for c in stream.seq.cameras}
    processor = SetProcessor(GeometricSegmentor(), roles)
    registry = ObjectRegistry()
    f0 = stream.frames[0]
    for o in stream.objects:
        registry.put(stream.source, f"box {o}", f0.image(stream.source), f0.mask(stream.source, o), 0.0, o)
    stage = PropagationStage(roles, PropagationConfig(max_age=max_age), backend=processor.backend,
                             max_pairs=max_pairs, lost_bonus=lost_bonus) if propagate else None
    sched = RefreshScheduler(max_pairs=max_pairs) if not propagate else None

    def frames(k):
        sc = stream.frames[k]
        return {c: CameraFrame(c, stream.stamp(k), sc.image(c)) for c in stream.seq.cameras}

    def objects_at(k):
        """The source masks follow the objects (ground truth of the source camera at frame k)."""
        sc = stream.frames[k]
        for obj in registry.snapshot()[1]:
            registry.advance(obj, sc.image(stream.source), sc.mask(stream.source, obj.object_id), stream.stamp(k))
        return registry.snapshot()[1]

    def current():
        return {o.object_id: o for o in registry.snapshot()[1]}

    def publish(k, output, when, newest):
        for cam in output.cameras:
            for oo in cam.objects:
                arm.pubs[(oo.object.object_id, cam.camera)].append(
                    Publication(k, when, newest, np.asarray(oo.result.mask, bool), True))

    # the starting point: every pair found on frame 0 before the clock starts
    first = processor.process(0.0, frames(0), objects_at(0))
    if propagate:
        stage.sync_objects(registry.snapshot()[1], 0.0)
        stage.accept(first, current())
        for t in stream.targets:
            stage.frame(frames(0)[t], registry.snapshot()[1])
    else:
        for p in stream.pairs:
            sched.add(p, 0.0)
        sched.refreshed(stream.pairs, 0.0)
    publish(0, first, 0.0, 0)

    events: List = []
    seq_no = 0

    def push(t, kind, payload=None):
        nonlocal seq_no
        heapq.heappush(events, (t, seq_no, kind, payload))
        seq_no += 1

    for k in range(1, stream.n):
        push(stream.stamp(k), "frame", k)
    push(1.0 / stream.rate, "step", None)  # frame 0's results are the starting point
    prop_free = 0.0
    end = stream.stamp(stream.n - 1) + 1.0 / stream.rate
    while events:
        now, _, kind, payload = heapq.heappop(events)
        if kind == "step":  # the cross-view worker is free: a step on the newest set
            if now >= end:
                continue
            k = min(stream.n - 1, int(math.floor(now * stream.rate + 1e-9)))
            objects = objects_at(k)
            if propagate:
                targets = stage.choose(now, objects)
            else:
                chosen = sched.choose(now)
                targets = {}
                for o, t in chosen:
                    targets.setdefault(o, set()).add(t)
            c0 = time.thread_time()
            output = processor.process(stream.stamp(k), frames(k), objects, targets)
            cost = time.thread_time() - c0 if step_seconds is None else step_seconds
            arm.steps.append((now, cost, k, sum(len(c.objects) for c in output.cameras)))
            push(now + cost, "done", (k, output, targets))
        elif kind == "done":
            k, output, targets = payload
            if propagate:
                # the worker hands its results to the tracks (they catch up with the
                # cameras' frames propagated so far), then takes the next set
                c0 = time.thread_time()
                stage.accept(output, current(), targets)
                push(now + (time.thread_time() - c0 if step_seconds is None else 0.0), "step", None)
            else:
                push(now, "step", None)
                sched.refreshed([(oo.object.object_id, c.camera) for c in output.cameras for oo in c.objects],
                                stream.stamp(k))
                publish(k, output, now, min(stream.n - 1, int(math.floor(now * stream.rate + 1e-9))))
        elif kind == "frame":
            k = payload
            ages = stage.refresh_ages(stream.stamp(k)) if propagate else sched.ages(stream.stamp(k))
            for p, a in ages.items():
                arm.refresh_ages[p].append(a)
            if not propagate:
                continue
            start = max(now, prop_free)
            c0 = time.thread_time()
            objects = registry.snapshot()[1]
            outs = [stage.frame(frames(k)[t], objects) for t in stream.targets]
            cost = time.thread_time() - c0
            arm.prop_cost.append(cost)
            prop_free = start + cost
            newest = min(stream.n - 1, int(math.floor(prop_free * stream.rate + 1e-9)))
            for out in outs:
                if out is None:
                    continue
                for oo in out.objects:
                    good = not oo.result.reason.startswith("propagation:")
                    arm.pubs[(oo.object.object_id, out.camera)].append(
                        Publication(k, prop_free, newest, np.asarray(oo.result.mask, bool), good))
    return arm


def score(stream: Stream, arm: Arm) -> Dict:
    """The figures of the module docstring for one arm (frames 1..n-1)."""
    n = stream.n
    per_pair = {}
    ages, lat, pub_ious, held_ious = [], [], [], []
    per_target_published = {t: np.zeros(n, bool) for t in stream.targets}
    for p in stream.pairs:
        pubs = sorted(arm.pubs[p], key=lambda x: x.time)
        good = [x for x in pubs if x.good]
        published = np.zeros(n, bool)
        first = {}
        for x in good:
            if x.frame not in first:
                first[x.frame] = x
        for k, x in first.items():
            if k >= 1:
                published[k] = True
                ages.append((x.newest - x.frame) / stream.rate * 1e3)
                lat.append((x.time - stream.stamp(k)) * 1e3)
                g = stream.gt(k, p)
                if g.any():
                    pub_ious.append(iou(g, x.mask))
        per_target_published[p[1]] |= published
        # held: newest good publication (by time) before frame k+1 arrives
        times = [x.time for x in good]
        held = []
        for k in range(1, n):
            g = stream.gt(k, p)
            if not g.any():
                continue
            limit = stream.stamp(k) + 1.0 / stream.rate - 1e-9 if arm.name != "offline" else stream.stamp(k)
            j = int(np.searchsorted(times, limit, side="right")) - 1
            # a publication for a later frame than k cannot be held at k
            while j >= 0 and good[j].frame > k:
                j -= 1
            held.append(iou(g, good[j].mask) if j >= 0 else 0.0)
        held_ious += held
        per_pair[f"{p[0]}@{p[1]}"] = dict(published=float(published[1:].mean()), held_iou=float(np.mean(held)))
    out = dict(
        published_pair_mean=float(np.mean([v["published"] for v in per_pair.values()])),
        published_pair_min=float(np.min([v["published"] for v in per_pair.values()])),
        published_target_min=float(min(v[1:].mean() for v in per_target_published.values())),
        age_median_ms=float(np.median(ages)) if ages else float("nan"),
        latency_median_ms=float(np.median(lat)) if lat else float("nan"),
        iou_published=float(np.mean(pub_ious)) if pub_ious else float("nan"),
        iou_held=float(np.mean(held_ious)),
        pairs=per_pair,
    )
    if arm.steps and arm.name != "offline":
        out["steps"] = len(arm.steps)
        out["step_seconds_median"] = float(np.median([c for _, c, _, _ in arm.steps]))
        out["step_seconds_max"] = float(np.max([c for _, c, _, _ in arm.steps]))
    if arm.refresh_ages:
        out["refresh_age_max_s"] = float(max(max(v) for v in arm.refresh_ages.values()))
        out["refresh_age_median_s"] = float(np.median([a for v in arm.refresh_ages.values() for a in v]))
    if arm.prop_cost:
        out["propagation_ms_per_frame_median"] = float(np.median(arm.prop_cost) * 1e3)
        out["propagation_ms_per_frame_p95"] = float(np.percentile(arm.prop_cost, 95) * 1e3)
    return out


def bench_stream(args) -> Dict:
    results = {}
    for seed in args.seeds:
        spec = f"moving:{seed}@{args.rate:g}hz/{args.duration:g}s"
        stream = Stream(spec)
        print(f"{spec}: {stream.n} frames, cameras {stream.seq.cameras}, targets {stream.targets}, "
              f"{len(stream.objects)} objects", flush=True)
        t0 = time.perf_counter()
        offline = run_offline(stream, args.cache)
        arms = [offline]
        for propagate in (True, False):
            arms.append(run_online(stream, propagate, args.max_pairs or None, args.max_age, args.lost_bonus,
                                   args.step_seconds))
        seed_out = {}
        for arm in arms:
            s = score(stream, arm)
            seed_out[arm.name] = s
            print(f"  {arm.name:16s} published {s['published_pair_mean']:.3f} (min pair {s['published_pair_min']:.3f}, "
                  f"min target {s['published_target_min']:.3f}), age median {s['age_median_ms']:.0f} ms "
                  f"(latency {s['latency_median_ms']:.0f} ms), IoU published {s['iou_published']:.3f}, "
                  f"held {s['iou_held']:.3f}"
                  + (f", refresh age max {s['refresh_age_max_s']:.2f} s" if "refresh_age_max_s" in s else "")
                  + (f", step median {s['step_seconds_median']:.2f} s" if "step_seconds_median" in s else ""),
                  flush=True)
        seed_out["wall_seconds"] = time.perf_counter() - t0
        results[spec] = seed_out
    names = ("offline", "propagation on", "propagation off")
    summary = {}
    for name in names:
        rows = [r[name] for r in results.values()]
        summary[name] = {k: float(np.mean([r[k] for r in rows])) for k in
                         ("published_pair_mean", "published_pair_min", "published_target_min", "age_median_ms",
                          "latency_median_ms", "iou_published", "iou_held")}
    results["summary"] = summary
    print("mean over seeds:")
    for name in names:
        s = summary[name]
        print(f"  {name:16s} published {s['published_pair_mean']:.3f}, age {s['age_median_ms']:.0f} ms, "
              f"latency {s['latency_median_ms']:.0f} ms, IoU published {s['iou_published']:.3f}, held {s['iou_held']:.3f}")
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("cost", "methods", "stream"))
    ap.add_argument("--seeds", default="0,1", help="sequence seeds, comma separated")
    ap.add_argument("--frames", type=int, default=40, help="cost: frames per sequence")
    ap.add_argument("--duration", type=float, default=10.0, help="stream: seconds per sequence")
    ap.add_argument("--rate", type=float, default=10.0, help="stream: frames per second")
    ap.add_argument("--max-pairs", type=int, default=3, help="stream: pairs per cross-view step (0 = all)")
    ap.add_argument("--max-age", type=float, default=6.0, help="stream: propagation deadline (s); keep it above the refresh bound")
    ap.add_argument("--lost-bonus", type=float, default=3.0, help="stream: scheduler priority of lost tracks (s)")
    ap.add_argument("--step-seconds", type=float, help="stream: every cross-view step takes exactly this long "
                    "(simulated; default: its measured CPU time)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--cache", type=Path, help="stream: keep the offline arm's masks here and reuse them")
    args = ap.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    cv2.setNumThreads(1)
    print(f"OpenCV threads: {cv2.getNumThreads()}")
    fn = {"cost": bench_cost, "methods": bench_methods, "stream": bench_stream}[args.what]
    out = fn(args)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=float))


if __name__ == "__main__":
    main()
