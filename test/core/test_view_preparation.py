"""Training, evaluation and inference prepare views through the same transforms.

One Ego-Exo4D sample (the SegSwap layout of ``test_egoexo_dataset``) goes through the
training loader (``training/egoexo.py``, which ``vggts train`` and ``vggts evaluate`` both
read) and through the inference pipeline's stages, given the same first-pass projections
(the loader's cached ones); the prepared images, masks and points must be identical.
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers.egoexo_data import EGO, EXO, build_segswap
from vggts_ros import transforms
from vggts_ros.config import PipelineConfig
from vggts_ros.pipeline import Tracks, VGGTSegmentor
from vggts_ros.training.config import DataSection
from vggts_ros.training.egoexo import REFERENCE_SIZE, EgoExoPairs, make_key, split_key


@pytest.fixture(scope="module")
def seg():
    return VGGTSegmentor.deterministic("test-tiny", PipelineConfig(), device="cpu")


@pytest.fixture(scope="module")
def dataset(seg, tmp_path_factory):
    root = build_segswap(tmp_path_factory.mktemp("segswap") / "egoexo")
    return EgoExoPairs(DataSection(kind="egoexo", root=str(root), split="val"), seg.image_size, keep_frames=True)


def frames(ds, key):
    take, ego, exo, obj, idx = split_key(key)
    return ds.view(take, ego, obj, idx), ds.view(take, exo, obj, idx)


def tracks(first_points, projections_518, size) -> Tracks:
    """The loader's cached projections as first-pass tracks in pixels of a ``size`` view."""
    proj = np.asarray(projections_518, np.float64).reshape(-1, 2) * (size / REFERENCE_SIZE)
    n = len(proj)
    return Tracks(coords=np.stack([np.asarray(first_points, np.float64)[:n], proj]),
                  vis=np.ones((2, n), np.float32), conf=np.ones((2, n), np.float32))


@pytest.mark.parametrize("obj", ["cup", "box"])
def test_ego2exo_sample_equals_pipeline_inputs(seg, dataset, obj):
    key = make_key("take_a", EGO, EXO, obj, "0")
    sample = dataset.build(key, "ego2exo")
    (ego_img, ego_mask), (exo_img, exo_mask) = frames(dataset, key)

    src = seg.prepare_source(ego_img, ego_mask > 0, need_first=True)
    assert np.array_equal(src.crop_image, sample["src_img"])
    assert np.array_equal(src.crop_mask, sample["src_mask"])
    assert np.array_equal(src.prompts, sample["src_points"])

    # The cache holds tracks in the 518 letterbox: the same first view here, so that both
    # sides see bit-identical projections (the cache's outliers tie in distance).
    tr = tracks(src.first_points, dataset.entry(key)["g2x_518_first"], REFERENCE_SIZE)
    first_view = transforms.letterbox(exo_img.shape[:2], REFERENCE_SIZE)
    target = seg.cropped_target(exo_img, first_view, tr, 1, src)
    m = sample["meta"]
    assert target.transform.box == (m["x1"], m["y1"], m["x2"], m["y2"])
    assert np.array_equal(target.image, sample["tar_img"])
    assert np.array_equal(target.transform.mask(exo_mask), sample["tar_mask"])
    np.testing.assert_allclose(target.prompts, sample["tar_points"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("obj", ["cup", "box"])
def test_exo2ego_sample_equals_pipeline_inputs(seg, dataset, obj):
    key = make_key("take_a", EGO, EXO, obj, "0")
    sample = dataset.build(key, "exo2ego")
    (ego_img, ego_mask), (exo_img, exo_mask) = frames(dataset, key)

    src = seg.prepare_source(exo_img, exo_mask > 0, need_first=False, need_direct=True)
    assert not src.view.square.whole_frame  # the 200x112 exo source is cut to a square, not letterboxed
    assert np.array_equal(src.crop_image, sample["src_img"])
    assert np.array_equal(src.crop_mask, sample["src_mask"])
    assert np.array_equal(src.prompts, sample["src_points"])

    tr = tracks(src.direct_points, dataset.entry(key)["x2g_518"], seg.image_size)
    target = seg.direct_target(ego_img, tr, 1, src)
    assert np.array_equal(target.image, sample["tar_img"])
    assert np.array_equal(target.transform.mask(ego_mask), sample["tar_mask"])
    np.testing.assert_allclose(target.prompts, sample["tar_points"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("direction", ["ego2exo", "exo2ego"])
def test_evaluation_recovers_logits_like_the_pipeline(seg, dataset, direction):
    """The evaluator pastes logits back with ``pairs.recover_to_frame(meta)``: the same map
    as the inverse of the pipeline's target transform."""
    import torch

    from vggts_ros.training.pairs import recover_to_frame

    key = make_key("take_a", EGO, EXO, "cup", "0")
    sample = dataset.build(key, direction)
    m = sample["meta"]
    window = transforms.Window((m["ori_h"], m["ori_w"]), (m["x1"], m["y1"], m["x2"], m["y2"]),
                               (seg.image_size, seg.image_size))
    logits = torch.randn(seg.image_size, seg.image_size, generator=torch.Generator().manual_seed(0))
    assert torch.equal(recover_to_frame(logits, m), window.logits_to_frame(logits))
