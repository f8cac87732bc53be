"""Sets per second with and without stream reuse (``PipelineConfig.stream_reuse``).

    python bench/bench_stream_reuse.py [--preset test-tiny] [--sets 12] [--rounds 3] [--objects 2] [--full-every 5]

A stream of synchronised sets (a 704x704 ego source, two 960x540 exo targets, the scene
drifting a few pixels per set) runs through two segmentors sharing the same networks:
the plain pipeline and the one with stream reuse (``reuse_min_score=0``: the score gate
never triggers on the meaningless masks of deterministic weights, so the ratio is that
of the schedule: a full pass every ``--full-every`` sets). Rounds alternate the order;
the median sets/s of each is printed (per second of process CPU time, robust on a shared
machine with one thread, and per wall-clock second), then the ratio, the share of (set, target) pairs
that skipped the first pass, and the mask IoU of reused results against the plain ones.

The accuracy of stream reuse with the published weights is NOT measured here (the
weights are deterministic test weights): the IoU line only says how far the reused crop
moves the output on these inputs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from vggts_ros.config import PipelineConfig  # noqa: E402
from vggts_ros.pipeline import VGGTSegmentor  # noqa: E402
from vggts_ros.types import TargetView  # noqa: E402


def frame(h: int, w: int, seed: int, shift: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 16 + 2, w // 16 + 2, 3), dtype=np.uint8)
    big = np.kron(base, np.ones((16, 16, 1), np.uint8))
    return np.ascontiguousarray(big[shift % 16: shift % 16 + h, :w])


def masks(n: int):
    yy, xx = np.mgrid[:704, :704]
    out = []
    for cx, cy, rx, ry in [(250, 300, 70, 110), (470, 420, 120, 60), (350, 180, 50, 50)][:n]:
        out.append((((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1).astype(np.uint8))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="test-tiny")
    ap.add_argument("--sets", type=int, default=12, help="sets per stream")
    ap.add_argument("--rounds", type=int, default=3, help="streams per segmentor (order alternates)")
    ap.add_argument("--objects", type=int, default=2)
    ap.add_argument("--full-every", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    plain = VGGTSegmentor.deterministic(args.preset, PipelineConfig(), device="cpu")
    reuse_cfg = PipelineConfig(stream_reuse=True, reuse_full_every=args.full_every, reuse_min_score=0.0,
                               reuse_max_drop=1.0)
    objs = masks(args.objects)
    stream = [(frame(704, 704, 0, s), [TargetView(frame(540, 960, 1, s), role="exo", name="exo1"),
                                       TargetView(frame(540, 960, 2, 2 * s), role="exo", name="exo2")])
              for s in range(args.sets)]

    def run(seg):
        out, reused = [], []
        t0, c0 = time.perf_counter(), time.process_time()
        for src, targets in stream:
            out.append(seg.segment_objects(src, objs, targets))
            st = seg.__dict__.get("_stream_reuse")
            reused.append(list(st.last_reused) if st is not None else [False] * len(targets))
        return (args.sets / (time.perf_counter() - t0), args.sets / (time.process_time() - c0)), out, reused

    run(plain)  # warm-up
    rates = {"plain": [], "reuse": []}
    last = {}
    for r in range(args.rounds):
        order = ["plain", "reuse"] if r % 2 == 0 else ["reuse", "plain"]
        for name in order:
            seg = plain if name == "plain" else VGGTSegmentor(plain.backbone, plain.head, reuse_cfg)
            rate, out, reused = run(seg)
            rates[name].append(rate)
            last[name] = (out, reused)
    p, q = (statistics.median(r[1] for r in rates[k]) for k in ("plain", "reuse"))
    pw, qw = (statistics.median(r[0] for r in rates[k]) for k in ("plain", "reuse"))
    print(f"preset {args.preset}, {args.threads} thread(s), CPU, {args.sets} sets of 1 source + 2 targets, "
          f"{args.objects} object(s), full pass every {args.full_every} sets; median of {args.rounds} streams")
    print(f"  plain pipeline:  {p:6.3f} sets/s of process CPU time ({pw:6.3f} sets/s wall)")
    print(f"  stream reuse:    {q:6.3f} sets/s of process CPU time ({qw:6.3f} sets/s wall)")
    reused = last["reuse"][1]
    share = np.mean([x for row in reused for x in row])
    ious = []
    for s, row in enumerate(reused):
        for t, was in enumerate(row):
            if was:
                for o in range(args.objects):
                    a = last["plain"][0][s][o][t].mask
                    b = last["reuse"][0][s][o][t].mask
                    u = (a | b).sum()
                    ious.append(float((a & b).sum() / u) if u else 1.0)
    print(f"  (set, target) pairs that skipped the first pass: {100 * share:.0f}%")
    if ious:
        print(f"  mask IoU reused vs plain on these inputs (deterministic weights, no meaning): "
              f"median {statistics.median(ious):.3f}, min {min(ious):.3f}")
    print("  accuracy of stream reuse with the published weights: unmeasured")
    print(f"stream reuse / plain (CPU time; wall {qw / pw:.2f}x on this shared machine): {q / p:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
