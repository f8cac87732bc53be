"""Behaviour of the VGGT-S pipeline with the ``test-tiny`` preset (126 px, deterministic weights).

The masks of test-tiny are meaningless; these tests pin down the contract: shapes and
ranges in every target frame, multi-object sharing, feature reuse by refinement, input
validation, checkpoint loading and the optional recipe switches.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vggts_ros.backends import create_segmentor
from vggts_ros.checkpoint import save_state_dict
from vggts_ros.config import ModelConfig, PipelineConfig
from vggts_ros.models.union_head import sample_point_features
from vggts_ros.pipeline import VGGTSegmentor
from vggts_ros.types import ROLES, SegmentationResult, TargetView


def noise(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.kron(base, np.ones((8, 8, 1), np.uint8))[:h, :w])


def box_mask(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 255
    return m


SOURCE = noise(120, 160, 0)
MASK_A = box_mask(120, 160, 30, 70, 40, 90)
MASK_B = box_mask(120, 160, 60, 110, 100, 150) > 0  # bool masks are accepted too


def assert_result_contract(r: SegmentationResult, hw, n_points: int, source_hw) -> None:
    h, w = hw
    assert r.mask.shape == (h, w) and r.mask.dtype == np.bool_
    assert r.logits.shape == (h, w) and r.logits.dtype == np.float32 and np.isfinite(r.logits).all()
    assert np.array_equal(r.mask, r.logits > 0)
    for pts, (ph, pw) in ((r.target_points, hw), (r.source_points, source_hw)):
        assert pts.shape == (n_points, 2) and pts.dtype == np.float32
        assert (pts >= -1e-3).all() and (pts[:, 0] <= pw - 1 + 1e-3).all() and (pts[:, 1] <= ph - 1 + 1e-3).all()
    for arr in (r.visibility, r.confidence):
        assert arr.shape == (n_points,) and arr.dtype == np.float32 and ((arr >= 0) & (arr <= 1)).all()
    assert 0.0 <= r.score <= 1.0
    assert (r.score == 0.0) == (not r.mask.any())
    assert {"first_pass", "features", "head", "recover", "total"} <= set(r.timings)
    assert all(v >= 0 for v in r.timings.values())


class CallCounter:
    """Counts forward calls of modules with forward hooks (the computation is untouched)."""

    def __init__(self, **modules):
        self.counts = {name: 0 for name in modules}
        self.handles = [m.register_forward_hook(self._hook(name)) for name, m in modules.items()]

    def _hook(self, name):
        def hook(*_):
            self.counts[name] += 1

        return hook

    def close(self):
        for h in self.handles:
            h.remove()


@pytest.fixture(scope="module")
def seg() -> VGGTSegmentor:
    return VGGTSegmentor.deterministic("test-tiny", PipelineConfig(), device="cpu")


@pytest.fixture(scope="module")
def exo_target():
    return TargetView(noise(150, 200, 1), role="exo", name="exo1")


@pytest.fixture(scope="module")
def ref_exo(seg, exo_target) -> SegmentationResult:
    """Object A in the exo target with the default recipe (shared by several tests)."""
    return seg.segment(SOURCE, MASK_A, [exo_target])[0]


# ------------------------------------------------------------------ contract
def test_preset_sets_the_network_size(seg):
    assert seg.name == "vggts"
    assert seg.image_size == 126 == seg.head.cfg.img_size == seg.cfg.image_size
    assert seg.cfg.refine_iterations == 1


def test_shapes_for_every_role_and_size(seg):
    targets = [
        TargetView(noise(100, 100, 2), role="ego", name="ego_square"),
        TargetView(noise(96, 128, 3), role="ego", name="ego_wide"),
        TargetView(noise(150, 200, 4), role="exo", name="exo"),
        TargetView(noise(140, 140, 5), role="aerial", name="aerial"),
        TargetView(noise(90, 170, 6), role="ground", name="ground"),
    ]
    assert {t.role for t in targets} == set(ROLES)
    results = seg.segment(SOURCE, MASK_A, targets)
    assert len(results) == len(targets)
    for view, r in zip(targets, results):
        assert_result_contract(r, view.image.shape[:2], seg.cfg.prompt_points, SOURCE.shape[:2])
    # Cropped roles paint -32 outside their square crop; an exo frame wider than tall
    # always has columns outside the crop.
    exo = results[2]
    assert (exo.logits == -32.0).all(axis=0).any()


def test_segment_objects_matches_segment_and_shares_the_first_pass(seg, exo_target):
    targets = [exo_target, TargetView(noise(100, 100, 7), role="ego")]
    square = SOURCE[:, 20:140]  # a square source: one source view for every object
    masks = [MASK_A[:, 20:140], MASK_B[:, 20:140]]
    counter = CallCounter(backbone=seg.backbone)
    try:
        joint = seg.segment_objects(square, masks, targets)
        assert counter.counts["backbone"] == 1 + 1  # shared first pass + both objects' features passes batched
        single = [seg.segment(square, m, targets) for m in masks]
        assert counter.counts["backbone"] == 2 + 2 * 2
    finally:
        counter.close()
    assert len(joint) == 2 and all(len(per) == len(targets) for per in joint)
    for per_joint, per_single in zip(joint, single):
        for a, b in zip(per_joint, per_single):
            assert np.array_equal(a.mask, b.mask)
            np.testing.assert_allclose(a.logits, b.logits, rtol=0, atol=1e-5)
            np.testing.assert_allclose(a.target_points, b.target_points, rtol=0, atol=1e-4)
            np.testing.assert_allclose(a.source_points, b.source_points, rtol=0, atol=1e-4)
    # Different objects give different prompts.
    assert not np.allclose(joint[0][0].source_points, joint[1][0].source_points)


def test_non_square_source_views_are_shared_per_square(seg, exo_target):
    """A non-square source is cut to the short-side square around each mask's mean: objects
    whose squares coincide share one first pass, the others get their own."""
    mask_c = box_mask(120, 160, 35, 60, 42, 87)  # mean x 64, as MASK_A: the same square
    counter = CallCounter(backbone=seg.backbone)
    try:
        joint = seg.segment_objects(SOURCE, [MASK_A, MASK_B, mask_c], [exo_target])
    finally:
        counter.close()
    assert counter.counts["backbone"] == 2 + 1  # two distinct squares + the batched features passes
    single = seg.segment(SOURCE, MASK_B, [exo_target])[0]
    np.testing.assert_allclose(joint[1][0].logits, single.logits, rtol=0, atol=1e-5)


def test_batched_features_pass_equals_one_pass_per_object(seg, exo_target):
    """``batch_features`` (default): the features passes of all objects in one backbone
    call (batches of ``max_feature_batch``), the same outputs as one call per object up to
    float32 rounding, for both feature groupings."""
    targets = [exo_target, TargetView(noise(100, 100, 7), role="ego")]
    masks = [MASK_A, MASK_B, box_mask(120, 160, 35, 60, 42, 87)]  # two distinct source squares
    runs, calls = {}, {}
    for name, kw in {"batched": {}, "batches of 2": dict(max_feature_batch=2), "one by one": dict(batch_features=False),
                     "pairs batched": dict(multi_view_features=False),
                     "pairs one by one": dict(multi_view_features=False, batch_features=False)}.items():
        s = VGGTSegmentor(seg.backbone, seg.head, PipelineConfig(), **kw)
        counter = CallCounter(backbone=seg.backbone)
        try:
            runs[name] = s.segment_objects(SOURCE, masks, targets)
        finally:
            counter.close()
        calls[name] = counter.counts["backbone"]
    # first passes: 2 (two source squares); features: 3 objects x 1 group, or 3 x 2 pairs
    assert calls == {"batched": 2 + 1, "batches of 2": 2 + 2, "one by one": 2 + 3, "pairs batched": 2 + 1,
                     "pairs one by one": 2 + 6}
    for name, plain in (("batched", "one by one"), ("batches of 2", "one by one"), ("pairs batched", "pairs one by one")):
        for per_a, per_b in zip(runs[name], runs[plain]):
            for a, b in zip(per_a, per_b):
                scale = max(1.0, float(np.abs(b.logits).max()))
                assert np.abs(a.logits - b.logits).max() <= 1e-5 * scale, name
                assert np.array_equal(a.target_points, b.target_points)  # from the first pass
                assert abs(a.score - b.score) <= 1e-5
                assert "features_batch" in a.timings and "features_batch" not in b.timings
    with pytest.raises(ValueError, match="max_feature_batch"):
        VGGTSegmentor(seg.backbone, seg.head, PipelineConfig(), max_feature_batch=0)


def test_refinement_reuses_the_backbone_features(seg, exo_target):
    counts = {}
    outputs = {}
    for refine in (0, 2):
        s = VGGTSegmentor(seg.backbone, seg.head, PipelineConfig(refine_iterations=refine))
        counter = CallCounter(backbone=seg.backbone, aggregator=seg.backbone.aggregator, decoder=seg.head.mask_decoder)
        try:
            outputs[refine] = s.segment(SOURCE, MASK_A, [exo_target])[0]
        finally:
            counter.close()
        counts[refine] = counter.counts
    assert counts[0]["backbone"] == counts[2]["backbone"] == 2  # first pass + features pass
    assert counts[0]["aggregator"] == counts[2]["aggregator"] == 2
    assert (counts[0]["decoder"], counts[2]["decoder"]) == (1, 3)
    assert not np.array_equal(outputs[0].logits, outputs[2].logits)


def test_refinement_matches_eval_loop(seg):
    """Default: the reference evaluation loop, whose in-place update adds the source-point
    identity embedding to the point features once more on every pass (pass k carries it
    k + 1 times). ``accumulate_point_identity=False``: once per pass (head.predict)."""
    head, g, size = seg.head, seg.image_size // 2, seg.image_size
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(1, 2, 128, g, g, generator=gen)
    src = (torch.rand(5, 2, generator=gen) * (size - 1)).numpy()
    tar = (torch.rand(5, 2, generator=gen) * (size - 1)).numpy()
    mask = np.zeros((size, size), np.uint8)
    mask[30:80, 40:90] = 1
    feat_map = feats  # [1, 2, C, g, g]: frame 0 = source, frame 1 = target
    s2 = VGGTSegmentor(seg.backbone, seg.head, PipelineConfig(refine_iterations=2))
    with torch.inference_mode():
        _, low = s2.decode(feat_map, src, [tar], mask)
        spf = sample_point_features(feat_map[:, 0], torch.from_numpy(src)[None], (size, size))
        pe = head.prompt_encoder.src_point_pe.weight.view(1, 1, -1)
        prev = None
        for k in range(3):  # head.forward adds the embedding once itself
            _, prev = head(feat_map, torch.from_numpy(src)[None], torch.from_numpy(tar)[None],
                           torch.from_numpy(mask)[None], prev_low_res=prev, src_points_feat=spf + k * pe)
        torch.testing.assert_close(low, prev, rtol=0, atol=1e-5)
        args = (feat_map, torch.from_numpy(src)[None], torch.from_numpy(tar)[None], torch.from_numpy(mask)[None])
        # The head's own refinement (used by the evaluator and the trainer) is the same function.
        torch.testing.assert_close(low, head.predict(*args, refine_iterations=2)[1], rtol=0, atol=1e-6)

        for clean in (
            VGGTSegmentor(seg.backbone, seg.head, PipelineConfig(refine_iterations=2), accumulate_point_identity=False),
            VGGTSegmentor(seg.backbone, seg.head, PipelineConfig(refine_iterations=2, point_identity="per_pass")),
        ):
            _, low_clean = clean.decode(feat_map, src, [tar], mask)
            low_predict = head.predict(*args, refine_iterations=2, identity="per_pass")[1]
            torch.testing.assert_close(low_clean, low_predict, rtol=0, atol=1e-6)
            assert (low_clean - low).abs().max() > 1e-4


# ------------------------------------------------------------------ inputs
BAD_INPUTS = [
    ("float image", lambda: (SOURCE.astype(np.float32), MASK_A, None), "uint8"),
    ("grey image", lambda: (SOURCE[..., 0], MASK_A, None), "HxWx3"),
    ("RGBA image", lambda: (np.dstack([SOURCE, SOURCE[..., :1]]), MASK_A, None), "HxWx3"),
    ("list image", lambda: (SOURCE.tolist(), MASK_A, None), "NumPy"),
    ("mask size", lambda: (SOURCE, MASK_A[:-1], None), "source mask is 160x119 but the source image is 160x120"),
    ("empty mask", lambda: (SOURCE, np.zeros_like(MASK_A), None), "empty"),
    ("NaN mask", lambda: (SOURCE, np.full(MASK_A.shape, np.nan, np.float32), None), "NaN"),
    ("3-D mask", lambda: (SOURCE, np.dstack([MASK_A, MASK_A]), None), "HxW"),
    ("target dtype", lambda: (SOURCE, MASK_A, [TargetView(noise(50, 60, 1).astype(np.int32))]), "target 0 image"),
    ("target type", lambda: (SOURCE, MASK_A, [noise(50, 60, 1)]), "TargetView"),
    ("elongated", lambda: (SOURCE, MASK_A, [TargetView(noise(2, 3000, 1))]), "elongated"),
]


@pytest.mark.parametrize("name,make,message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_inputs_raise_value_error(seg, exo_target, name, make, message):
    image, mask, targets = make()
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        seg.segment(image, mask, targets if targets is not None else [exo_target])


def test_segment_objects_wants_a_sequence_of_masks(seg, exo_target):
    with pytest.raises(ValueError, match="sequence"):
        seg.segment_objects(SOURCE, MASK_A, [exo_target])
    assert seg.segment(SOURCE, MASK_A, []) == []
    assert seg.segment_objects(SOURCE, [], [exo_target]) == []


def test_constant_images_and_a_one_pixel_object(seg):
    source = np.zeros((300, 400, 3), np.uint8)
    mask = np.zeros((300, 400), bool)
    mask[151, 203] = True  # vanishes when nearest-resized to 126 px; the pipeline keeps it
    target = TargetView(np.full((240, 320, 3), 255, np.uint8), role="aerial")
    (r,) = seg.segment(source, mask, [target])
    assert_result_contract(r, (240, 320), seg.cfg.prompt_points, (300, 400))
    assert np.abs(r.source_points - [203, 151]).max() < 400 / 126 + 1


# ------------------------------------------------------------------ construction
def test_from_config_deterministic_and_checkpoints(seg, exo_target, ref_exo, tmp_path):
    built = create_segmentor(ModelConfig(config="test-tiny", device="cpu"), PipelineConfig())
    assert isinstance(built, VGGTSegmentor) and built.image_size == 126
    for a, b in zip(built.backbone.state_dict().values(), seg.backbone.state_dict().values()):
        assert torch.equal(a, b)

    # The published layouts: model.pt is a flat dict holding every VGGT head;
    # main_exp.pth wraps the head in {"model": ...} with DDP's "module." prefix.
    vggt_state = dict(seg.backbone.state_dict())
    vggt_state["camera_head.trunk.0.norm1.weight"] = torch.ones(4)
    vggt_state["depth_head.scratch.output_conv2.2.bias"] = torch.zeros(1)
    save_state_dict(vggt_state, tmp_path / "model.pt")
    save_state_dict({f"module.{k}": v for k, v in seg.head.state_dict().items()}, tmp_path / "main_exp.pth", wrap="model")

    model = ModelConfig(config="test-tiny", device="cpu", vggt_checkpoint=str(tmp_path / "model.pt"),
                        head_checkpoint=str(tmp_path))  # a directory holding main_exp.pth
    loaded = VGGTSegmentor.from_config(model, PipelineConfig())
    explicit = VGGTSegmentor.from_checkpoints(str(tmp_path / "model.pt"), str(tmp_path / "main_exp.pth"), preset="test-tiny")
    for other in (loaded, explicit):
        out = other.segment(SOURCE, MASK_A, [exo_target])[0]
        assert np.array_equal(out.logits, ref_exo.logits) and np.array_equal(out.target_points, ref_exo.target_points)


def test_from_config_bad_checkpoint_is_reported(tmp_path):
    from vggts_ros.checkpoint import CheckpointError

    save_state_dict({"aggregator.nonsense": torch.zeros(3)}, tmp_path / "model.pt")
    model = ModelConfig(config="test-tiny", device="cpu", vggt_checkpoint=str(tmp_path / "model.pt"),
                        head_checkpoint=str(tmp_path / "main_exp.pth"))
    with pytest.raises(CheckpointError, match="aggregator.nonsense"):
        VGGTSegmentor.from_config(model, PipelineConfig())


def test_from_config_half_given_checkpoints_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="both the VGGT and the head checkpoint"):
        VGGTSegmentor.from_config(ModelConfig(config="test-tiny", device="cpu", vggt_checkpoint=str(tmp_path)))


def test_network_size_must_match(seg):
    with pytest.raises(ValueError, match="img_size"):
        VGGTSegmentor(seg.backbone, seg.head, PipelineConfig(), image_size=518)


# ------------------------------------------------------------------ options
def test_single_target_does_not_depend_on_multi_view_features(seg, exo_target, ref_exo):
    per_pair = VGGTSegmentor(seg.backbone, seg.head, PipelineConfig(), multi_view_features=False)
    b = per_pair.segment(SOURCE, MASK_A, [exo_target])[0]
    assert np.array_equal(ref_exo.logits, b.logits)


def test_second_pass_and_joint_tracking(seg, exo_target):
    targets = [exo_target, TargetView(noise(100, 100, 8), role="ego")]
    second = VGGTSegmentor(seg.backbone, seg.head, PipelineConfig(second_pass=True))
    counter = CallCounter(backbone=seg.backbone)
    try:
        res = second.segment(SOURCE, MASK_A, targets)
    finally:
        counter.close()
    assert counter.counts["backbone"] == 2  # the second pass tracks on the features pass
    for view, r in zip(targets, res):
        assert_result_contract(r, view.image.shape[:2], 5, SOURCE.shape[:2])
    joint = VGGTSegmentor(seg.backbone, seg.head, PipelineConfig(), joint_tracking=True)
    for per_object in joint.segment_objects(SOURCE, [MASK_A, MASK_B], [exo_target]):
        assert_result_contract(per_object[0], exo_target.image.shape[:2], 5, SOURCE.shape[:2])


def test_bfloat16_backbone_only(exo_target):
    s = VGGTSegmentor.from_config(ModelConfig(config="test-tiny", device="cpu", dtype="bfloat16"), PipelineConfig())
    assert s.backbone.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in s.head.parameters())
    assert all(p.dtype == torch.float32 for p in s.backbone.parameters())
    r = s.segment(SOURCE, MASK_A, [exo_target])[0]
    assert_result_contract(r, exo_target.image.shape[:2], 5, SOURCE.shape[:2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(exo_target, ref_exo):
    gpu = VGGTSegmentor.deterministic("test-tiny", PipelineConfig(), device="cuda")
    b = gpu.segment(SOURCE, MASK_A, [exo_target])[0]
    assert (ref_exo.mask == b.mask).mean() > 0.99


# ------------------------------------------------------------------ target views
def head_logits(seg, trace) -> torch.Tensor:
    """The head's network-size logits for the traced (single) object and target."""
    (src,), target = trace["sources"], trace["targets"][0][0]
    with torch.inference_mode():
        feats = seg.backbone_features([src.crop_image, target.image])
        full, _ = seg.decode(feats, src.prompts, [target.prompts], src.crop_mask)
    return full[0, 0]


def test_non_square_ego_target_is_cropped_undistorted(seg):
    """A 16:9 ego target goes the cropped way (module docstring of ``pipeline``): the head
    sees a square crop at one scale on both axes (a disc stays a disc) and the logits and
    points map back into the frame through the same transform."""
    import cv2

    from vggts_ros.pipeline import is_cropped

    h, w = 90, 160
    frame = np.full((h, w, 3), 40, np.uint8)
    cv2.circle(frame, (110, 45), 20, (250, 250, 250), -1)
    view = TargetView(frame, role="ego", name="wrist")
    assert is_cropped(view)
    trace = {}
    with torch.inference_mode():
        (r,), = seg._run(SOURCE, [MASK_A > 0], [view], trace)
    target = trace["targets"][0][0]
    win = target.transform
    sx, sy = win.scale
    assert sx == sy and win.view_hw == (seg.image_size, seg.image_size)
    x1, y1, x2, y2 = win.box
    assert x2 - x1 == y2 - y1 <= h and 0 <= x1 and x2 <= w
    assert np.array_equal(target.image, cv2.resize(frame[y1:y2, x1:x2], target.image.shape[:2], interpolation=cv2.INTER_AREA))
    # Logits: the head's view logits pasted through the window (outside = -32); points likewise.
    assert r.logits.shape == (h, w)
    expected = win.logits_to_frame(head_logits(seg, trace)).numpy()
    np.testing.assert_allclose(r.logits, expected, rtol=0, atol=1e-5)
    outside = np.ones((h, w), bool)
    outside[y1:y2, x1:x2] = False
    assert (r.logits[outside] == -32).all()
    np.testing.assert_allclose(r.target_points, win.points_to_frame(target.prompts), rtol=0, atol=1e-5)
    np.testing.assert_allclose(win.points(r.target_points), target.prompts, rtol=0, atol=1e-4)
    assert_result_contract(r, (h, w), seg.cfg.prompt_points, SOURCE.shape[:2])


def test_square_ego_target_is_resized_like_the_reference(seg):
    """Square ego targets: the frame resized (area), prompts = the tracked points clipped
    to the view, logits resized back (the reference exo->ego recipe, unchanged)."""
    import cv2
    import torch.nn.functional as F

    frame = noise(100, 100, 9)
    trace = {}
    with torch.inference_mode():
        (r,), = seg._run(SOURCE, [MASK_A > 0], [TargetView(frame, role="ego")], trace)
    target = trace["targets"][0][0]
    size = seg.image_size
    assert np.array_equal(target.image, cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA))
    (_, direct), = trace["tracks"]
    assert np.array_equal(target.prompts, np.clip(direct.coords[1], 0, size - 1).astype(np.float32))
    np.testing.assert_allclose(r.target_points, target.prompts * (100 / size), rtol=0, atol=1e-4)
    # Recovery is a plain bilinear resize of the view logits.
    full = head_logits(seg, trace)
    expected = F.interpolate(full[None, None], size=(100, 100), mode="bilinear", align_corners=False)[0, 0]
    np.testing.assert_allclose(r.logits, expected.numpy(), rtol=0, atol=1e-5)


# ------------------------------------------------------------------ precision
def test_precision_modes(seg, exo_target, ref_exo):
    with pytest.raises(ValueError, match="float16"):
        VGGTSegmentor(seg.backbone, seg.head, PipelineConfig(precision="float16"))
    with pytest.raises(ValueError, match="sometimes"):
        VGGTSegmentor(seg.backbone, seg.head, PipelineConfig(point_identity="sometimes"))
    # The released scripts' autocast is CUDA-only: on a CPU "release" computes float32.
    release = VGGTSegmentor(seg.backbone, seg.head, PipelineConfig(precision="release"))
    assert release.backbone.dtype == torch.float32
    assert np.array_equal(release.segment(SOURCE, MASK_A, [exo_target])[0].logits, ref_exo.logits)
    bf16 = VGGTSegmentor.deterministic("test-tiny", PipelineConfig(precision="bf16"))
    assert bf16.backbone.dtype == torch.bfloat16


def test_float64_pipeline():
    s = VGGTSegmentor.deterministic("test-tiny", PipelineConfig(precision="float64"))
    assert all(p.dtype == torch.float64 for p in s.backbone.parameters())
    assert all(p.dtype == torch.float64 for p in s.head.parameters())
    with torch.inference_mode():
        assert s.backbone_features([noise(126, 126, 3)] * 2).dtype == torch.float64
    target = TargetView(noise(150, 200, 1), role="exo")
    r = s.segment(SOURCE, MASK_A, [target])[0]
    assert_result_contract(r, (150, 200), 5, SOURCE.shape[:2])
