"""Benchmark of the VGGT backbone: CPU forward times and full-size FLOPs.

    python bench/bench_backbone.py [--repeats 3] [--threads N] [--dtype bfloat16] [--no-timing] [--no-flops]

Timing covers the aggregator, the DPT feature decoder and the tracker separately, for a
small and a medium configuration with deterministic (not trained) weights; the median
of ``--repeats`` runs after one warm-up run is reported. FLOPs of the full-size VGGT-1B
backbone (aggregator + track head) are counted on the meta device with
``torch.utils.flop_counter.FlopCounterMode`` (matmul/conv/attention FLOPs, 2 per MAC).
The reference implementation is not installed here, so no side-by-side timing is made.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vggts_ros.config import AggregatorConfig, BackboneConfig, TrackHeadConfig, tiny_backbone, vggt_1b_backbone  # noqa: E402
from vggts_ros.models.backbone import VGGTBackbone  # noqa: E402
from vggts_ros.models.deterministic import fill_deterministic  # noqa: E402

CONFIGS = {
    # name: (config, views, size, query points)
    "small (conv, w64, d24)": (tiny_backbone(), 2, 518, 6),
    "medium (ViT-S/14 reg, w384, d24)": (
        BackboneConfig(
            AggregatorConfig(embed_dim=384, depth=24, num_heads=6, patch_embed="dinov2_vits14_reg"),
            TrackHeadConfig(),
        ),
        2,
        518,
        50,
    ),
}


def _timed(fn, repeats: int):
    result = fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


@torch.no_grad()
def time_config(cfg: BackboneConfig, views: int, size: int, points: int, repeats: int, dtype: str):
    model = fill_deterministic(VGGTBackbone(cfg).eval(), 0)
    model.dtype = dtype
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(1, views, 3, size, size, generator=gen)
    query = torch.rand(1, points, 2, generator=gen) * (size - 1)
    keep = model.needed_layers()
    t_agg, (tokens, start) = _timed(lambda: model.encode(images, keep_layers=keep), repeats)
    t_dpt, feats = _timed(lambda: model.features(tokens, images, start), repeats)
    t_trk, _ = _timed(lambda: model.track(feats, query), repeats)
    return t_agg, t_dpt, t_trk


@torch.no_grad()
def count_flops(views: int, size: int, points: int):
    with torch.device("meta"):
        model = VGGTBackbone(vggt_1b_backbone()).eval()
        images = torch.empty(1, views, 3, size, size)
        query = torch.empty(1, points, 2)
    counts = []
    with FlopCounterMode(display=False) as fc:
        tokens, start = model.encode(images, keep_layers=model.needed_layers())
    counts.append(fc.get_total_flops())
    with FlopCounterMode(display=False) as fc:
        feats = model.features(tokens, images, start)
    counts.append(fc.get_total_flops())
    with FlopCounterMode(display=False) as fc:
        model.track(feats, query)
    counts.append(fc.get_total_flops())
    return counts


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--dtype", default="float32", help="aggregator precision: float32 or bfloat16")
    parser.add_argument("--points", type=int, default=50, help="query points for the FLOP count")
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--no-flops", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, aggregator dtype {args.dtype}")
    if not args.no_timing:
        print(f"\nCPU forward time, median of {args.repeats} after a warm-up (seconds)")
        header = f"{'config':<34} {'views':>5} {'size':>5} {'pts':>4} {'aggregator':>11} {'DPT feats':>10} {'tracker':>8} {'total':>7}"
        print(header)
        print("-" * len(header))
        for name, (cfg, views, size, points) in CONFIGS.items():
            t_agg, t_dpt, t_trk = time_config(cfg, views, size, points, args.repeats, args.dtype)
            total = t_agg + t_dpt + t_trk
            print(f"{name:<34} {views:>5} {size:>5} {points:>4} {t_agg:>11.3f} {t_dpt:>10.3f} {t_trk:>8.3f} {total:>7.3f}")
    if not args.no_flops:
        print(f"\nFLOPs of the full-size VGGT-1B backbone at 518x518, {args.points} query points (GFLOP)")
        header = f"{'views':>5} {'aggregator':>11} {'DPT feats':>10} {'tracker':>8} {'total':>9}"
        print(header)
        print("-" * len(header))
        for views in (2, 3):
            agg, dpt, trk = (f / 1e9 for f in count_flops(views, 518, args.points))
            print(f"{views:>5} {agg:>11.1f} {dpt:>10.1f} {trk:>8.1f} {agg + dpt + trk:>9.1f}")
    print("\nThe reference implementation (facebookresearch/vggt) is not installed, so only this "
          "implementation's numbers are shown.")


if __name__ == "__main__":
    main()
