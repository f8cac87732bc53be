"""One refinement semantics: the head function, the evaluator and the trainer's forward give
the same logits on the same inputs, and that is the reference's accumulating point identity.

The reference (``main_exp/hybrid.py`` and the inference scripts) hands one point-feature
tensor to every pass of ``Predictor``, whose prompt encoder adds the source-point
identity embedding to it in place: pass k sees the embedding k + 1 times. That loop is
written out below with the project's own one-pass ``head(...)`` (which adds it once) fed
``spf + k * pe``; everything else must agree with it.
"""

import numpy as np
import pytest
import torch

from vggts_ros.models.deterministic import fill_deterministic
from vggts_ros.models.union_head import UnionSegmentationHead, decode_with_refinement, sample_point_features
from vggts_ros.training.config import DataSection, ModelSection, TrainConfig, smoke_head
from vggts_ros.training.evaluate import predict_batch
from vggts_ros.training.runtime import FeatureExtractor, build_backbone
from vggts_ros.training.trainer import HeadTrainStep

S = 84
REFINEMENTS = 2
ATOL = 1e-5


@pytest.fixture(scope="module")
def setup():
    """A smoke backbone and head with deterministic weights, a batch of two pairs."""
    device = torch.device("cpu")
    backbone = build_backbone(ModelSection(preset="smoke", vggt_checkpoint=None, backbone_init="deterministic"), device)
    head = fill_deterministic(UnionSegmentationHead(smoke_head(S)).eval(), 3)
    gen = torch.Generator().manual_seed(1)
    imgs = (torch.rand(2, 2, S, S, 3, generator=gen) * 255).to(torch.uint8).numpy()
    masks = np.zeros((2, S, S), np.uint8)
    masks[0, 10:40, 20:60] = 1
    masks[1, 30:70, 5:50] = 1
    batch = {
        "src_img": imgs[:, 0],
        "tar_img": imgs[:, 1],
        "src_mask": masks,
        "src_points": (torch.rand(2, 5, 2, generator=gen) * (S - 1)).numpy(),
        "tar_points": (torch.rand(2, 5, 2, generator=gen) * (S - 1)).numpy(),
        "track": np.zeros(2, bool),
    }
    extractor = FeatureExtractor(backbone, device)
    feats = extractor.features(batch)
    inputs = (
        feats,
        torch.from_numpy(batch["src_points"]),
        torch.from_numpy(batch["tar_points"]),
        torch.from_numpy(masks).float(),
    )
    return head, extractor, batch, inputs


def reference_loop(head, feats, src, tar, mask, refinements):
    """The reference evaluation loop: one point-feature tensor, accumulating identity."""
    spf = sample_point_features(feats[:, 0], src, (S, S))
    pe = head.prompt_encoder.src_point_pe.weight.view(1, 1, -1)
    full = low = None
    for k in range(refinements + 1):
        full, low = head(feats, src, tar, mask, prev_low_res=low, src_points_feat=spf + k * pe)
    return full, low


def test_head_function_is_the_reference_loop(setup):
    head, _, _, (feats, src, tar, mask) = setup
    with torch.no_grad():
        ref_full, ref_low = reference_loop(head, feats, src, tar, mask, REFINEMENTS)
        full, low = decode_with_refinement(head, head.encode(feats, src, tar, mask), REFINEMENTS)
        full_p, _ = head.predict(feats, src, tar, mask, refine_iterations=REFINEMENTS)
    torch.testing.assert_close(full, ref_full, rtol=0, atol=ATOL)
    torch.testing.assert_close(low, ref_low, rtol=0, atol=ATOL)
    torch.testing.assert_close(full_p, ref_full, rtol=0, atol=ATOL)


def test_evaluator_trainer_and_head_agree(setup):
    head, extractor, batch, (feats, src, tar, mask) = setup
    with torch.no_grad():
        ref_full, _ = reference_loop(head, feats, src, tar, mask, REFINEMENTS)
        evaluated = predict_batch(head, extractor, dict(batch), DataSection(), REFINEMENTS)
    # The trainer's refined half runs refine_time no-grad passes, then the trained one.
    trained = HeadTrainStep(head)(feats, src, tar, mask, n_plain=0, refine_time=REFINEMENTS)
    assert trained.requires_grad
    torch.testing.assert_close(evaluated, ref_full, rtol=0, atol=ATOL)
    torch.testing.assert_close(trained.detach(), ref_full, rtol=0, atol=ATOL)
    # Its plain half is the first pass.
    plain = HeadTrainStep(head)(feats, src, tar, mask, n_plain=2, refine_time=REFINEMENTS)
    with torch.no_grad():
        first, _ = reference_loop(head, feats, src, tar, mask, 0)
    torch.testing.assert_close(plain.detach(), first, rtol=0, atol=ATOL)


def test_per_pass_differs_and_is_selectable_everywhere(setup):
    head, extractor, batch, (feats, src, tar, mask) = setup
    with torch.no_grad():
        acc, _ = reference_loop(head, feats, src, tar, mask, REFINEMENTS)
        spf = sample_point_features(feats[:, 0], src, (S, S))
        full = low = None
        for _ in range(REFINEMENTS + 1):  # fresh point features for every pass
            full, low = head(feats, src, tar, mask, prev_low_res=low, src_points_feat=spf)
        per_pass = full
        evaluated = predict_batch(head, extractor, dict(batch), DataSection(), REFINEMENTS, identity="per_pass")
        func, _ = decode_with_refinement(head, head.encode(feats, src, tar, mask), REFINEMENTS, "per_pass")
    trained = HeadTrainStep(head, "per_pass")(feats, src, tar, mask, n_plain=0, refine_time=REFINEMENTS)
    assert (per_pass - acc).abs().max() > 1e-3, "the two semantics must be distinguishable here"
    for name, value in (("evaluator", evaluated), ("head function", func), ("trainer", trained.detach())):
        torch.testing.assert_close(value, per_pass, rtol=0, atol=ATOL, msg=lambda m, n=name: f"{n}: {m}")


def test_trainer_gradient_through_identity_is_one_embedding(setup):
    """As in the reference, identity copies added under no_grad carry no gradient: the
    gradient w.r.t. the embedding equals that of a loop whose extra copies are constants."""
    head, _, _, (feats, src, tar, mask) = setup
    pe = head.prompt_encoder.src_point_pe.weight

    head.zero_grad()
    HeadTrainStep(head)(feats, src, tar, mask, n_plain=0, refine_time=REFINEMENTS).sum().backward()
    ours = pe.grad.clone()

    head.zero_grad()
    spf = sample_point_features(feats[:, 0], src, (S, S))
    const = pe.detach().view(1, 1, -1)
    with torch.no_grad():
        low = None
        for k in range(REFINEMENTS):
            _, low = head(feats, src, tar, mask, prev_low_res=low, src_points_feat=spf + k * const)
    full, _ = head(feats, src, tar, mask, prev_low_res=low.detach(), src_points_feat=spf + REFINEMENTS * const)
    full.sum().backward()
    torch.testing.assert_close(ours, pe.grad, rtol=1e-4, atol=1e-6)
    head.zero_grad()


def test_bad_identity_is_a_clear_error(setup):
    head, _, _, (feats, src, tar, mask) = setup
    ctx = head.encode(feats, src, tar, mask)
    with pytest.raises(ValueError, match="point-identity mode 'twice'"):
        decode_with_refinement(head, ctx, 1, "twice")
    with pytest.raises(ValueError, match="point-identity"):
        HeadTrainStep(head, "twice")
    with pytest.raises(ValueError, match="model.point_identity"):
        TrainConfig().override(["model.point_identity=twice"])
    assert TrainConfig().model.point_identity == "accumulate"
