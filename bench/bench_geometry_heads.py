"""Cost of VGGT's camera and depth heads at full size, as a share of a synchronised set.

    python bench/bench_geometry_heads.py [--views 3] [--objects 2] [--threads 1] [--repeats 3] [--json out.json]
    python bench/bench_geometry_heads.py --quick      # the test-tiny network at 126 px (seconds)

The heads run on the joint all-view first pass the pipeline already makes, so what they
add to a set is their own cost only. Measured on VGGT-1B's shapes at 518 px with
deterministic (not trained) weights:

* FLOPs (``torch.utils.flop_counter`` on the meta device, 2 per multiply-accumulate, as
  ``bench/flops.py``): the camera head (4 iterations of its 4-block trunk over the views'
  camera tokens) and the depth head (DPT at full resolution), against one synchronised set
  as ``bench/flops.py`` accounts it (first pass over all views, one tracker call and one
  features pass per object over all views, the head encode + decode + 1 refinement per
  object, batched over the targets).
* CPU time (``time.process_time``, one thread by default, median of ``--repeats`` after a
  warm-up for the heads; the backbone pass once): each head against the set's backbone
  time, i.e. one backbone pass (aggregator + DPT track features over all views) times the
  passes per set (1 first pass + 1 features pass per object). The tracker and the
  segmentation head are left out of the set's time, so the heads' CPU share printed is an
  upper bound.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.flops import set_flops, stage_flops  # noqa: E402
from vggts_ros.config import ModelPreset, model_preset  # noqa: E402
from vggts_ros.models.backbone import VGGTBackbone  # noqa: E402
from vggts_ros.models.deterministic import fill_deterministic_in_place  # noqa: E402


def geometry_preset(quick: bool) -> ModelPreset:
    """VGGT-1B (or the test-tiny network) with the geometry heads on."""
    p = model_preset("test-tiny" if quick else "vggt-1b")
    return dataclasses.replace(p, backbone=dataclasses.replace(p.backbone, geometry_heads=True))


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


@torch.no_grad()
def count_flops(p: ModelPreset, views: int, objects: int) -> dict:
    size = p.image_size
    with torch.device("meta"):
        model = VGGTBackbone(p.backbone).eval().requires_grad_(False)
        images = torch.empty(1, views, 3, size, size)
    tokens, start = model.encode(images, keep_layers=model.needed_layers(geometry=True))
    f = stage_flops(p, views=views, targets=views - 1)
    s = set_flops(f, cameras=views, objects=objects)
    return {
        "camera_head": _flops(lambda: model.camera_head([tokens[-1]])),
        "depth_head": _flops(lambda: model.depth_head(tokens, images, start)),
        "backbone_pass": f[f"backbone_{views}"],
        "set": s["ours_total"],
        "set_parts": {k[len("ours_"):]: v for k, v in s.items() if k.startswith("ours_") and k != "ours_total"},
    }


def _cpu_time(fn, repeats: int, warm: bool = True):
    if warm:
        fn()
    times, walls = [], []
    for _ in range(max(1, repeats)):
        c0, w0 = time.process_time(), time.perf_counter()
        out = fn()
        times.append(time.process_time() - c0)
        walls.append(time.perf_counter() - w0)
    return statistics.median(times), statistics.median(walls), out


@torch.no_grad()
def time_cpu(p: ModelPreset, views: int, repeats: int, backbone_repeats: int) -> dict:
    """CPU seconds of one backbone pass and of each head on that pass's tokens."""
    model = fill_deterministic_in_place(VGGTBackbone(p.backbone).eval().requires_grad_(False), 0)
    images = torch.rand(1, views, 3, p.image_size, p.image_size, generator=torch.Generator().manual_seed(0))
    keep = model.needed_layers(geometry=True)

    def backbone_pass():
        tokens, start = model.encode(images, keep_layers=keep)
        model.features(tokens, images, start)
        return tokens, start

    cpu_bb, wall_bb, (tokens, start) = _cpu_time(backbone_pass, backbone_repeats, warm=backbone_repeats > 1)
    cpu_cam, wall_cam, _ = _cpu_time(lambda: model.camera_head([tokens[-1]]), repeats)
    cpu_dep, wall_dep, _ = _cpu_time(lambda: model.depth_head(tokens, images, start), repeats)
    return {
        "backbone_pass": cpu_bb, "camera_head": cpu_cam, "depth_head": cpu_dep,
        "wall": {"backbone_pass": wall_bb, "camera_head": wall_cam, "depth_head": wall_dep},
        "parameters": {name: sum(t.numel() for t in getattr(model, name).parameters())
                       for name in ("aggregator", "track_head", "camera_head", "depth_head")},
    }


def report(flops: dict, cpu: dict, views: int, objects: int) -> dict:
    passes = 1 + objects
    set_cpu = passes * cpu["backbone_pass"]
    out = {"views": views, "objects": objects, "passes_per_set": passes, "flops": flops, "cpu_s": cpu,
           "set_cpu_s": set_cpu, "share": {}}
    print(f"\nOne synchronised set: {views} cameras, {objects} objects "
          f"(bench/flops.py accounting; backbone passes per set = 1 first + {objects} features = {passes})")
    print(f"{'':<26} {'GFLOP':>10} {'share of set':>13} {'CPU s':>9} {'share of set':>13}")
    rows = [("camera head", "camera_head"), ("depth head", "depth_head")]
    for label, key in rows:
        fs = flops[key] / flops["set"]
        cs = cpu[key] / set_cpu
        out["share"][key] = {"flops": fs, "cpu": cs}
        print(f"{label:<26} {flops[key] / 1e9:>10.2f} {100 * fs:>12.2f}% {cpu[key]:>9.3f} {100 * cs:>12.2f}%")
    both_f = (flops["camera_head"] + flops["depth_head"]) / flops["set"]
    both_c = (cpu["camera_head"] + cpu["depth_head"]) / set_cpu
    out["share"]["both"] = {"flops": both_f, "cpu": both_c}
    print(f"{'both heads':<26} {(flops['camera_head'] + flops['depth_head']) / 1e9:>10.2f} {100 * both_f:>12.2f}% "
          f"{cpu['camera_head'] + cpu['depth_head']:>9.3f} {100 * both_c:>12.2f}%")
    print(f"{'backbone pass (' + str(views) + ' views)':<26} {flops['backbone_pass'] / 1e9:>10.2f} "
          f"{100 * flops['backbone_pass'] / flops['set']:>12.2f}% {cpu['backbone_pass']:>9.3f} "
          f"{100 / passes:>12.2f}%")
    print(f"{'whole set':<26} {flops['set'] / 1e9:>10.2f} {'100.00%':>13} {set_cpu:>9.3f} {'100.00%':>13}")
    print(f"set CPU time = {passes} passes x {cpu['backbone_pass']:.3f} s = {set_cpu:.3f} s "
          "(tracker and segmentation head not included: the heads' CPU shares are upper bounds)")
    print("set FLOPs by part (GFLOP): " + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in flops["set_parts"].items()))
    print(f"wall seconds (machine load shows here, not in CPU seconds): {cpu['wall']}")
    print(f"parameters: {cpu['parameters']}")
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the test-tiny network at 126 px")
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--objects", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="head timings: median of this many after a warm-up")
    parser.add_argument("--backbone-repeats", type=int, default=1,
                        help="backbone pass timings (above 1: a warm-up first, then the median)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    if args.views < 2 or args.objects < 1:
        parser.error("--views must be >= 2 and --objects >= 1")
    torch.set_num_threads(args.threads)
    p = geometry_preset(args.quick)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"{'test-tiny (quick)' if args.quick else 'VGGT-1B'} at {p.image_size} px, {args.views} views, "
          "deterministic weights")
    flops = count_flops(p, args.views, args.objects)
    cpu = time_cpu(p, args.views, args.repeats, args.backbone_repeats)
    out = report(flops, cpu, args.views, args.objects)
    out.update(preset="test-tiny" if args.quick else "vggt-1b", image_size=p.image_size, threads=args.threads)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
