"""Temporal VGGT-S evidence run: per-frame head vs temporal model on synthetic occlusion
clips, same budget and seeds, plus the per-frame cost of the memory modules at full size.

    .venv/bin/python bench/bench_temporal.py [--seeds 0 1 2] [--no-cost]   # the README's evidence
    .venv/bin/python bench/bench_temporal.py --cost-only     # FLOPs / CPU time at 518 px only

Protocol (smoke networks at ``--img-size`` 56 px, CPU, 1 thread): training clips from
``--train-images`` 24 generated images (2 objects each, one 5-frame clip per object),
held-out clips from 24 other images. Ground truth ``--truth amodal``: the whole object,
hidden part included (what a memory can know and a single occluded frame cannot; with
``visible`` the answer on an occluded frame is the sliver the occluder leaves, which only
that frame shows). ``--motion video``: the object's scale, rotation and position change
smoothly by a few per cent per frame (``wide``: the clip defaults, up to a third per frame,
so that even the true previous mask overlaps the current one by only 0.69 IoU on the
occluded frames of 5-frame clips; 0.74 and 0.84 with video motion at 4 and 6 frames). Stage A trains the per-frame head for ``--pre-epochs`` (12 = 144 steps,
constant lr 3e-3; ``--pre-drop``: x0.1 for its last 3 epochs). Stage B continues from that
head for ``--epochs`` (6 = 72 steps, lr 3e-3, x0.1 for the last 3) with the same batches:
the *plain* arm keeps training the head per frame, the *temporal* arm trains the memory
modules and the head (``TEMPORAL_RECIPE``; ``--temporal-set`` overrides it).
Both are then streamed over the held-out clips (the temporal arm through
``vggts_ros.temporal.TargetStream`` on its own predictions, as the node would) and scored
per frame: IoU overall, on frames where more than half of the object is hidden, on
blurred frames and on the rest. The temporal arm's weights are also streamed with the
memory switched off (ablation).

Cost: FLOPs (``torch.utils.flop_counter``, attention included) and single-thread CPU time of one head decode
pass at full size (518 px, 128 channels), of the memory attention reading a full bank
(K recent frames + the first; its propagated mask through the head's previous-mask
encoder included) and of the memory encoder writing one entry.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from vggts_ros.training.temporal_train import ClipTrainer, smoke_temporal_config  # noqa: E402
from vggts_ros.training.toydata import write_shapes_dataset  # noqa: E402


def run_arm(base: Path, name: str, train_root: str, val_root: str, use_memory: bool, epochs: int, seed: int,
            init_head=None, extra=None, lr_drop: bool = True):
    over = {"optim.epochs": epochs, "optim.lr_drops": [max(1, epochs - 3) if lr_drop else 10 ** 6], "run.seed": seed,
            "run.feature_cache": str(base / "cache"), "mode.temporal_seed": seed,
            "eval_data.root": val_root, "eval_data.fixed_pairs": True, "eval_data.adaptive_prompts": "warp",
            "eval_data.first_pass_points": 20, "eval_data.outlier_k": 4, "eval_data.seed": 1000}
    if init_head:
        over["model.init_head"] = str(init_head)
    over.update(extra or {})
    cfg = smoke_temporal_config(str(base / name), train_root, use_memory=use_memory, overrides=over)
    t0 = time.perf_counter()
    trainer = ClipTrainer(cfg)
    trainer.setup()
    summary = trainer.fit()
    seconds = time.perf_counter() - t0
    report = trainer.evaluate()
    ablation = None
    if use_memory:  # the same trained weights streamed with the memory switched off
        from vggts_ros.training.clip_eval import evaluate_clips

        ablation = evaluate_clips(trainer.head, None, trainer.eval_dataset, trainer.extractor,
                                  cfg.base.run.refine_iterations)["summary"]
    trainer.close()
    return {"steps": summary["steps"], "seconds": round(seconds, 1),
            "train_seconds": round(summary["train_seconds"], 1),
            "summary": report["summary"], "memory_off": ablation, "head": str(base / name / "head.pth"),
            "curve": [(e["epoch"], round(e["loss"], 3), round(e.get("eval_overall_iou", float("nan")), 3),
                       round(e.get("eval_occluded_iou", float("nan")), 3)) for e in summary["epochs"]]}


def evidence(args) -> dict:
    base = Path(args.out or tempfile.mkdtemp(prefix="vggts_bench_temporal_"))
    train = write_shapes_dataset(str(base / "train"), n_images=args.train_images, n_objects=2, seed=1,
                                 background="plain")
    val = write_shapes_dataset(str(base / "val"), n_images=args.val_images, n_objects=2, seed=2, background="plain")
    extra = {"clips.frames": args.frames, "clips.truth": args.truth, "model.img_size": args.img_size}
    if args.motion == "video":  # video-like steps between frames: the object moves, but not by a third each frame
        extra.update({"clips.scale": [0.9, 1.1], "clips.rotate_deg": 6.0, "clips.shift": 0.06})
    results = []
    for seed in args.seeds:
        sb = base / f"seed{seed}"
        pre = None
        if args.pre_epochs > 0:
            pre = run_arm(sb, "stage_a", train["root"], val["root"], False, args.pre_epochs, seed, extra=extra,
                          lr_drop=args.pre_drop)
            print(f"seed {seed} stage A (shared per-frame head): {pre['steps']} steps, {pre['seconds']} s, "
                  f"held-out {fmt(pre['summary'])}", flush=True)
        init = pre["head"] if pre else None
        arms = {}
        for name, mem in (("plain", False), ("temporal", True)):
            own = dict(extra, **TEMPORAL_RECIPE, **_assignments(args.temporal_set)) if mem else extra
            arms[name] = run_arm(sb, name, train["root"], val["root"], mem, args.epochs, seed, init, own)
            a = arms[name]
            print(f"seed {seed} {name:8s}: {a['steps']} steps, {a['seconds']} s, held-out {fmt(a['summary'])}",
                  flush=True)
            if a["memory_off"]:
                print(f"seed {seed} {name} weights, memory off: {fmt(a['memory_off'])}", flush=True)
        results.append({"seed": seed, "stage_a": pre, **arms})
    agg = {}
    for name in ("plain", "temporal"):
        agg[name] = {k: float(np.mean([r[name]["summary"][k]["iou"] for r in results]))
                     for k in ("overall", "occluded", "blurred", "rest")}
    margin = {k: agg["temporal"][k] - agg["plain"][k] for k in agg["plain"]}
    print("mean over seeds  plain:", {k: round(v, 3) for k, v in agg["plain"].items()})
    print("mean over seeds  temporal:", {k: round(v, 3) for k, v in agg["temporal"].items()})
    print("temporal - plain:", {k: round(v, 3) for k, v in margin.items()})
    return {"results": results, "mean": agg, "margin": margin, "frames": results[0]["plain"]["summary"]}


# the temporal arm's own settings (the defaults, spelled out): memory written from the
# model's own predictions while training, as at inference (no teacher forcing), and the
# carried mask also added to the output logits through its zero-initialised gate
TEMPORAL_RECIPE = {"mode.teacher_forcing": 0.0, "temporal.fuse_logits": True}


def _assignments(items):
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--temporal-set {item!r}: expected section.key=value")
        out[key] = yaml.safe_load(value)
    return out


def fmt(summary) -> str:
    return ", ".join(f"{k} {v['iou']:.3f} ({v['frames']} fr)" for k, v in summary.items())


def _plain_attention(q, k, v, *args, **kwargs):
    w = torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5, dim=-1)
    return w @ v


def cost(args) -> dict:
    """FLOPs and CPU time per frame of the memory modules vs one head decode, 518 px."""
    from torch.utils.flop_counter import FlopCounterMode

    from vggts_ros.config import HeadConfig
    from vggts_ros.models.temporal import TemporalConfig, TemporalMemory
    from vggts_ros.models.union_head import UnionSegmentationHead

    torch.set_num_threads(args.threads)
    hc = HeadConfig()
    tc = TemporalConfig()
    head = UnionSegmentationHead(hc).eval()
    tm = TemporalMemory.seeded(hc, tc, 0).eval()
    g = hc.img_size // 2
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(1, 2, hc.embed_dim, g, g, generator=gen)
    pts = torch.rand(1, 5, 2, generator=gen) * (hc.img_size - 1)
    mask = torch.zeros(1, hc.img_size, hc.img_size)
    mask[:, 150:350, 150:350] = 1
    out = {}
    with torch.no_grad():
        ctx = head.encode(feats, pts, pts, mask)
        _, low = head.decode(ctx)
        bank = tm.new_bank()
        for i in range(tc.memory_frames + 1):
            bank.add(tm.memorise(ctx, low), confident=True)

        def measure(name, fn, reps):
            # FlopCounterMode does not count the CPU kernel of scaled_dot_product_attention:
            # count with a plain softmax(q k^T) v in its place, time the real kernel
            real = torch.nn.functional.scaled_dot_product_attention
            torch.nn.functional.scaled_dot_product_attention = _plain_attention
            try:
                with FlopCounterMode(display=False) as fc:
                    fn()
            finally:
                torch.nn.functional.scaled_dot_product_attention = real
            ts = []
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            out[name] = {"gflops": fc.get_total_flops() / 1e9, "cpu_ms": 1e3 * float(np.median(ts))}

        measure("head_decode", lambda: head.decode(ctx, low), args.reps)
        measure("memory_attention", lambda: tm.condition(head, ctx, bank), args.reps)
        measure("memory_encoder", lambda: tm.memorise(ctx, low), args.reps)
    mem = {k: out["memory_attention"][k] + out["memory_encoder"][k] for k in ("gflops", "cpu_ms")}
    out["memory_total"] = mem
    out["ratio_to_head_decode"] = {k: mem[k] / out["head_decode"][k] for k in ("gflops", "cpu_ms")}
    out["bank_tokens"] = len(bank) * tm.side ** 2
    out["parameters"] = {"temporal": sum(p.numel() for p in tm.parameters()),
                         "head": sum(p.numel() for p in head.parameters())}
    out["threads"] = args.threads
    for k, v in out.items():
        print(f"{k}: {v}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--train-images", type=int, default=24)
    p.add_argument("--val-images", type=int, default=24)
    p.add_argument("--frames", type=int, default=5)
    p.add_argument("--img-size", type=int, default=56, help="network input size of the smoke networks")
    p.add_argument("--motion", choices=("video", "wide"), default="video",
                   help="trajectory per clip: 'video' (scale 0.9-1.1, 6 deg, 6 %% shift) or 'wide' "
                        "(the clip defaults: 0.8-1.25, 12 deg, 12 %%)")
    p.add_argument("--truth", choices=("visible", "amodal"), default="amodal",
                   help="ground truth of the clips: the visible part or the whole object")
    p.add_argument("--pre-epochs", type=int, default=12)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--pre-drop", action=argparse.BooleanOptionalAction, default=False,
                   help="x0.1 learning rate for stage A's last 3 epochs too")
    p.add_argument("--temporal-set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="config override for the temporal arm only (e.g. mode.teacher_forcing=0)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", default=None)
    p.add_argument("--cost-only", action="store_true")
    p.add_argument("--no-cost", action="store_true")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    res = {}
    if not args.cost_only:
        res["evidence"] = evidence(args)
    if not args.no_cost:
        res["cost"] = cost(args)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
