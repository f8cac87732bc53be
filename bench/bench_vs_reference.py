"""Side-by-side CPU timing of this project against the published reference code.

    REF_VGGT=/tmp/ref_vggt REF_VGGTS=/tmp/ref_vggts python bench/bench_vs_reference.py [--quick]

``REF_VGGT``: a checkout of a VGGT fork with the ``vggt`` package (e.g. daniekpo/vggt);
``REF_VGGTS``: a checkout of buaa-colalab/VGGT-S (``src/``, ``data/``). The reference is
imported from those directories only (it is not a dependency of the project); the script
exits with a message when they are missing. The reference also needs ``einops`` (not a
project dependency): ``pip install --target /tmp/ref_pydeps einops`` and
``PYTHONPATH=/tmp/ref_pydeps``. Modules the reference imports but never uses
on this path (``matplotlib`` for plots, ``pycocotools`` for dataset annotations) are
replaced by empty stand-ins when not installed.

1. Components: each piece built in both code bases, the *same* deterministic state dict
   loaded into both (the fixtures' weight rule, strict key matching), the same inputs,
   1 thread, float32, ``torch.inference_mode``; one warm-up each, then interleaved runs
   (the order alternates) and the median of the process CPU time (``--clock wall``: wall
   time; with one thread both agree on an idle machine, while on a shared one the wall
   clock also counts the neighbours' load; the wall ratio is printed too); the outputs' max abs difference is printed.
2. The whole job: one synchronised set of 3 cameras (ego 704x704 source, 2 exo 960x540
   targets) with 2 objects (``--quick``: 1). The project runs ``segment_objects`` once.
   The reference recipe runs every (object, target) pair alone, the way a user of the
   release would: first pass as in ``data/extract_point_g2x.py`` (letterbox, 50 K-means
   points, aggregator + track head over [ego, exo]), the exo crop as in
   ``src/dataloader.py`` (``exo_tar``/``ego_src``), the features pass and the head as in
   ``src/main_exp/hybrid.py``'s evaluation loop (aggregator + the track head's DPT
   features over [source crop, target crop], 5 K-means source points, one pass + 1
   refinement, recovery into the exo frame). The release calls its VGGT copy's
   ``track_head(..., feat=True)`` there, which is not public: the reference side runs only
   the DPT feature extractor in that pass (no tracker), which favours the reference.
   Backbone for the whole job: the small one of the parity fixtures (conv patch embed,
   width 64, depth 24, 4 heads, full-size track head) at 518 px, and the full-size head
   (518/37): the full VGGT-1B does not fit the time on this CPU.
   Both produce a mask per (object, target); their IoU is printed (the project encodes
   all views of a set in one pass, so its features, tracks and masks differ from the
   pairwise ones by design: SPEC "Multi-view").
3. Where the project's time goes on that set: its per-stage timings and the
   ``torch.profiler`` operator summary.

The last line is ``whole set ref/ours: R.RRx``.

4. ``--full-size``: VGGT-1B's real aggregator shape (width 1024, 24 frame + 24 global
   blocks, DINOv2-L patch embedding) with the full track head, deterministic weights
   shared by both sides (one copy in memory): FLOPs per stage and per set
   (``bench/flops.py``), the backbone pass side by side at that size (one run each), and
   the whole set it implies: the measured small-backbone set with each backbone pass
   replaced by a full-size one (the other stages do not depend on the backbone's size).
   ``--full-size-set`` runs the whole set at that size instead (about 20 minutes of CPU
   time on one core). Either prints ``full-size whole set ref/ours: R.RRx (implied ...)``
   or ``(measured)`` last.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Callable, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from vggts_ros.config import (  # noqa: E402
    AggregatorConfig,
    BackboneConfig,
    HeadConfig,
    PipelineConfig,
    tiny_backbone,
)
from vggts_ros.models.aggregator import Aggregator  # noqa: E402
from vggts_ros.models.backbone import VGGTBackbone  # noqa: E402
from vggts_ros.models.deterministic import deterministic_state_dict  # noqa: E402
from vggts_ros.models.union_head import UnionSegmentationHead  # noqa: E402
from vggts_ros.pipeline import VGGTSegmentor  # noqa: E402
from vggts_ros.types import TargetView  # noqa: E402

SIZE = 518


# =======================================================================================
# The reference, imported from the given directories
# =======================================================================================
def reference_dirs(args) -> Tuple[Path, Path]:
    vggt_dir = args.ref_vggt or os.environ.get("REF_VGGT")
    vggts_dir = args.ref_vggts or os.environ.get("REF_VGGTS")
    problems = []
    if not vggt_dir or not (Path(vggt_dir) / "vggt" / "models" / "aggregator.py").is_file():
        problems.append(f"REF_VGGT={vggt_dir!r} is not a VGGT checkout (needs vggt/models/aggregator.py)")
    if not vggts_dir or not (Path(vggts_dir) / "src" / "model" / "predictor.py").is_file():
        problems.append(f"REF_VGGTS={vggts_dir!r} is not a VGGT-S checkout (needs src/model/predictor.py)")
    if problems:
        sys.exit(
            "bench_vs_reference needs the reference code as plain directories:\n  "
            + "\n  ".join(problems)
            + "\nGet them e.g. with\n"
            "  git -C <mirror of daniekpo/vggt> archive HEAD vggt | tar -x -C /tmp/ref_vggt\n"
            "  git -C <mirror of buaa-colalab/VGGT-S> archive HEAD | tar -x -C /tmp/ref_vggts\n"
            "and run  REF_VGGT=/tmp/ref_vggt REF_VGGTS=/tmp/ref_vggts python bench/bench_vs_reference.py"
        )
    return Path(vggt_dir), Path(vggts_dir)


def import_reference(vggt_dir: Path, vggts_dir: Path) -> types.SimpleNamespace:
    stubbed = []
    for name in ("matplotlib", "matplotlib.pyplot", "pycocotools", "pycocotools.mask"):
        try:
            importlib.import_module(name)
        except ImportError:
            sys.modules[name] = types.ModuleType(name)
            stubbed.append(name)
    missing = [m for m in ("einops", "sklearn", "cv2") if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(f"the reference code needs {', '.join(missing)}, which this environment lacks; install them "
                 f"outside the project's environment, e.g. pip install --target /tmp/ref_pydeps {' '.join(missing)} "
                 "and run with PYTHONPATH=/tmp/ref_pydeps")
    for path in (vggts_dir / "data", vggts_dir / "src", vggt_dir):
        sys.path.insert(0, str(path))
    from vggt.heads.track_head import TrackHead as RefTrackHead
    from vggt.models.aggregator import Aggregator as RefAggregator

    import utils as ref_utils  # VGGT-S src/utils.py
    from model.predictor import Predictor as RefPredictor

    pad_frame = None
    try:
        import extract_point_g2x  # VGGT-S data/: the first pass's letterbox

        pad_frame = extract_point_g2x.G2xCropImage.pad_frame
    except Exception as exc:  # noqa: BLE001 - it also needs VGGT's full model module
        print(f"note: data/extract_point_g2x.py not importable ({exc}); its letterbox is unavailable")
    return types.SimpleNamespace(Aggregator=RefAggregator, TrackHead=RefTrackHead, Predictor=RefPredictor,
                                 utils=ref_utils, pad_frame=pad_frame, stubbed=stubbed)


def load_same(ours: torch.nn.Module, ref: torch.nn.Module, seed: int) -> None:
    """Fill ``ours`` with the deterministic weights and load the same tensors into ``ref``."""
    state = deterministic_state_dict(ours, seed)
    ours.load_state_dict(state, strict=True)
    ref.load_state_dict(state, strict=True)
    ours.eval()
    ref.eval()


def ref_aggregator(R, cfg: AggregatorConfig):
    agg = R.Aggregator(img_size=cfg.img_size, patch_size=cfg.patch_size, embed_dim=cfg.embed_dim, depth=cfg.depth,
                       num_heads=cfg.num_heads, patch_embed=cfg.patch_embed)
    if cfg.patch_embed_depth is not None:  # truncated DINOv2, as the project's config says
        agg.patch_embed.blocks = agg.patch_embed.blocks[: cfg.patch_embed_depth]
    return agg


def ref_track_head(R, cfg: BackboneConfig):
    th = cfg.track_head
    return R.TrackHead(dim_in=2 * cfg.aggregator.embed_dim, patch_size=cfg.aggregator.patch_size,
                       features=th.features, iters=th.iters, predict_conf=th.predict_conf, stride=th.stride,
                       corr_levels=th.corr_levels, corr_radius=th.corr_radius, hidden_size=th.hidden_size)


def paired_backbones(R, cfg: BackboneConfig, seed: int = 0):
    """(ours, reference aggregator, reference track head) holding *the same* deterministic
    weight tensors (``load_state_dict(assign=True)``, strict): one copy in memory, which
    lets VGGT-1B's size (1.2 B parameters, 4.6 GB in float32) run both sides. Ours is
    built on the meta device; the reference's DINOv2 cannot be (its constructor reads
    tensor values), so it is built and initialised on the CPU, and its own tensors are
    released when the shared ones are assigned."""
    with torch.device("meta"):
        ours = VGGTBackbone(cfg)
    ref_agg, ref_th = ref_aggregator(R, cfg.aggregator), ref_track_head(R, cfg)
    state = deterministic_state_dict(ours, seed)
    ours.load_state_dict(state, strict=True, assign=True)
    ref_agg.load_state_dict({k[len("aggregator."):]: v for k, v in state.items() if k.startswith("aggregator.")},
                            strict=True, assign=True)
    ref_th.load_state_dict({k[len("track_head."):]: v for k, v in state.items() if k.startswith("track_head.")},
                           strict=True, assign=True)
    # the reference's two non-persistent buffers (ImageNet normalisation), not in a state dict
    from vggts_ros.models.aggregator import IMAGENET_MEAN, IMAGENET_STD

    for name, value in (("_resnet_mean", IMAGENET_MEAN), ("_resnet_std", IMAGENET_STD)):
        if hasattr(ref_agg, name):
            setattr(ref_agg, name, torch.tensor(value, dtype=torch.float32).view(1, 1, 3, 1, 1))
    left = [n for m in (ours, ref_agg, ref_th) for n, t in list(m.named_parameters()) + list(m.named_buffers())
            if t.is_meta]
    if left:
        raise RuntimeError(f"tensors left on the meta device: {left[:5]}")
    return ours.eval(), ref_agg.eval(), ref_th.eval()


# =======================================================================================
# Timing
# =======================================================================================
CLOCK = {"name": "cpu"}  # set by --clock
WALL: dict = {}  # the other clock's medians of the last interleaved() call


def _clocks():
    return time.perf_counter(), time.process_time()


def interleaved(ref_fn: Callable, our_fn: Callable, repeats: int, warmup: bool = True):
    """(median ref s, median ours s, last ref output, last our output); order alternates.
    Seconds of process CPU time (``--clock cpu``, default) or of the wall clock; the wall
    medians are also left in ``WALL``."""
    out_r = out_o = None
    if warmup:
        out_r, out_o = ref_fn(), our_fn()
    times = {"r": ([], []), "o": ([], [])}  # (wall, cpu)
    for i in range(repeats):
        order = [(ref_fn, "r"), (our_fn, "o")]
        if i % 2:
            order.reverse()
        for fn, who in order:
            w0, c0 = _clocks()
            out = fn()
            w1, c1 = _clocks()
            times[who][0].append(w1 - w0)
            times[who][1].append(c1 - c0)
            if who == "r":
                out_r = out
            else:
                out_o = out
    med = {k: (statistics.median(v[0]), statistics.median(v[1])) for k, v in times.items()}
    WALL.update(ref=med["r"][0], ours=med["o"][0])
    pick = 1 if CLOCK["name"] == "cpu" else 0
    return med["r"][pick], med["o"][pick], out_r, out_o


def max_diff(a, b) -> float:
    return float((torch.as_tensor(a).double() - torch.as_tensor(b).double()).abs().max())


def timed(fn: Callable, repeats: int, warmup: bool = True):
    """(median seconds of ``CLOCK``, last output) of ``fn`` alone."""
    out = fn() if warmup else None
    times = []
    for _ in range(repeats):
        w0, c0 = _clocks()
        out = fn()
        w1, c1 = _clocks()
        times.append(c1 - c0 if CLOCK["name"] == "cpu" else w1 - w0)
    return statistics.median(times), out


# =======================================================================================
# Backbone passes (aggregator + DPT track features), any size
# =======================================================================================
def backbone_passes(R, cfg: BackboneConfig, repeats: int, warmup: bool = True) -> dict:
    """One backbone pass (aggregator + the track head's DPT features) at 518 px: the
    reference's on 2 views (the only way its recipe calls it) against ours on 2 views,
    interleaved, and ours on 3 views (the project's passes over a 3-camera set).
    Returns seconds ``ref2``, ``ours2``, ``ours3`` and the 2-view features' ``diff``/``scale``."""
    ours, ref_agg, ref_th = paired_backbones(R, cfg, 0)
    gen = torch.Generator().manual_seed(0)
    images2 = torch.rand(1, 2, 3, SIZE, SIZE, generator=gen)
    images3 = torch.rand(1, 3, 3, SIZE, SIZE, generator=gen)

    def ref_pass():
        tokens, start = ref_agg(images2)
        return ref_th.feature_extractor(tokens, images2, start)

    with torch.inference_mode():
        tr, to, f_r, f_o = interleaved(ref_pass, lambda: ours(images2).features, repeats, warmup)
        t3, _ = timed(lambda: ours(images3).features, repeats, warmup)
    out = dict(ref2=tr, ours2=to, ours3=t3, diff=max_diff(f_r, f_o), scale=float(f_r.abs().max()),
               wall2=WALL["ref"] / WALL["ours"])
    del ours, ref_agg, ref_th
    return out


def full_size_flops(objects: int) -> dict:
    """FLOPs per stage of one set at VGGT-1B's size (``bench/flops.py``)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from flops import set_flops, stage_flops

    f = stage_flops("vggt-1b", views=3, targets=2)
    return {"stages": f, "set": set_flops(f, cameras=3, objects=objects, refinements=1)}


# =======================================================================================
# 1. Components
# =======================================================================================
def components(R, repeats: int, quick: bool) -> List[dict]:
    rows = []
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(1, 2, 3, SIZE, SIZE, generator=gen)

    def aggregator_row(name: str, cfg: AggregatorConfig):
        ours = Aggregator(cfg)
        ref = ref_aggregator(R, cfg)
        load_same(ours, ref, 0)
        tr, to, out_r, out_o = interleaved(lambda: ref(images), lambda: ours(images), repeats)
        rows.append(dict(name=name, ref=tr, ours=to,
                     wall=WALL['ref'] / WALL['ours'], diff=max_diff(out_r[0][-1], out_o[0][-1])))
        return ours, out_o

    if not quick:
        aggregator_row("aggregator, width 1024, 2 blocks (+2 DINOv2-L blocks), 2x518",
                       AggregatorConfig(img_size=SIZE, embed_dim=1024, depth=2, num_heads=16,
                                        patch_embed="dinov2_vitl14_reg", patch_embed_depth=2))
        print(f"  done: {rows[-1]['name']}", flush=True)
    cfg = tiny_backbone()
    _, (tokens, start) = aggregator_row("aggregator conv w64 d24, 2x518", cfg.aggregator)
    print(f"  done: {rows[-1]['name']}", flush=True)

    ours_bb = VGGTBackbone(cfg)
    ref_th = ref_track_head(R, cfg)
    state = {k[len("track_head."):]: v for k, v in deterministic_state_dict(ours_bb, 0).items()
             if k.startswith("track_head.")}
    ours_th = ours_bb.track_head
    ours_th.load_state_dict(state, strict=True)
    ref_th.load_state_dict(state, strict=True)
    ours_th.eval()
    ref_th.eval()
    tr, to, f_r, f_o = interleaved(lambda: ref_th.feature_extractor(tokens, images, start),
                                   lambda: ours_th.features(tokens, images, start), repeats)
    rows.append(dict(name="DPT track features 2x518", ref=tr, ours=to,
                     wall=WALL['ref'] / WALL['ours'], diff=max_diff(f_r, f_o)))
    print(f"  done: {rows[-1]['name']}", flush=True)

    query = torch.rand(1, 50, 2, generator=gen) * (SIZE - 1)
    tr, to, t_r, t_o = interleaved(lambda: ref_th.tracker(query_points=query, fmaps=f_o, iters=4),
                                   lambda: ours_th.track(f_o, query, 4), repeats)
    rows.append(dict(name="tracker, 50 points, 4 iterations", ref=tr, ours=to,
                     wall=WALL['ref'] / WALL['ours'], diff=max_diff(t_r[0][-1], t_o[0][-1])))
    print(f"  done: {rows[-1]['name']}", flush=True)

    ours_h = UnionSegmentationHead(HeadConfig(img_size=SIZE, sa_tokens=37))
    ref_h = R.Predictor(img_size=SIZE, sa_tokens=37)
    load_same(ours_h, ref_h, 1)
    g = SIZE // 2
    feat = torch.randn(2, 2, 128, g, g, generator=gen)
    src = torch.rand(2, 5, 2, generator=gen) * (SIZE - 1)
    tar = torch.rand(2, 5, 2, generator=gen) * (SIZE - 1)
    mask_np = np.zeros((2, SIZE, SIZE), np.uint8)
    mask_np[0, 150:330, 200:300] = 1
    mask_np[1, 60:460, 100:200] = 1
    mask_t = torch.from_numpy(mask_np).float()

    def ref_head():
        spf = R.utils.sample_feat_at_points(feat[:, 0], src, SIZE, SIZE)  # one tensor for both passes
        low = None
        for _ in range(2):
            full, low = ref_h(feat_map_b=feat, src_points_b=src, tar_points_b=tar, src_mask_b=mask_np,
                              tar_mask_b=low, src_points_feat_b=spf, ret_logits=True)
        return full

    def our_head():
        ctx = ours_h.encode(feat, src, tar, mask_t)
        _, low = ours_h.decode(ctx)
        full, _ = ours_h.decode(ours_h.add_point_feature_identity(ctx), low)
        return full

    tr, to, h_r, h_o = interleaved(ref_head, our_head, repeats)
    rows.append(dict(name="head at 518, 2 targets, pass + 1 refinement", ref=tr, ours=to,
                     wall=WALL['ref'] / WALL['ours'], diff=max_diff(h_r, h_o)))
    print(f"  done: {rows[-1]['name']}", flush=True)
    return rows


# =======================================================================================
# 2. The whole job
# =======================================================================================
def scene(h: int, w: int, seed: int) -> np.ndarray:
    """Blocky random RGB frame (textured, so K-means and crops behave as on images)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.kron(base, np.ones((16, 16, 1), np.uint8))[:h, :w])


def object_masks(n: int) -> List[np.ndarray]:
    yy, xx = np.mgrid[:704, :704]
    out = []
    for cx, cy, rx, ry in [(250, 300, 70, 110), (470, 420, 120, 60), (350, 180, 50, 50), (520, 230, 80, 40)][:n]:
        out.append((((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1).astype(np.uint8))
    return out


class ReferenceRecipe:
    """The release's ego->exo inference for one (object, target) pair at a time."""

    def __init__(self, R, agg, track_head, predictor):
        self.R, self.agg, self.th, self.pred = R, agg, track_head, predictor

    def letterbox(self, frame: np.ndarray, is_mask: bool) -> np.ndarray:
        if self.R.pad_frame is not None:
            return self.R.pad_frame(None, frame, (SIZE, SIZE), is_mask)
        from vggts_ros import crops  # parity-tested equal to the reference letterbox

        return crops.letterbox(frame, SIZE, is_mask=is_mask)[0]

    @staticmethod
    def pair_tensor(a: np.ndarray, b: np.ndarray) -> torch.Tensor:
        ta = torch.from_numpy(a[None] / 255.0).permute(0, 3, 1, 2).float()
        tb = torch.from_numpy(b[None] / 255.0).permute(0, 3, 1, 2).float()
        return torch.stack([ta, tb], dim=1).contiguous()

    def run_pair(self, ego: np.ndarray, ego_mask: np.ndarray, exo: np.ndarray) -> np.ndarray:
        import cv2

        U = self.R.utils
        # first pass (data/extract_point_g2x.py): ego square resized, exo letterboxed
        src_img = self.letterbox(ego, False)
        src_mask = self.letterbox(ego_mask, True)
        tar_img = self.letterbox(exo, False)
        pts = torch.as_tensor(U.mask_sampling(masks_b=src_mask[None, None], n_samples=50)).squeeze(1).float()
        pair = self.pair_tensor(src_img, tar_img)
        tokens, start = self.agg(pair)
        tracks, vis, conf = self.th(tokens, images=pair, patch_start_idx=start, query_points=pts)
        first = np.clip(tracks[-1][:, 1].clone().cpu().numpy(), 0, SIZE - 1)[0]
        proj = first * 960 / SIZE  # the release's constant, right for 960x540 exo frames
        # target crop (src/dataloader.py exo_tar)
        h, w = exo.shape[:2]
        proj[:, 0] = np.clip(proj[:, 0], 0, w - 1)
        proj[:, 1] = np.clip(proj[:, 1], 0, h - 1)
        proj, _ = U.remove_outliers_median(proj, K=10)
        box = max(proj[:, 1].max() - proj[:, 1].min(), proj[:, 0].max() - proj[:, 0].min())
        crop_size = U.cal_crop_size_3x(box)
        tar_crop, _, crop_pts, _, meta = U.clip_exo_box_center_wp(proj, exo, np.zeros((h, w), np.uint8), SIZE, SIZE,
                                                                 crop_size)
        _, tar_pts = U.cluster_points(crop_pts, K=5)
        # source crop (ego_src): resized view, crop R=2 around the mask
        img_s = cv2.resize(ego, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
        mask_s = cv2.resize(ego_mask, (SIZE, SIZE), interpolation=cv2.INTER_NEAREST)
        src_crop, src_crop_mask = U.crop_and_resize_by_mask_safe(img_s, mask_s, 2)
        if src_crop_mask.sum() == 0:
            src_crop, src_crop_mask = img_s, mask_s
        # features pass + head (src/main_exp/hybrid.py vggt_feat / val loop)
        src_pts = torch.as_tensor(U.mask_sampling(masks_b=src_crop_mask[None, None], n_samples=5)).float().squeeze(1)
        pair = self.pair_tensor(src_crop, tar_crop)
        tokens, start = self.agg(pair)
        feat = self.th.feature_extractor(tokens, pair, start).float()
        spf = U.sample_feat_at_points(feat[:, 0], src_pts, SIZE, SIZE).float()
        tar_t = torch.as_tensor(np.asarray(tar_pts)[None]).float()
        low = None
        for _ in range(2):
            _, low, rec, _ = self.pred(feat_map_b=feat, src_points_b=src_pts, tar_points_b=tar_t,
                                       src_mask_b=src_crop_mask[None], src_points_feat_b=spf, tar_mask_b=low,
                                       ret_logits=False, meta=[meta], tar_square=704)
            low = low.float()
        return rec[0].cpu().numpy()

    def run_set(self, ego, masks, exos) -> List[List[np.ndarray]]:
        return [[self.run_pair(ego, m, x) for x in exos] for m in masks]


def whole_set(R, objects: int, repeats: int, profile: bool, cfg: BackboneConfig = None):
    """The whole job with the backbone ``cfg`` (default: the small one of the parity fixtures)."""
    cfg = cfg or tiny_backbone()
    backbone, ref_agg, ref_th = paired_backbones(R, cfg, 0)
    head = UnionSegmentationHead(HeadConfig(img_size=SIZE, sa_tokens=37))
    ref_pred = R.Predictor(img_size=SIZE, sa_tokens=37)
    load_same(head, ref_pred, 1)
    seg = VGGTSegmentor(backbone, head, PipelineConfig(), device="cpu")
    recipe = ReferenceRecipe(R, ref_agg, ref_th, ref_pred)

    ego = scene(704, 704, 0)
    exos = [scene(540, 960, 1), scene(540, 960, 2)]
    masks = object_masks(objects)
    targets = [TargetView(x, role="exo", name=f"exo{i + 1}") for i, x in enumerate(exos)]

    def ours():
        return seg.segment_objects(ego, masks, targets)

    def ref():
        with torch.inference_mode():
            return recipe.run_set(ego, masks, exos)

    tr, to, out_r, out_o = interleaved(ref, ours, repeats, warmup=repeats > 1)
    ious, fg = [], []
    for o in range(objects):
        for t in range(len(exos)):
            a, b = out_o[o][t].mask.astype(bool), out_r[o][t].astype(bool)
            union = (a | b).sum()
            ious.append(float((a & b).sum() / union) if union else 1.0)
            fg.append((float(a.mean()), float(b.mean())))
    # shared stages (prompts, first pass) are the same in every object's timings; the
    # others are that object's own: sum them over the objects
    stages = {}
    for k, v in out_o[0][0].timings.items():
        per_object = k not in ("prompts", "first_pass", "features_batch", "total")
        stages[k] = sum(out_o[o][0].timings.get(k, 0.0) for o in range(objects)) if per_object else v
    prof = None
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU]) as p:
            ours()
        prof = p.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=40)
    return dict(ref=tr, ours=to, wall=(WALL['ref'], WALL['ours']),
                ious=ious, fg=fg, stages=stages, profile=prof, objects=objects,
                ref_pairs=objects * len(exos))


# =======================================================================================
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref-vggt", default=None, help="overrides $REF_VGGT")
    ap.add_argument("--ref-vggts", default=None, help="overrides $REF_VGGTS")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per component (after a warm-up)")
    ap.add_argument("--set-repeats", type=int, default=2, help="timed runs of the whole set (after a warm-up)")
    ap.add_argument("--objects", type=int, default=2)
    ap.add_argument("--quick", action="store_true",
                    help="1 run per component, no width-1024 aggregator, whole set with 1 object, 1 run")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                    help="what the ratios use: process CPU time (default; with 1 thread it equals the wall time "
                         "on an idle machine and does not count the neighbours' load on a shared one) or wall time")
    ap.add_argument("--skip-components", action="store_true")
    ap.add_argument("--full-size", action="store_true",
                    help="also time the backbone pass at VGGT-1B's size (width 1024, 24+24 blocks, DINOv2-L patch "
                         "embedding) on both sides and print the whole set it implies")
    ap.add_argument("--full-size-set", action="store_true",
                    help="also run the whole set with the VGGT-1B-size backbone on both sides, once each "
                         "(about 20 min of CPU time on one core) and print the measured ratio")
    args = ap.parse_args(argv)
    CLOCK["name"] = args.clock
    vggt_dir, vggts_dir = reference_dirs(args)
    if args.quick:
        args.repeats, args.set_repeats, args.objects = 1, 1, 1
    torch.set_num_threads(1)
    torch.manual_seed(0)
    R = import_reference(vggt_dir, vggts_dir)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread, float32, CPU; reference from "
          f"{vggt_dir} and {vggts_dir}" + (f" (stand-ins for {', '.join(R.stubbed)})" if R.stubbed else ""))
    from sklearn.cluster import KMeans  # warm the import before any timing

    KMeans(n_clusters=2, n_init=1, random_state=0).fit(np.random.default_rng(0).random((10, 2)))

    with torch.inference_mode():
        if not args.skip_components:
            print(f"\nComponents (median of {args.repeats} interleaved runs after a warm-up, seconds of "
                  f"{'process CPU time' if args.clock == 'cpu' else 'wall time'})", flush=True)
            rows = components(R, args.repeats, args.quick)
            header = (f"| {'component':<64} | {'reference':>9} | {'project':>9} | {'ratio':>6} | {'wall ratio':>10} "
                      f"| {'max diff':>9} |")
            print(header)
            print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
            for r in rows:
                print(f"| {r['name']:<64} | {r['ref']:8.2f}s | {r['ours']:8.2f}s | {r['ref'] / r['ours']:5.2f}x "
                      f"| {r['wall']:9.2f}x | {r['diff']:9.2g} |")
        print(f"\nWhole set: ego 704x704 source, 2 exo 960x540 targets, {args.objects} object(s); backbone "
              f"conv w64 d24 + full track head at 518, head 518/37, 1 refinement; median of {args.set_repeats} "
              "interleaved run(s)" + (" after a warm-up" if args.set_repeats > 1 else ""), flush=True)
    res = whole_set(R, args.objects, args.set_repeats, not args.no_profile)
    print(f"  reference recipe, {res['ref_pairs']} pairs one by one: {res['ref']:7.2f} s {CLOCK['name']} "
          f"({res['wall'][0]:.2f} s wall)")
    print(f"  project segment_objects, one call:            {res['ours']:7.2f} s {CLOCK['name']} "
          f"({res['wall'][1]:.2f} s wall)")
    print(f"  wall-clock ratio: {res['wall'][0] / res['wall'][1]:.2f}x")
    print("  mask IoU project vs reference per (object, target): " + ", ".join(f"{x:.3f}" for x in res["ious"]))
    print("  foreground fraction project/reference per (object, target): "
          + ", ".join(f"{a:.3f}/{b:.3f}" for a, b in res["fg"]) + "  (random weights: the masks carry no meaning)")
    st = res["stages"]
    print("\nWhere the project's time goes (stage timings of its last run, all objects, seconds and share):")
    total = st.get("total") or sum(st.values())
    print("  " + "  ".join(f"{k} {v:.2f} ({100 * v / total:.0f}%)" for k, v in st.items() if k != "total")
          + f"  total {total:.2f}")
    if res["profile"]:
        print("\ntorch.profiler, one project set, top operators by self CPU time:")
        print(res["profile"])
    print(f"whole set ref/ours: {res['ref'] / res['ours']:.2f}x", flush=True)
    if args.full_size or args.full_size_set:
        report_full_size(R, args, res)
    return 0


def report_full_size(R, args, small_set: dict) -> None:
    """The whole set at VGGT-1B's size: FLOPs per stage, the backbone pass side by side,
    the ratio implied by swapping the small backbone's passes for full-size ones in the
    measured small-backbone set, and (``--full-size-set``) the measured full-size set."""
    from vggts_ros.config import vggt_1b_backbone

    objects, pairs = small_set["objects"], small_set["ref_pairs"]
    fl = full_size_flops(objects)
    st, fs = fl["stages"], fl["set"]
    print(f"\nFull size (VGGT-1B aggregator: width 1024, 24 frame + 24 global blocks, DINOv2-L patch embedding; "
          f"track head; head 518/37), FLOPs per call (FlopCounterMode, TFLOP):")
    print("  " + "  ".join(f"{k} {v / 1e12:.3f}" for k, v in st.items()))
    print(f"  one set, {objects} object(s), 3 cameras, 1 refinement: reference "
          + ", ".join(f"{k[len('reference_'):]} {v / 1e12:.2f}" for k, v in fs.items() if k.startswith("reference_"))
          + "; project " + ", ".join(f"{k[len('ours_'):]} {v / 1e12:.2f}" for k, v in fs.items() if k.startswith("ours_"))
          + f"; FLOP ratio {fs['reference_total'] / fs['ours_total']:.2f}x", flush=True)
    if args.full_size:
        reps = 1 if args.quick else args.repeats
        small = backbone_passes(R, tiny_backbone(), reps)
        print(f"\nBackbone pass (aggregator + DPT track features) at 518 px, {CLOCK['name']} seconds:")
        print(f"  small (conv w64 d24): reference 2 views {small['ref2']:.2f}, project 2 views {small['ours2']:.2f}, "
              f"3 views {small['ours3']:.2f} (max diff {small['diff']:.2g})", flush=True)
        full = backbone_passes(R, vggt_1b_backbone(), 1, warmup=False)
        print(f"  VGGT-1B size, one run each: reference 2 views {full['ref2']:.1f}, project 2 views {full['ours2']:.1f} "
              f"(ratio {full['ref2'] / full['ours2']:.2f}x, wall {full['wall2']:.2f}x), 3 views {full['ours3']:.1f}; "
              f"features max diff {full['diff']:.2g} of max |features| {full['scale']:.3g}", flush=True)
        n_ref, n_ours = 2 * pairs, 1 + objects
        ref_full = small_set["ref"] + n_ref * (full["ref2"] - small["ref2"])
        ours_full = small_set["ours"] + n_ours * (full["ours3"] - small["ours3"])
        print("  implied full-size set = measured small-backbone set + passes x (full pass - small pass):")
        print(f"    reference: {small_set['ref']:.1f} + {n_ref} x ({full['ref2']:.1f} - {small['ref2']:.2f}) = "
              f"{ref_full:.1f} s  ({pairs} pairs x (first pass + features pass), 2 views each)")
        print(f"    project:   {small_set['ours']:.1f} + {n_ours} x ({full['ours3']:.1f} - {small['ours3']:.2f}) = "
              f"{ours_full:.1f} s  (one shared first pass + one features pass per object, 3 views each)")
        print(f"full-size whole set ref/ours: {ref_full / ours_full:.2f}x (implied from the full-size backbone passes "
              f"and the measured small-backbone set)", flush=True)
    if args.full_size_set:
        res = whole_set(R, objects, 1, False, cfg=vggt_1b_backbone())
        print(f"\nWhole set with the VGGT-1B-size backbone, one interleaved run each: reference {res['ref']:.1f} s, "
              f"project {res['ours']:.1f} s {CLOCK['name']} (wall {res['wall'][0]:.1f} / {res['wall'][1]:.1f} s); "
              "mask IoU per (object, target): " + ", ".join(f"{x:.3f}" for x in res["ious"]))
        st = res["stages"]
        print("  project stages: " + "  ".join(f"{k} {v:.1f}" for k, v in st.items()))
        print(f"full-size whole set ref/ours: {res['ref'] / res['ours']:.2f}x (measured)", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
