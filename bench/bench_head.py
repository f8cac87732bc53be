"""Timing of the Union Segmentation Head: one full forward and one refinement step.

    python bench/bench_head.py [--device cuda] [--repeats 3] [--batch 1]

Weights follow the deterministic fixture rule (timing does not depend on their values).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from vggts_ros.config import HeadConfig  # noqa: E402
from vggts_ros.models.deterministic import fill_deterministic  # noqa: E402
from vggts_ros.models.union_head import UnionSegmentationHead  # noqa: E402


def timed(fn, device: torch.device, repeats: int):
    """Median wall and process-CPU time of ``fn`` over ``repeats`` runs; returns (wall, cpu, result)."""
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus), out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--img-size", type=int, default=518)
    ap.add_argument("--sa-tokens", type=int, default=37)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--points", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    cfg = HeadConfig(img_size=args.img_size, sa_tokens=args.sa_tokens)
    head = fill_deterministic(UnionSegmentationHead(cfg), 0).eval().to(device)
    g = cfg.img_size // 2
    gen = torch.Generator().manual_seed(0)
    feat = torch.randn(args.batch, 2, cfg.embed_dim, g, g, generator=gen).to(device)
    src = (torch.rand(args.batch, args.points, 2, generator=gen) * (cfg.img_size - 1)).to(device)
    tar = (torch.rand(args.batch, args.points, 2, generator=gen) * (cfg.img_size - 1)).to(device)
    mask = torch.zeros(args.batch, cfg.img_size, cfg.img_size, dtype=torch.uint8)
    mask[:, cfg.img_size // 4 : cfg.img_size // 2, cfg.img_size // 3 : cfg.img_size // 2] = 1
    mask = mask.to(device)

    with torch.inference_mode():
        _, low = head(feat, src, tar, mask)  # warm-up
        head(feat, src, tar, mask, prev_low_res=low)
        forward = timed(lambda: head(feat, src, tar, mask), device, args.repeats)
        encode = timed(lambda: head.encode(feat, src, tar, mask), device, args.repeats)
        ctx = encode[2]
        decode = timed(lambda: head.decode(ctx), device, args.repeats)
        refine = timed(lambda: head.decode(ctx, low), device, args.repeats)
        refine_full = timed(lambda: head(feat, src, tar, mask, prev_low_res=low), device, args.repeats)

    print(
        f"Union Segmentation Head  img_size={cfg.img_size} sa_tokens={cfg.sa_tokens} batch={args.batch} "
        f"points={args.points} device={device} threads={torch.get_num_threads()} "
        f"median of {args.repeats}"
    )
    print(f"  {'':<50s} {'wall ms':>9s} {'cpu ms':>9s}   ratio (wall)")
    rows = [
        ("forward (encode + first pass)", forward),
        ("  encode (once per pair)", encode),
        ("  decode, first pass", decode),
        ("refinement step: decode(ctx, previous low-res)", refine),
        ("refinement step re-encoding: forward(prev_low_res)", refine_full),
    ]
    for name, (wall, cpu, _) in rows:
        print(f"  {name:<50s} {wall * 1000:9.1f} {cpu * 1000:9.1f}   {wall / forward[0]:5.2f} x forward")
    print(f"  refinement step / re-encoding refinement: {refine[0] / refine_full[0]:.2f} (wall), "
          f"{refine[1] / refine_full[1]:.2f} (cpu)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
