"""Regenerate the model-level reference fixtures with other seeds, by running the
*reference* implementations (not this project's code).

    REF_VGGT=/tmp/ref/vggt REF_VGGTS=/tmp/ref/vggts \\
        python scripts/make_reference_fixtures.py --out /tmp/ref_seed3 --seed 3

``REF_VGGT`` is a checkout of facebookresearch/vggt (the directory holding ``vggt/``),
``REF_VGGTS`` one of buaa-colalab/VGGT-S (holding ``src/``), e.g. made with
``git -C /work/.mirror/<repo>/repo archive HEAD | tar -x -C /tmp/ref/<name>``. The reference
tracker needs ``einops`` (``pip install einops==0.8.2``; not a project dependency).

Written: ``vggt_track_tiny.pt`` (float32 and ``float64`` runs), ``vggts_head.pt``,
``aggregator_dinov2.pt``, ``pipeline_ego2exo.pt`` and ``pipeline_exo2ego.pt``, in the
layout of ``test/fixtures/reference`` (see its README), with the architecture of the
shipped files and new seeds for weights, images, query points, features and masks.

The pipeline fixtures run the release's inference recipes stage by stage on a seeded
synthetic ego/exo pair (a blurred colour grid with a striped ellipse, the object, in both
views): ego->exo as ``data/extract_point_g2x.py`` (first pass), ``src/dataloader.py``
(``ego_src``/``exo_tar``) and ``src/main_exp/hybrid.py``'s evaluation loop; exo->ego as
``data/extract_point_x2g.py``, ``exo_src``/``ego_tar`` and the same loop. Backbone: the
tiny model of ``vggt_track_tiny.pt`` (its weight seed), head: ``Predictor(img_size=518,
sa_tokens=37)`` with weight seed + 1. ``--base-inputs`` takes the images and masks (and the
feature sample indices) from the base pipeline files instead: with ``--weight-seed 0``
that reproduces the shipped pipeline fixtures, which checks this script.

Every other file of ``--base`` (default: the shipped set) is copied unless ``--no-copy``
(then the directory holds only the seed-dependent files; the test suite takes the others
from the shipped set, see ``test/conftest.py``).

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
    cfg = copy.deepcopy(base["config"])
    model = _track_model(cfg, weight_seed)
    th = cfg["track_head"]
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


# ------------------------------------------------------------------------------ pipeline fixtures
NET = 518  # the network size of the pipeline fixtures (full-size head, 518 px views)
EGO_HW, EXO_HW = (704, 704), (540, 960)  # Ego-Exo4D frames as the release downscales them


def synthetic_view(hw, seed: int, centre, axes, stripes: int):
    """A seeded test frame: a blurred grid of random colours and, on top, a striped red
    ellipse (the object). Returns (RGB uint8 image, uint8 mask)."""
    import cv2

    h, w = hw
    rng = np.random.default_rng(seed)
    cell = int(rng.integers(56, 96))
    grid = rng.integers(20, 236, (h // cell + 2, w // cell + 2, 3)).astype(np.uint8)
    big = cv2.resize(grid, (grid.shape[1] * cell, grid.shape[0] * cell), interpolation=cv2.INTER_NEAREST)
    image = cv2.GaussianBlur(big[:h, :w], (0, 0), sigmaX=cell / 4)
    yy, xx = np.mgrid[:h, :w]
    (cx, cy), (ax, ay) = centre, axes
    inside = ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1.0
    shade = 0.75 + 0.25 * np.cos(2 * np.pi * stripes * (xx - cx) / (2 * ax))
    obj = np.stack([215 * shade, 70 * shade, 45 * shade], axis=-1).astype(np.uint8)
    image = np.where(inside[..., None], obj, image).astype(np.uint8)
    return np.ascontiguousarray(image), inside.astype(np.uint8)


def pipeline_inputs(seed: int) -> dict:
    """The ego (704x704) and exo (960x540) frames and object masks of a pipeline fixture."""
    rng = np.random.default_rng(1000 * seed + 31)
    ego_c = rng.uniform(220, 484, 2)
    ego_ax = rng.uniform([50, 40], [95, 70])
    exo_c = (rng.uniform(260, 700), rng.uniform(180, 360))
    exo_ax = ego_ax * rng.uniform(0.4, 0.7)
    stripes = int(rng.integers(3, 7))
    ego, ego_mask = synthetic_view(EGO_HW, 1000 * seed + 32, ego_c, ego_ax, stripes)
    exo, exo_mask = synthetic_view(EXO_HW, 1000 * seed + 33, exo_c, exo_ax, stripes)
    return {"ego_image": ego, "ego_mask": ego_mask, "exo_image": exo, "exo_mask": exo_mask}


class _Reference:
    """The reference's pipeline pieces on the fixtures' networks (import on first use)."""

    def __init__(self, track_fx: dict, head_fx: dict, weight_seed: int):
        _plotting_stub()
        for name in ("pycocotools", "pycocotools.mask"):  # dataset annotations only
            try:
                __import__(name)
            except ImportError:
                import types

                sys.modules.setdefault(name, types.ModuleType(name))
        import utils as ref_utils  # VGGT-S src/utils.py
        from model.predictor import Predictor

        self.U = ref_utils
        self.track = _track_model(track_fx["config"], weight_seed)
        cfg = dict(head_fx["config"], img_size=NET, sa_tokens=37)
        self.head = _fill(Predictor(**cfg).eval(), weight_seed + 1)
        self.head_config = cfg

    @staticmethod
    def pad_frame(frame: np.ndarray, is_mask: bool) -> np.ndarray:
        sys.path.insert(0, str(Path(os.environ["REF_VGGTS"]) / "data"))
        from extract_point_g2x import G2xCropImage  # the first pass's letterbox

        return G2xCropImage.pad_frame(None, frame, (NET, NET), is_mask)

    @staticmethod
    def pair(a: np.ndarray, b: np.ndarray) -> torch.Tensor:
        """Two uint8 views as the release stacks them: ``[1, 2, 3, H, W]`` float32."""
        ts = [torch.from_numpy(v[None] / 255.0).permute(0, 3, 1, 2).float() for v in (a, b)]
        return torch.stack(ts, dim=1).contiguous()

    def first_pass(self, src: np.ndarray, tar: np.ndarray, queries: torch.Tensor, dtype) -> tuple:
        """Aggregator + track head over ``[src, tar]``: (frame-1 coords clipped to the view,
        vis, conf) of the last iteration."""
        model = self.track if dtype == torch.float32 else copy.deepcopy(self.track).to(dtype)
        images = self.pair(src, tar).to(dtype)
        with torch.no_grad():
            tokens, start = model.aggregator(images)
            coords, vis, conf = model.track_head(tokens, images=images, patch_start_idx=start,
                                                 query_points=queries.to(dtype))
        projected = np.clip(coords[-1][:, 1].numpy(), 0, NET - 1)[0]
        return projected, vis[0, 1].clone(), conf[0, 1].clone()

    def features(self, src: np.ndarray, tar: np.ndarray) -> torch.Tensor:
        images = self.pair(src, tar)
        with torch.no_grad():
            tokens, start = self.track.aggregator(images)
            return self.track.track_head.feature_extractor(tokens, images, start).float()

    def head_loop(self, feat, src_points, tar_points, src_mask, meta, shared: bool):
        """The evaluation loop's head: one pass and one refinement; ``shared``: one point
        feature tensor for both passes (the loop's accumulating identity), else a fresh one
        per pass. Returns (low-res logits, recovered mask, recovered points) of the last pass."""
        spf = self.U.sample_feat_at_points(feat[:, 0], src_points, NET, NET).float()
        tar = torch.as_tensor(np.asarray(tar_points, np.float32)[None])
        low = None
        with torch.no_grad():
            for _ in range(2):
                _, low, rec, pts = self.head(feat_map_b=feat, src_points_b=src_points, tar_points_b=tar,
                                             src_mask_b=src_mask[None], src_points_feat_b=spf if shared else spf.clone(),
                                             tar_mask_b=low, ret_logits=False, meta=[meta], tar_square=EGO_HW[0])
                low = low.float()
        return low.clone(), torch.as_tensor(rec[0]).to(torch.uint8), torch.as_tensor(pts[0]).float()

    def sample(self, mask: np.ndarray, n: int) -> torch.Tensor:
        return torch.as_tensor(self.U.mask_sampling(masks_b=mask[None, None], n_samples=n)).squeeze(1).float()


def _track_model(cfg: dict, weight_seed: int) -> nn.Module:
    from vggt.heads.track_head import TrackHead
    from vggt.models.aggregator import Aggregator

    th = dict(cfg["track_head"])
    agg_kw = {k: v for k, v in cfg.items() if k != "track_head"}

    class Tiny(nn.Module):  # the VGGT key layout: aggregator.*, track_head.*
        def __init__(self):
            super().__init__()
            self.aggregator = Aggregator(**agg_kw)
            self.track_head = TrackHead(**th)

    return _fill(Tiny().eval(), weight_seed)


def _pipeline_common(ctx: dict, base: dict, weight_seed: int, seed: int):
    track_fx = ctx["track"]
    if int(track_fx["weight_seed"]) != weight_seed:
        sys.exit(f"vggt_track_tiny.pt of this set has weight seed {track_fx['weight_seed']}, not {weight_seed}: "
                 "make it first (the pipeline fixtures name its networks)")
    R = _Reference(track_fx, ctx["head"], weight_seed)
    if ctx["base_inputs"]:
        inputs = {k: base[k].numpy() for k in ("ego_image", "ego_mask", "exo_image", "exo_mask")}
        index = base["feature_sample_index"]
    else:
        inputs = pipeline_inputs(seed)
        numel = 2 * track_fx["config"]["track_head"]["features"] * (NET // 2) ** 2
        index = torch.randint(0, numel, (base["feature_sample_index"].numel(),),
                              generator=torch.Generator().manual_seed(1000 * seed + 34))
    head = {"weight_seed": weight_seed, "head_weight_seed": weight_seed + 1,
            "head_weight_sums": weight_sums(R.head)}
    return R, inputs, index, head


def _u8(a) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a).astype(np.uint8))


def _f32(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, np.float32))


def make_pipeline_ego2exo(base: dict, weight_seed: int, seed: int, ctx: dict) -> dict:
    import cv2

    R, inp, index, out = _pipeline_common(ctx, base, weight_seed, seed)
    U = R.U
    ego, ego_mask, exo = inp["ego_image"], inp["ego_mask"], inp["exo_image"]
    h, w = exo.shape[:2]
    # first pass (extract_point_g2x.py): square ego resized, exo letterboxed, 50 K-means points
    ego_lb, ego_mask_lb, exo_lb = R.pad_frame(ego, False), R.pad_frame(ego_mask, True), R.pad_frame(exo, False)
    queries = R.sample(ego_mask_lb, 50)
    first, vis, conf = R.first_pass(ego_lb, exo_lb, queries, torch.float32)
    first64, vis64, conf64 = R.first_pass(ego_lb, exo_lb, queries, torch.float64)
    # target crop (dataloader.py exo_tar): exo pixels, clipped, 10 outliers out, 3x crop, 5 clusters
    proj = first * 960 / NET
    proj[:, 0] = np.clip(proj[:, 0], 0, w - 1)
    proj[:, 1] = np.clip(proj[:, 1], 0, h - 1)
    kept, _ = U.remove_outliers_median(proj, K=10)
    box = max(kept[:, 1].max() - kept[:, 1].min(), kept[:, 0].max() - kept[:, 0].min())
    crop_size = U.cal_crop_size_3x(box)
    tar_crop, _, crop_pts, _, meta = U.clip_exo_box_center_wp(kept, exo, inp["exo_mask"], NET, NET, crop_size)
    _, tar_pts = U.cluster_points(crop_pts, K=5)
    # source crop (ego_src): the resized view, R=2 zoom on the mask
    img_s = cv2.resize(ego, (NET, NET), interpolation=cv2.INTER_AREA)
    mask_s = cv2.resize(ego_mask, (NET, NET), interpolation=cv2.INTER_NEAREST)
    src_crop, src_crop_mask = U.crop_and_resize_by_mask_safe(img_s, mask_s, 2)
    if src_crop_mask.sum() == 0:
        src_crop, src_crop_mask = img_s, mask_s
    # features pass and head (hybrid.py evaluation loop)
    src_pts = R.sample(src_crop_mask, 5)
    feat = R.features(src_crop, tar_crop)
    fresh = R.head_loop(feat, src_pts, tar_pts, src_crop_mask, meta, shared=False)
    loop = R.head_loop(feat, src_pts, tar_pts, src_crop_mask, meta, shared=True)
    out.update(
        note=base["note"],
        ego_image=_u8(ego), ego_mask=_u8(ego_mask), exo_image=_u8(exo), exo_mask=_u8(inp["exo_mask"]),
        ego_letterbox=_u8(ego_lb), ego_mask_letterbox=_u8(ego_mask_lb), exo_letterbox=_u8(exo_lb),
        first_pass_source_points=queries[0].clone(), first_pass_projected_518=_f32(first),
        first_pass_vis=vis.float(), first_pass_conf=conf.float(),
        first_pass_float64={"projected_518": torch.as_tensor(first64), "vis": vis64, "conf": conf64},
        projected_exo_pixels=_f32(proj), kept_points=_f32(kept), box_size=float(box), crop_size=int(crop_size),
        crop_meta=dict(meta), target_crop_image=_u8(tar_crop), crop_points=_f32(crop_pts), target_points=_f32(tar_pts),
        source_crop_image=_u8(src_crop), source_crop_mask=_u8(src_crop_mask), source_points=src_pts[0].clone(),
        feature_sample_index=index, feature_sample=feat.flatten()[index].clone(),
        final_low_res=fresh[0], final_mask=fresh[1], final_points=fresh[2],
        eval_loop={"final_low_res": loop[0], "final_mask": loop[1], "final_points": loop[2]},
    )  # fmt: skip
    return out


def make_pipeline_exo2ego(base: dict, weight_seed: int, seed: int, ctx: dict) -> dict:
    import cv2

    R, inp, index, out = _pipeline_common(ctx, base, weight_seed, seed)
    U = R.U
    exo, exo_mask, ego = inp["exo_image"], inp["exo_mask"], inp["ego_image"]
    # first pass (extract_point_x2g.py): the exo short-side square at the mask's mean x,
    # the ego view resized, 5 K-means points tracked; their clipped tracks are the prompts
    square, square_mask = U.clip_exo_mean(exo, exo_mask, NET)
    ego_resized = cv2.resize(ego, (NET, NET), interpolation=cv2.INTER_AREA)
    queries = R.sample(square_mask, 5)
    tar_pts, vis, conf = R.first_pass(square, ego_resized, queries, torch.float32)
    tar64, vis64, conf64 = R.first_pass(square, ego_resized, queries, torch.float64)
    # source crop (exo_src): R=2 zoom within the square
    src_crop, src_crop_mask = U.crop_and_resize_by_mask_safe(square, square_mask, 2)
    if src_crop_mask.sum() == 0:
        src_crop, src_crop_mask = square, square_mask
    src_pts = R.sample(src_crop_mask, 5)
    feat = R.features(src_crop, ego_resized)
    low, mask, points = R.head_loop(feat, src_pts, tar_pts, src_crop_mask, None, shared=True)
    out.update(
        note=base["note"],
        exo_image=_u8(exo), exo_mask=_u8(exo_mask), ego_image=_u8(ego), ego_mask=_u8(inp["ego_mask"]),
        source_square=_u8(square), source_square_mask=_u8(square_mask), ego_resized=_u8(ego_resized),
        first_pass_source_points=queries[0].clone(), target_points=_f32(tar_pts),
        first_pass_vis=vis.float(), first_pass_conf=conf.float(),
        first_pass_float64={"target_points": torch.as_tensor(tar64), "vis": vis64, "conf": conf64},
        source_crop_image=_u8(src_crop), source_crop_mask=_u8(src_crop_mask), source_points=src_pts[0].clone(),
        feature_sample_index=index, feature_sample=feat.flatten()[index].clone(),
        final_low_res=low, final_mask=mask, final_points=points,
    )  # fmt: skip
    return out


MAKERS = {
    "vggt_track_tiny.pt": make_track_tiny,
    "aggregator_dinov2.pt": make_aggregator_dinov2,
    "vggts_head.pt": make_head,
    "pipeline_ego2exo.pt": make_pipeline_ego2exo,
    "pipeline_exo2ego.pt": make_pipeline_exo2ego,
}
PIPELINE = ("pipeline_ego2exo.pt", "pipeline_exo2ego.pt")  # made after (and from) vggt_track_tiny.pt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="directory to write the fixture set to")
    ap.add_argument("--seed", type=int, required=True, help="seed of images, points, features and masks")
    ap.add_argument("--weight-seed", type=int, default=None, help="weight seed (default: --seed)")
    ap.add_argument("--base", default=str(REPO / "test" / "fixtures" / "reference"),
                    help="fixture set giving the architectures and shapes; its other files are copied")
    ap.add_argument("--only", nargs="*", choices=sorted(MAKERS), help="regenerate only these files")
    ap.add_argument("--no-copy", action="store_true", help="write only the seed-dependent files")
    ap.add_argument("--base-inputs", action="store_true",
                    help="pipeline fixtures: the base files' images, masks and sample indices (a check of this "
                         "script: --seed 0 --weight-seed 0 reproduces the shipped pipeline fixtures)")
    args = ap.parse_args(argv)
    _ref_paths()
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    base, out = Path(args.base), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.no_copy:
        for path in sorted(base.iterdir()):
            if path.is_file() and path.name not in MAKERS:
                shutil.copy2(path, out / path.name)
    weight_seed = args.seed if args.weight_seed is None else args.weight_seed
    names = sorted(args.only or MAKERS, key=lambda n: n in PIPELINE)  # the pipelines read the track model
    for name in names:
        ref = torch.load(str(base / name), map_location="cpu", weights_only=False)
        if name in PIPELINE:
            track = out / "vggt_track_tiny.pt" if (out / "vggt_track_tiny.pt").is_file() else base / "vggt_track_tiny.pt"
            ctx = {"track": torch.load(str(track), map_location="cpu", weights_only=False),
                   "head": torch.load(str(base / "vggts_head.pt"), map_location="cpu", weights_only=False),
                   "base_inputs": args.base_inputs}
            data = MAKERS[name](ref, weight_seed, args.seed, ctx)
        else:
            data = MAKERS[name](ref, weight_seed, args.seed)
        torch.save(data, str(out / name))
        print(f"wrote {out / name}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
