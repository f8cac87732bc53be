"""Benchmark of the VGGT-S pipeline: backbone pass vs head vs refinement, and FLOPs per set.

    python bench/bench_pipeline.py [--repeats 3] [--threads 1] [--device cpu] [--no-timing] [--no-flops]

Timing (same process, same inputs, median of ``--repeats`` after one warm-up), for
  * ``test-tiny``: the 126 px preset (small backbone, small head);
  * ``tiny-518``: the small backbone of the parity fixture at 518 px with the full-size head.
Rows: one backbone pass over [source crop, target crop] (aggregator + DPT features), one
tracker call (50 points), the head forward (encode + first decode), one refinement step
(decode reusing the encoded context and the backbone features) and a whole ``segment()``
for one exo target. Ratios are relative to the backbone pass.

FLOPs (``torch.utils.flop_counter.FlopCounterMode``; matmul/conv/attention, 2 per MAC) of
the full-size model (VGGT-1B backbone + full head, built on the meta device) for one
synchronised set of 3 cameras (source + 2 targets) and one object, as the pipeline runs it.
Weights are deterministic (timing does not depend on their values).
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

from bench.flops import stage_flops  # noqa: E402
from vggts_ros.config import HeadConfig, ModelPreset, PipelineConfig, model_preset, tiny_backbone  # noqa: E402
from vggts_ros.pipeline import VGGTSegmentor  # noqa: E402
from vggts_ros.types import TargetView  # noqa: E402

PRESETS = {
    "test-tiny": model_preset("test-tiny"),
    "tiny-518": ModelPreset(tiny_backbone(), HeadConfig(img_size=518, sa_tokens=37), image_size=518,
                            backbone_seed=0, head_seed=1),
}


def timed(fn, device: torch.device, repeats: int):
    """(median wall seconds, last result) over ``repeats`` runs after a warm-up."""
    out = fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def scene(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.kron(base, np.ones((16, 16, 1), np.uint8))[:h, :w])


@torch.inference_mode()
def time_preset(name: str, preset: ModelPreset, device: str, repeats: int):
    seg = VGGTSegmentor.deterministic(preset, PipelineConfig(), device=device)
    dev, size = seg.device, seg.image_size
    src_img, tgt_img = scene(704, 704, 0), scene(540, 960, 1)
    mask = np.zeros((704, 704), np.uint8)
    mask[250:450, 300:420] = 1
    rng = np.random.default_rng(0)
    views = [scene(size, size, 2), scene(size, size, 3)]
    queries = (rng.random((50, 2)) * (size - 1)).astype(np.float32)
    prompts_src = (rng.random((5, 2)) * (size - 1)).astype(np.float32)
    prompts_tar = (rng.random((5, 2)) * (size - 1)).astype(np.float32)
    crop_mask = np.zeros((size, size), np.uint8)
    crop_mask[size // 4 : size // 2, size // 3 : 2 * size // 3] = 1

    t_bb, feats = timed(lambda: seg.backbone_features(views), dev, repeats)
    t_trk, _ = timed(lambda: seg.track(feats, [queries]), dev, repeats)
    g = feats.shape[-1]
    feat_map = torch.stack([feats[0, :1], feats[0, 1:2]], dim=1)
    src = torch.from_numpy(prompts_src)[None].to(dev)
    tar = torch.from_numpy(prompts_tar)[None].to(dev)
    m = torch.from_numpy(crop_mask)[None].to(dev)
    head = seg.head

    def forward():
        ctx = head.encode(feat_map, src, tar, m)
        return ctx, head.decode(ctx)

    t_head, (ctx, (_, low)) = timed(forward, dev, repeats)
    ctx_refine = head.add_point_feature_identity(ctx)
    t_ref, _ = timed(lambda: head.decode(ctx_refine, low), dev, repeats)
    target = TargetView(tgt_img, role="exo")
    t_seg, res = timed(lambda: seg.segment(src_img, mask, [target]), dev, max(1, repeats // 2))
    stages = res[0].timings
    return dict(name=name, size=size, grid=g, backbone=t_bb, tracker=t_trk, head=t_head, refine=t_ref,
                segment=t_seg, stages=stages)


def count_flops(preset: ModelPreset, views_first: int = 3, points: int = 50, prompts: int = 5) -> dict:
    """FLOPs of each pipeline piece for ``preset``'s networks (meta device; bench/flops.py)."""
    f = stage_flops(preset, views=views_first, targets=max(1, views_first - 1), points=points, prompts=prompts)
    return dict(
        first_backbone=f[f"backbone_{views_first}"],
        tracker=f["tracker_2"],
        first_tracker=f[f"tracker_{views_first}"],
        pair_backbone=f["backbone_2"],
        shared_backbone=f[f"backbone_{views_first}"],
        encode=f["encode_pair"],
        decode0=f["decode_pair"],
        refine=f["refine_pair"],
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--presets", nargs="*", default=list(PRESETS), choices=list(PRESETS))
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--no-flops", action="store_true")
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} thread(s), "
          f"median of {args.repeats} after a warm-up")
    if not args.no_timing:
        rows = [time_preset(n, PRESETS[n], args.device, args.repeats) for n in args.presets]
        print("\nSeconds (ratio to one backbone pass over [source crop, target crop])")
        header = f"{'config':<10} {'size':>5} {'backbone pass':>14} {'tracker(50)':>14} {'head forward':>14} {'refinement':>14} {'segment()':>14}"
        print(header)
        print("-" * len(header))
        for r in rows:
            cells = [f"{r[k]:7.3f} ({r[k] / r['backbone']:4.2f})" for k in ("backbone", "tracker", "head", "refine", "segment")]
            print(f"{r['name']:<10} {r['size']:>5} " + " ".join(f"{c:>14}" for c in cells))
            f = count_flops(PRESETS[r["name"]])
            flops = [f["pair_backbone"], f["tracker"], f["encode"] + f["decode0"], f["refine"]]
            cells = [f"{x / 1e9:7.2f} ({x / flops[0]:4.2f})" for x in flops]
            print(f"{'  GFLOP':<16} " + " ".join(f"{c:>14}" for c in cells))
        print("\nsegment() stages, seconds (one exo target, 1 refinement):")
        for r in rows:
            st = r["stages"]
            print(f"  {r['name']:<10} " + "  ".join(f"{k} {v:.3f}" for k, v in st.items()))
    if not args.no_flops:
        f = count_flops(model_preset("vggt-1b"))
        t, ref = 2, 1
        head_per_target = f["encode"] + f["decode0"] + ref * f["refine"]
        first = f["first_backbone"] + f["first_tracker"]
        per_pair = first + t * (f["pair_backbone"] + head_per_target)
        shared = first + f["shared_backbone"] + t * head_per_target
        gf = lambda x: f"{x / 1e9:10.1f}"  # noqa: E731
        print(f"\nGFLOP, full-size model (VGGT-1B backbone + head 518/37), 3 cameras, 1 object, {ref} refinement")
        print(f"  {'first pass: backbone over 3 views':<52}{gf(f['first_backbone'])}")
        print(f"  {'first pass: tracker, 50 points':<52}{gf(f['first_tracker'])}")
        print(f"  {'features pass over [src crop, target] (per target)':<52}{gf(f['pair_backbone'])}")
        print(f"  {'features pass over [src crop, 2 targets] (shared)':<52}{gf(f['shared_backbone'])}")
        print(f"  {'head encode (per target)':<52}{gf(f['encode'])}")
        print(f"  {'head first decode (per target)':<52}{gf(f['decode0'])}")
        print(f"  {'head refinement step (per target)':<52}{gf(f['refine'])}")
        print(f"  {'set total, one features pass per target':<52}{gf(per_pair)}")
        print(f"  {'set total, shared features pass (default)':<52}{gf(shared)}")
        print(f"  refinement step / backbone pass over 2 views: {f['refine'] / f['pair_backbone']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
