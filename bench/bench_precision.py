"""Precision modes on the parity jobs: speed and agreement with float32.

    python bench/bench_precision.py [--repeats 3] [--threads 1] [--modes float32 bf16 float64]
                                    [--sets reference reference_seed1 reference_seed2] [--full-size]

For every reference fixture set (``test/fixtures/<set>``) and both directions (the
``pipeline_ego2exo.pt`` and ``pipeline_exo2ego.pt`` inputs: a 704x704 ego frame and a 960x540
exo frame, their object mask) the whole VGGT-S path runs (``VGGTSegmentor._run``: first pass,
crop, features pass, head with one refinement, recovery) on the fixture's networks (the tiny
backbone at 518 px and the full-size head, the test weights), once per mode, interleaved,
``--repeats`` times after a warm-up. Printed per case and mode: median seconds of the job and
the ratio to float32, and the agreement with float32: the largest logit difference (absolute,
and relative to float32's largest |logit|), the mask IoU and the largest distance between the
final target points (px of the target frame), and the logit difference against the reference
evaluation loop.

``bf16`` runs the backbone's aggregator under bfloat16 autocast (the DPT features, the tracker
and the head stay float32). ``--full-size`` also times one backbone pass (aggregator + DPT
features, 3 views at 518 px) at VGGT-1B's size (width 1024, 24 + 24 blocks, DINOv2-L patch
embedding, deterministic weights) in float32 and under bf16 autocast, one run each, and
compares the features. On a CPU without native bf16 (AVX-512 BF16 or AMX) bf16 can be slower
than float32.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "test")]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from conftest import DEFAULT_REFERENCE_DIR, load_fixture  # noqa: E402
from helpers.pipeline_fixture import build_networks, network_logits, np_  # noqa: E402
from vggts_ros import precision  # noqa: E402
from vggts_ros.config import PipelineConfig  # noqa: E402
from vggts_ros.pipeline import VGGTSegmentor  # noqa: E402
from vggts_ros.types import TargetView  # noqa: E402

DIRECTIONS = {
    # fixture file: (source image, source mask, target image, target role, reference low-res logits key path)
    "pipeline_ego2exo.pt": ("ego_image", "ego_mask", "exo_image", "exo", ("eval_loop", "final_low_res")),
    "pipeline_exo2ego.pt": ("exo_image", "exo_mask", "ego_image", "ego", ("final_low_res",)),
}


def run_once(seg: VGGTSegmentor, pipe, file_name: str) -> tuple:
    src, mask, tar, role, _ = DIRECTIONS[file_name]
    view = TargetView(np_(pipe[tar]), role=role, name=role)
    trace: dict = {}
    t0 = time.process_time()
    with torch.inference_mode():
        result = seg._run(np_(pipe[src]), [np_(pipe[mask]) > 0], [view], trace)[0][0]
    return time.process_time() - t0, result, trace["targets"][0][0]


def point_error(a: np.ndarray, b: np.ndarray) -> float:
    """Largest distance between two point sets paired one to one (least total distance)."""
    from scipy.optimize import linear_sum_assignment

    d = np.sqrt(((np.asarray(a, np.float64)[:, None] - np.asarray(b, np.float64)[None]) ** 2).sum(-1))
    rows, cols = linear_sum_assignment(d)
    return float(d[rows, cols].max())


def case(set_name: str, file_name: str, modes, repeats: int) -> list:
    os.environ["VGGTS_REFERENCE_DIR"] = str(DEFAULT_REFERENCE_DIR.parent / set_name)
    pipe = load_fixture(file_name)
    backbone, head = build_networks(pipe)
    # each mode gets its own copy of the networks: a segmentor sets its backbone's dtype
    segs = {m: VGGTSegmentor(copy.deepcopy(backbone), copy.deepcopy(head), PipelineConfig(precision=m), device="cpu")
            for m in modes}
    times = {m: [] for m in modes}
    results = {}
    for m in modes:  # warm-up
        run_once(segs[m], pipe, file_name)
    for _ in range(repeats):
        for m in modes:  # interleaved: the machine's load affects every mode alike
            t, result, target = run_once(segs[m], pipe, file_name)
            times[m].append(t)
            results[m] = (result, target)
    r32, t32 = results["float32"]
    logits32 = torch.as_tensor(r32.logits).double()
    scale = float(logits32.abs().max())
    ref_low = pipe
    for key in DIRECTIONS[file_name][4]:
        ref_low = ref_low[key]
    expected = torch.as_tensor(t32.transform.logits_to_frame(network_logits(ref_low, segs["float32"].image_size)))
    rows = []
    base = statistics.median(times["float32"])
    for m in modes:
        r, _ = results[m]
        logits = torch.as_tensor(r.logits).double()
        a, b = r.mask, r32.mask
        union = int((a | b).sum())
        rows.append(dict(set=set_name, case=file_name[len("pipeline_"):-3], mode=m, seconds=statistics.median(times[m]),
                         speed=base / statistics.median(times[m]),
                         dlogit=float((logits - logits32).abs().max()), rel=float((logits - logits32).abs().max()) / scale,
                         iou=float((a & b).sum()) / union if union else 1.0,
                         points=point_error(r.target_points, r32.target_points),
                         vs_ref=float((logits - expected.double()).abs().max()), scale=scale))
    return rows


def full_size(repeats: int) -> None:
    """One backbone pass at VGGT-1B's size, float32 and under bf16 autocast."""
    from vggts_ros.config import vggt_1b_backbone
    from vggts_ros.models.backbone import VGGTBackbone
    from vggts_ros.models.deterministic import deterministic_state_dict

    with torch.device("meta"):
        model = VGGTBackbone(vggt_1b_backbone())
    model.load_state_dict(deterministic_state_dict(model, 0), strict=True, assign=True)
    model.eval()
    images = torch.rand(1, 3, 3, 518, 518, generator=torch.Generator().manual_seed(0))
    out, secs = {}, {}
    with torch.inference_mode():
        for m in ("float32", "bf16"):
            model.dtype = precision.plan(m).backbone_autocast or torch.float32
            runs = []
            for _ in range(repeats):
                t0 = time.process_time()
                out[m] = model(images).features
                runs.append(time.process_time() - t0)
            secs[m] = statistics.median(runs)
    f32, bf = out["float32"].double(), out["bf16"].double()
    scale = float(f32.abs().max())
    print(f"\nVGGT-1B-size backbone pass (aggregator + DPT features), 3 views at 518 px, {repeats} run(s) each, CPU s: "
          f"float32 {secs['float32']:.1f}, bf16 {secs['bf16']:.1f} ({secs['float32'] / secs['bf16']:.2f}x); features: "
          f"max |bf16 - float32| {float((bf - f32).abs().max()):.3g} of max |features| {scale:.3g}, "
          f"relative RMS {float((bf - f32).pow(2).mean().sqrt() / f32.pow(2).mean().sqrt()):.3g}")


def cpu_support() -> str:
    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    has = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return (f"CPU flags: {', '.join(has) or 'none of avx512f/avx512_bf16/amx'}; PyTorch capability "
            f"{torch.backends.cpu.get_cpu_capability()}; oneDNN bf16 supported: "
            f"{torch.ops.mkldnn._is_mkldnn_bf16_supported()}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--modes", nargs="+", default=["float32", "bf16"])
    ap.add_argument("--sets", nargs="+", default=["reference"],
                    help="fixture sets under test/fixtures (e.g. reference reference_seed1 reference_seed2)")
    ap.add_argument("--full-size", action="store_true", help="also time one backbone pass at VGGT-1B's size")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    modes = ["float32"] + [m for m in args.modes if m != "float32"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); {cpu_support()}")
    print(f"whole VGGT-S path (tiny backbone at 518 px + full-size head, test weights, 1 refinement), median of "
          f"{args.repeats} interleaved run(s) after a warm-up, CPU seconds; agreement against float32\n")
    print("| set | case | mode | seconds | f32/mode | max abs dlogit | relative | mask IoU | point error px "
          "| vs reference logits |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for s in args.sets:
        for file_name in DIRECTIONS:
            for r in case(s, file_name, modes, args.repeats):
                print(f"| {r['set']} | {r['case']} | {r['mode']} | {r['seconds']:.2f} | {r['speed']:.2f}x | "
                      f"{r['dlogit']:.3g} | {r['rel']:.2g} | {r['iou']:.4f} | {r['points']:.3g} | {r['vs_ref']:.3g} |",
                      flush=True)
    if args.full_size:
        full_size(1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
