"""Precision modes on the ego->exo parity job: speed ratio and logit change against float32.

    python bench/bench_precision.py [--repeats 3] [--threads 1] [--modes float32 bf16 float64]

Builds the networks of ``test/fixtures/reference/pipeline_ego2exo.pt`` (the tiny backbone at
518 px and the full-size head, deterministic weights), runs the whole ego->exo job
(``VGGTSegmentor._run`` on the fixture's 704x704 ego source and 960x540 exo target) once per
mode, interleaved, ``--repeats`` times after a warm-up, and prints per mode: median seconds of
the whole job and of each pipeline stage, the ratio to float32, and the largest difference of
the target logits against float32 and against the reference evaluation loop
(``eval_loop.final_low_res``, mapped into the exo frame). ``bf16`` autocasts the backbone's
aggregator; on a CPU without native bf16 it can be slower than float32.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "test")]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from conftest import load_fixture  # noqa: E402
from helpers.pipeline_fixture import build_networks, network_logits, np_  # noqa: E402
from vggts_ros.config import PipelineConfig  # noqa: E402
from vggts_ros.pipeline import VGGTSegmentor  # noqa: E402
from vggts_ros.types import TargetView  # noqa: E402


def run_once(seg: VGGTSegmentor, pipe) -> tuple:
    view = TargetView(np_(pipe["exo_image"]), role="exo", name="exo")
    trace: dict = {}
    t0 = time.perf_counter()
    with torch.inference_mode():
        result = seg._run(np_(pipe["ego_image"]), [np_(pipe["ego_mask"]) > 0], [view], trace)[0][0]
    return time.perf_counter() - t0, result, trace["targets"][0][0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--modes", nargs="+", default=["float32", "bf16"])
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = load_fixture("pipeline_ego2exo.pt")
    backbone, head = build_networks(pipe)
    modes = ["float32"] + [m for m in args.modes if m != "float32"]
    # Each mode gets its own copy of the networks: a segmentor sets its backbone's dtype.
    segs = {m: VGGTSegmentor(copy.deepcopy(backbone), copy.deepcopy(head), PipelineConfig(precision=m), device="cpu")
            for m in modes}
    times = {m: [] for m in modes}
    stages = {m: [] for m in modes}
    results = {}
    for m in modes:  # warm-up
        run_once(segs[m], pipe)
    for _ in range(args.repeats):
        for m in modes:  # interleaved: the machine's load affects every mode alike
            t, result, target = run_once(segs[m], pipe)
            times[m].append(t)
            stages[m].append(result.timings)
            results[m] = (result, target)
    base = statistics.median(times["float32"])
    logits32 = torch.as_tensor(results["float32"][0].logits).double()
    _, target32 = results["float32"]
    expected = target32.transform.logits_to_frame(
        network_logits(pipe["eval_loop"]["final_low_res"], segs["float32"].image_size))
    expected = torch.as_tensor(expected).double()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), median of {args.repeats}, "
          f"ego 704x704 -> exo 960x540, tiny backbone 518 + full head, 1 refinement")
    print(f"{'mode':<8} {'seconds':>8} {'f32/mode':>9} {'max|dlogit| vs f32':>19} {'vs eval_loop':>13} "
          f"{'mask IoU vs f32':>16}")
    for m in modes:
        result, _ = results[m]
        logits = torch.as_tensor(result.logits).double()
        a, b = result.mask > 0, results["float32"][0].mask > 0
        iou = float((a & b).sum()) / max(1, int((a | b).sum()))
        med = statistics.median(times[m])
        print(f"{m:<8} {med:8.2f} {base / med:8.2f}x {float((logits - logits32).abs().max()):19.4g} "
              f"{float((logits - expected).abs().max()):13.4g} {iou:16.4f}")
    print(f"logit range (float32): [{float(logits32.min()):.3g}, {float(logits32.max()):.3g}]")
    print("\nstage medians, seconds:")
    for m in modes:
        keys = [k for k in stages[m][0] if k != "total"]
        cells = "  ".join(f"{k} {statistics.median(s[k] for s in stages[m]):.2f}" for k in keys)
        print(f"  {m:<8} {cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
