"""FLOP counts of the pipeline's pieces, shared by the bench scripts.

Networks are built on the meta device (no memory, no weights) and run under
``torch.utils.flop_counter.FlopCounterMode``, which counts matmul/conv/attention FLOPs
(2 per multiply-accumulate); element-wise work, K-means and resizing are not counted, so
every latency derived from these counts is a lower bound.

``stage_flops`` gives the per-call cost of each stage for a preset; ``set_flops`` turns
that into the cost of one synchronised set as the project's pipeline runs it (one first
pass over all views, one tracker call per object, one features pass per object over
[source crop, all targets], the head batched over the targets) and as the reference
recipe runs it (every (object, target) pair alone: a first pass and a features pass over
2 views each).
"""

from __future__ import annotations

from typing import Dict

import torch
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vggts_ros.config import ModelPreset, model_preset  # noqa: E402


def _count(fn) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


@torch.no_grad()
def stage_flops(preset: ModelPreset | str = "vggt-1b", views: int = 3, targets: int = 2, points: int = 50,
                prompts: int = 5) -> Dict[str, int]:
    """FLOPs of one call of each stage.

    Keys: ``backbone_<S>`` (aggregator + DPT features over S views) for S in 2 and
    ``views``; ``tracker_<S>`` (``points`` points through S views); ``encode``/``decode``/
    ``refine`` of the head batched over ``targets`` pairs (``*_pair``: one pair).
    """
    from vggts_ros.models.backbone import VGGTBackbone
    from vggts_ros.models.union_head import UnionSegmentationHead

    p = model_preset(preset) if isinstance(preset, str) else preset
    size = p.image_size
    with torch.device("meta"):
        backbone = VGGTBackbone(p.backbone).eval()
        head = UnionSegmentationHead(p.head).eval()
    out: Dict[str, int] = {}
    feat_c, g = p.backbone.track_head.features, size // 2
    for s in sorted({2, int(views)}):
        images = torch.empty(1, s, 3, size, size, device="meta")
        out[f"backbone_{s}"] = _count(lambda: backbone(images))
        feats = torch.empty(1, s, feat_c, g, g, device="meta")
        query = torch.empty(1, points, 2, device="meta")
        out[f"tracker_{s}"] = _count(lambda: backbone.track(feats, query))
    for name, b in (("", targets), ("_pair", 1)):
        fmap = torch.empty(b, 2, p.head.embed_dim, g, g, device="meta")
        pts = torch.empty(b, prompts, 2, device="meta")
        mask = torch.empty(b, size, size, device="meta")
        holder = {}

        def enc():
            holder["ctx"] = head.encode(fmap, pts, pts, mask)

        out["encode" + name] = _count(enc)

        def dec():
            holder["low"] = head.decode(holder["ctx"])[1]

        out["decode" + name] = _count(dec)
        out["refine" + name] = _count(lambda: head.decode(holder["ctx"], holder["low"]))
    return out


def set_flops(f: Dict[str, int], cameras: int = 3, objects: int = 1, refinements: int = 1) -> Dict[str, int]:
    """FLOPs of one synchronised set of ``cameras`` views (1 source + targets) for ``objects``
    objects: the project's schedule (``ours``) and the reference recipe run pairwise
    (``reference``), with their parts. ``f`` comes from :func:`stage_flops` with
    ``views=cameras`` and ``targets=cameras-1``."""
    t = cameras - 1
    pairs = objects * t
    head_batched = f["encode"] + f["decode"] + refinements * f["refine"]
    head_pair = f["encode_pair"] + f["decode_pair"] + refinements * f["refine_pair"]
    ours = dict(
        first_backbone=f[f"backbone_{cameras}"],
        tracker=objects * f[f"tracker_{cameras}"],
        features=objects * f[f"backbone_{cameras}"],
        head=objects * head_batched,
    )
    ref = dict(
        first_backbone=pairs * f["backbone_2"],
        tracker=pairs * f["tracker_2"],
        features=pairs * f["backbone_2"],
        head=pairs * head_pair,
    )
    ours["total"] = sum(ours.values())
    ref["total"] = sum(ref.values())
    return {**{f"ours_{k}": v for k, v in ours.items()}, **{f"reference_{k}": v for k, v in ref.items()}}


# Dense tensor-core peaks (TFLOP/s) used for the README's latency floors: (bf16, tf32).
FLOOR_DEVICES = {
    "H100 SXM": (989.0, 495.0),
    "RTX 4090": (165.0, 82.6),
    "Jetson AGX Orin 64GB": (42.5, 21.3),
}


def markdown_table(preset: str = "vggt-1b", cameras: int = 3, objects=(1, 4), refinements: int = 1) -> str:
    """README table: FLOPs per set and latency floors (FLOPs / dense peak) per device."""
    f = stage_flops(preset, views=cameras, targets=cameras - 1)
    cols = [(o, sched) for o in objects for sched in ("ours", "reference")]
    head = "| | " + " | ".join(f"{o} object{'s' if o > 1 else ''}, {'project' if s == 'ours' else 'reference pairwise'}"
                              for o, s in cols) + " |"
    lines = [head, "|" + " --- |" * (len(cols) + 1)]
    sets = {o: set_flops(f, cameras, o, refinements) for o in objects}
    for part, label in (("first_backbone", "first pass backbone"), ("tracker", "tracker"),
                        ("features", "features pass backbone"), ("head", "head (encode + 2 decodes)"),
                        ("total", "**total TFLOP**")):
        lines.append(f"| {label} | " + " | ".join(f"{sets[o][f'{s}_{part}'] / 1e12:.2f}" for o, s in cols) + " |")
    for dev, (bf16, tf32) in FLOOR_DEVICES.items():
        for name, peak in (("bf16", bf16), ("TF32", tf32)):
            lines.append(f"| {dev} {name} {peak:g} TFLOP/s: ms | "
                         + " | ".join(f"{sets[o][f'{s}_total'] / (peak * 1e12) * 1e3:.1f}" for o, s in cols) + " |")
    return "\n".join(lines)


if __name__ == "__main__":  # python bench/flops.py  -> the README's table
    print(markdown_table())
