"""Regenerate the model-level reference fixtures with other seeds, by running the
*reference* implementations (not this project's code).

    REF_VGGT=/tmp/ref/vggt REF_VGGTS=/tmp/ref/vggts \\
        python scripts/make_reference_fixtures.py --out /tmp/ref_seed3 --seed 3

``REF_VGGT`` is a checkout of facebookresearch/vggt (the directory holding ``vggt/``),
``REF_VGGTS`` one of buaa-colalab/VGGT-S (holding ``src/``), e.g. made with
``git -C /work/.mirror/<repo>/repo archive HEAD | tar -x -C /tmp/ref/<name>``. The reference
tracker needs ``einops`` (``pip install einops==0.8.2``; not a project dependency).

Written: ``vggt_track_tiny.pt`` (float32 and ``float64`` runs), ``vggts_head.pt`` and
``aggregator_dinov2.pt``, in the layout of ``test/fixtures/reference`` (see its README),
with the architecture of the shipped files and new seeds for weights, images, query
points, features and masks. Every other file of ``--base`` (default: the shipped set) is
copied, so ``VGGTS_REFERENCE_DIR=<out>`` is a complete set for the model-level tests
(test_backbone_parity, test_head_parity). The pipeline fixtures are copied unchanged;
they name the tiny backbone's weight seed, so the pipeline tests only apply to a set made
with ``--weight-seed`` equal to theirs.

Weights follow the fixtures' deterministic rule (``vggts_ros.models.deterministic``,
generic over any module: it draws by sorted state-dict key).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vggts_ros.models.deterministic import deterministic_state_dict, weight_sums  # noqa: E402


def _ref_paths() -> None:
    missing = [name for name in ("REF_VGGT", "REF_VGGTS") if not os.environ.get(name)]
    if missing:
        sys.exit(f"set {' and '.join(missing)} to checkouts of the reference code (see the docstring)")
    vggt, vggts = Path(os.environ["REF_VGGT"]), Path(os.environ["REF_VGGTS"])
    if not (vggt / "vggt").is_dir():
        sys.exit(f"REF_VGGT={vggt} has no vggt/ package")
    if not (vggts / "src" / "model").is_dir():
        sys.exit(f"REF_VGGTS={vggts} has no src/model/")
    sys.path.insert(0, str(vggt))
    sys.path.insert(0, str(vggts / "src"))


def _plotting_stub() -> None:
    """The reference ``src/utils.py`` imports matplotlib for its visualisations only; give
    it an empty module when matplotlib is not installed."""
    try:
        import matplotlib.pyplot  # noqa: F401
    except ImportError:
        import types

        mpl, plt = types.ModuleType("matplotlib"), types.ModuleType("matplotlib.pyplot")
        mpl.pyplot = plt
        sys.modules.setdefault("matplotlib", mpl)
        sys.modules.setdefault("matplotlib.pyplot", plt)


def _fill(model: nn.Module, seed: int) -> nn.Module:
    model.load_state_dict(deterministic_state_dict(model, seed), strict=True)
    return model


def _rand(shape, seed: int) -> torch.Tensor:
    return torch.rand(tuple(shape), generator=torch.Generator().manual_seed(int(seed)))


def _randn(shape, seed: int) -> torch.Tensor:
    from vggts_ros.models.deterministic import standard_normal

    return standard_normal(tuple(shape), torch.Generator().manual_seed(int(seed)))


# ------------------------------------------------------------------------------ tiny track model
def make_track_tiny(base: dict, weight_seed: int, seed: int) -> dict:
    from vggt.heads.track_head import TrackHead
    from vggt.models.aggregator import Aggregator

    cfg = copy.deepcopy(base["config"])
    th = dict(cfg["track_head"])
    agg_kw = {k: v for k, v in cfg.items() if k != "track_head"}

    class Tiny(nn.Module):  # the VGGT key layout: aggregator.*, track_head.*
        def __init__(self):
            super().__init__()
            self.aggregator = Aggregator(**agg_kw)
            self.track_head = TrackHead(**th)

    model = _fill(Tiny().eval(), weight_seed)
    _, frames, _, fh, fw = base["feature_shape"]
    image_seed, query_seed, index_seed = 1000 * seed + 7, 1000 * seed + 8, 1000 * seed + 9
    h, w = fh * 2, fw * 2
    images = _rand((1, frames, 3, h, w), image_seed)
    n_queries = base["query_points"].shape[1]
    queries = _rand((1, n_queries, 2), query_seed) * torch.tensor([w - 1.0, h - 1.0])
    numel = math.prod(base["feature_shape"])
    index = torch.randint(0, numel, (base["feature_sample_index"].numel(),), generator=torch.Generator().manual_seed(index_seed))

    def run(dtype):
        m = copy.deepcopy(model).to(dtype)
        with torch.no_grad():
            tokens, start = m.aggregator(images.to(dtype))
            feats = m.track_head.feature_extractor(tokens, images.to(dtype), start)
            coords, vis, conf = m.track_head.tracker(query_points=queries.to(dtype), fmaps=feats, iters=th["iters"])
        flat = feats.flatten()
        return tokens, flat, coords, vis, conf

    tokens, flat, coords, vis, conf = run(torch.float32)
    last = tokens[-1].flatten()
    n_tok = base["last_layer_tokens_sample"].numel()
    out = {
        "config": cfg,
        "weight_seed": weight_seed,
        "weight_sums": weight_sums(model),
        "image_seed": image_seed,
        "query_seed": query_seed,
        "query_points": queries,
        "feature_shape": list(base["feature_shape"]),
        "feature_sample_index": index,
        "feature_sample": flat[index].clone(),
        "feature_sum": float(flat.double().sum()),
        "feature_abs_sum": float(flat.double().abs().sum()),
        "last_layer_tokens_sample": last[index[:n_tok] % last.numel()].clone(),
        "coord_preds": [c.clone() for c in coords],
        "vis": vis.clone(),
        "conf": conf.clone(),
    }
    _, flat64, coords64, vis64, conf64 = run(torch.float64)
    out["float64"] = {
        "feature_sample": flat64[index].clone(),
        "feature_sum": float(flat64.sum()),
        "feature_abs_sum": float(flat64.abs().sum()),
        "coord_preds": [c.clone() for c in coords64],
        "vis": vis64.clone(),
        "conf": conf64.clone(),
    }
    return out


# ------------------------------------------------------------------------------ aggregator (DINOv2)
def make_aggregator_dinov2(base: dict, weight_seed: int, seed: int) -> dict:
    from vggt.models.aggregator import Aggregator

    cfg = copy.deepcopy(base["config"])
    kw = {k: v for k, v in cfg.items() if k != "patch_embed_depth"}
    model = Aggregator(**kw).eval()
    depth = cfg.get("patch_embed_depth")
    if depth is not None:  # the fixture truncates the DINOv2 patch embed to its first blocks
        model.patch_embed.blocks = nn.ModuleList(list(model.patch_embed.blocks)[: int(depth)])
    model = _fill(model, weight_seed)
    cases = []
    for n, case in enumerate(base["cases"]):
        image_seed = 1000 * seed + 20 + n
        images = _rand((1, case["S"], 3, case["H"], case["W"]), image_seed)
        with torch.no_grad():
            tokens, start = model(images)
        cases.append({"image_seed": image_seed, "S": case["S"], "H": case["H"], "W": case["W"],
                      "tokens": [t.clone() for t in tokens], "patch_start_idx": start})
    return {"config": cfg, "weight_seed": weight_seed, "weight_sums": weight_sums(model), "cases": cases}


# ------------------------------------------------------------------------------ VGGT-S head
def make_head(base: dict, weight_seed: int, seed: int) -> dict:
    _plotting_stub()
    from model.predictor import Predictor
    from utils import sample_feat_at_points

    cfg = copy.deepcopy(base["config"])
    model = _fill(Predictor(**cfg).eval(), weight_seed)
    size = int(cfg["img_size"])
    feat_seed = 1000 * seed + 11
    feat = _randn(base["feat_shape"], feat_seed)
    b, n = base["src_points"].shape[:2]
    gen = torch.Generator().manual_seed(1000 * seed + 12)
    src = torch.rand((b, n, 2), generator=gen) * (size - 1)
    tar = torch.rand((b, n, 2), generator=gen) * (size - 1)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = (torch.rand(2, generator=gen) * size * 0.4 + size * 0.3).tolist()
    r = np.hypot(yy - cy, xx - cx)
    masks = np.zeros((b, size, size), np.uint8)
    masks[0, int(size * 0.2) : int(size * 0.6), int(size * 0.3) : int(size * 0.8)] = 1  # a plain box
    masks[1 % b][(r > size * 0.12) & (r < size * 0.3)] = 1  # a ring
    spf = sample_feat_at_points(feat[:, 0], src, size, size).float()
    with torch.no_grad():
        # Fresh point features for every pass: the reference encoder updates them in place.
        full0, low0 = model(feat, src, tar, masks, None, spf.clone(), ret_logits=True)
        full1, low1 = model(feat, src, tar, masks, low0, spf.clone(), ret_logits=True)
    return {
        "config": cfg, "weight_seed": weight_seed, "weight_sums": weight_sums(model),
        "feat_seed": feat_seed, "feat_shape": list(base["feat_shape"]),
        "src_points": src, "tar_points": tar, "src_masks": torch.from_numpy(masks), "src_points_feat": spf,
        "pass0_pred": full0, "pass0_low_res": low0, "pass1_pred": full1, "pass1_low_res": low1,
    }  # fmt: skip


MAKERS = {
    "vggt_track_tiny.pt": make_track_tiny,
    "aggregator_dinov2.pt": make_aggregator_dinov2,
    "vggts_head.pt": make_head,
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="directory to write the fixture set to")
    ap.add_argument("--seed", type=int, required=True, help="seed of images, points, features and masks")
    ap.add_argument("--weight-seed", type=int, default=None, help="weight seed (default: --seed)")
    ap.add_argument("--base", default=str(REPO / "test" / "fixtures" / "reference"),
                    help="fixture set giving the architectures and shapes; its other files are copied")
    ap.add_argument("--only", nargs="*", choices=sorted(MAKERS), help="regenerate only these files")
    args = ap.parse_args(argv)
    _ref_paths()
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    base, out = Path(args.base), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(base.iterdir()):
        if path.is_file() and path.name not in MAKERS:
            shutil.copy2(path, out / path.name)
    weight_seed = args.seed if args.weight_seed is None else args.weight_seed
    for name in args.only or sorted(MAKERS):
        ref = torch.load(str(base / name), map_location="cpu", weights_only=False)
        data = MAKERS[name](ref, weight_seed, args.seed)
        torch.save(data, str(out / name))
        print(f"wrote {out / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
