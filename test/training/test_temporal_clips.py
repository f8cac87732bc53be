""""Image as video" clips: what the temporal training relies on (the visible-mask ground
truth and its occlusion fraction, occluders crossing mid-clip, smooth motion, blur that
changes pixels but not labels, determinism)."""

import dataclasses

import cv2
import numpy as np
import pytest

from vggts_ros.training.clips import ClipSection, ImageClips, collate_clips
from vggts_ros.training.config import DataSection
from vggts_ros.training.toydata import write_shapes_dataset

S = 84


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_shapes_dataset(str(tmp_path_factory.mktemp("clips")), n_images=8, n_objects=2, seed=3,
                                background="plain")["root"]


def data(root, **kw):
    return DataSection(root=root, first_pass_points=20, outlier_k=4, seed=4, **kw)


def iou(a, b):
    u = np.logical_or(a, b).sum()
    return np.logical_and(a, b).sum() / u if u else 1.0


def test_clip_arrays_masks_and_occlusion(root):
    ds = ImageClips(data(root, fixed_pairs=True), ClipSection(frames=6), S)
    clips = [ds[i] for i in range(len(ds))]
    T = 6
    occ = np.stack([c["occlusion"] for c in clips])
    for c in clips:
        assert c["src_img"].shape == (T, S, S, 3) and c["tar_img"].shape == (T, S, S, 3)
        assert c["tar_mask"].shape == c["amodal_mask"].shape == (T, S, S) and c["tar_points"].shape == (T, 5, 2)
        assert all(np.array_equal(c["src_img"][0], c["src_img"][t]) for t in range(T))  # keyframe source
        assert c["tar_mask"][0].sum() > 0  # the clip starts with the object in view
        assert not np.any(c["tar_mask"] > c["amodal_mask"])  # visible part of the object
        for t in range(T):
            hidden = 1.0 - c["tar_mask"][t].sum() / max(1, c["amodal_mask"][t].sum())
            assert c["occlusion"][t] == pytest.approx(hidden, abs=1e-6)
        pts = np.round(c["tar_points"]).astype(int)
        assert pts.min() >= 0 and pts.max() <= S - 1
        on = [c["amodal_mask"][t][pts[t, :, 1], pts[t, :, 0]].mean() for t in range(T)]
        assert np.mean(on) > 0.7  # projections land on the (possibly hidden) object
        # smooth: the object moves little from frame to frame in the target input
        centres = [np.argwhere(c["amodal_mask"][t])[:, ::-1].mean(0) for t in range(T)]
        assert max(np.linalg.norm(centres[t + 1] - centres[t]) for t in range(T - 1)) < 0.1 * S
    # ... and consecutive frames agree far more than a clip's first and last frames
    step_iou = np.mean([iou(c["amodal_mask"][t], c["amodal_mask"][t + 1]) for c in clips for t in range(T - 1)])
    ends_iou = np.mean([iou(c["amodal_mask"][0], c["amodal_mask"][-1]) for c in clips])
    assert step_iou > 0.7 and step_iou > ends_iou + 0.15, (step_iou, ends_iou)
    # occluders cross the object mid-clip: middle frames hidden most, many more than half hidden
    assert occ[:, 1:-1].mean() > 2 * occ[:, [0, -1]].mean()
    assert (occ > 0.5).mean() > 0.1
    batch = collate_clips(clips[:3])
    assert batch["tar_img"].shape == (3, T, S, S, 3) and batch["occlusion"].shape == (3, T)
    assert batch["key"] == [c["key"] for c in clips[:3]]


def test_clips_are_deterministic_per_seed_epoch_and_index(root):
    d = data(root)
    a, b = ImageClips(d, ClipSection(), S), ImageClips(d, ClipSection(), S)
    assert all(np.array_equal(a[2][k], b[2][k]) for k in ("tar_img", "tar_mask", "tar_points", "occlusion"))
    a.set_epoch(1)
    assert not np.array_equal(a[2]["tar_img"], b[2]["tar_img"])
    assert not np.array_equal(a[(3, 2)]["tar_img"], a[(1, 2)]["tar_img"])  # (epoch, index) from the sampler
    fixed = ImageClips(dataclasses.replace(d, fixed_pairs=True), ClipSection(), S)
    first = fixed[1]["tar_img"]
    fixed.set_epoch(5)
    assert np.array_equal(fixed[1]["tar_img"], first)
    other = ImageClips(dataclasses.replace(d, seed=5), ClipSection(), S)
    assert not np.array_equal(other[2]["tar_img"], b[2]["tar_img"])


def test_blur_changes_pixels_not_labels_and_no_occluder_no_occlusion(root):
    d = data(root, fixed_pairs=True)
    sharp = ImageClips(d, ClipSection(blur_prob=0.0), S)[0]
    blurry = ImageClips(d, ClipSection(blur_prob=1.0, blur_sigma=(2.0, 3.0)), S)[0]
    assert not sharp["blurred"].any() and blurry["blurred"].all()
    for k in ("tar_mask", "amodal_mask", "tar_points", "occlusion"):
        assert np.array_equal(sharp[k], blurry[k]), k

    def sharpness(img):
        return cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float64), cv2.CV_64F).var()

    assert all(sharpness(blurry["tar_img"][t]) < 0.8 * sharpness(sharp["tar_img"][t]) for t in range(6))
    clear = ImageClips(d, ClipSection(occluders=0), S)
    for i in range(4):
        c = clear[i]
        assert np.all(c["occlusion"] == 0) and np.array_equal(c["tar_mask"], c["amodal_mask"])


def test_clip_section_errors():
    for bad in (dict(frames=1), dict(occluders=-1), dict(blur_prob=1.5), dict(scale=(1.2, 0.8)),
                dict(target_crop=(0.5, 1.2))):
        with pytest.raises(ValueError, match="clips\\."):
            ClipSection(**bad).validate()


def test_egoexo_clips_are_consecutive_annotated_moments(tmp_path):
    from helpers.egoexo_data import EGO, EXO, build_segswap
    from vggts_ros.training.clips import EgoExoClips
    from vggts_ros.training.egoexo import EgoExoPairs

    root = build_segswap(tmp_path / "egoexo")
    d = DataSection(kind="egoexo", root=str(root), split="val")
    ds = EgoExoClips(d, ClipSection(frames=2), 112)
    # take_a: "cup" has moments 0 and 30 (one clip per direction); "box" only one moment
    assert len(ds) == 2
    pairs = EgoExoPairs(d, 112, train=False)
    by_key = {(k, direction): i for i, (k, direction) in enumerate(pairs.samples)}
    for c in (ds[0], ds[1]):
        direction = c["direction"]
        assert c["tar_img"].shape == (2, 112, 112, 3) and np.isnan(c["occlusion"]).all()
        for t, frame in enumerate(("000000", "000030")):
            ref = pairs[by_key[(f"take_a//{EGO}//{EXO}//cup//{frame}", direction)]]
            assert np.array_equal(c["tar_img"][t], ref["tar_img"]) and np.array_equal(c["tar_mask"][t], ref["tar_mask"])
    assert sorted(c["direction"] for c in (ds[0], ds[1])) == ["ego2exo", "exo2ego"]
    with pytest.raises(ValueError, match="annotated moments"):
        EgoExoClips(d, ClipSection(frames=3), 112)


def test_amodal_truth_is_the_whole_object_with_the_same_frames(root):
    """``clips.truth="amodal"``: the ground truth includes the hidden part; images, the
    occlusion fraction and the visible/amodal relation are those of the default clips."""
    vis = ImageClips(data(root, fixed_pairs=True), ClipSection(frames=5), S)
    amo = ImageClips(data(root, fixed_pairs=True), ClipSection(frames=5, truth="amodal"), S)
    hidden = 0
    for i in range(len(vis)):
        a, b = vis[i], amo[i]
        assert np.array_equal(a["tar_img"], b["tar_img"]) and np.array_equal(a["occlusion"], b["occlusion"])
        assert np.array_equal(b["tar_mask"], b["amodal_mask"]) and np.array_equal(a["amodal_mask"], b["amodal_mask"])
        hidden += int((b["tar_mask"].astype(int) - a["tar_mask"]).sum())
    assert hidden > 0  # occluded pixels are object in the amodal truth only
    with pytest.raises(ValueError, match="clips.truth"):
        ClipSection(truth="full").validate()
