"""Training: typed config, losses, self-training pairs from PNG/COCO folders, the head's
training step, the feature cache, and a CPU smoke run that must learn."""

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vggts_ros.prompts import kmeans_sample_points
from vggts_ros.training.config import DataSection, ModelSection, TrainConfig, smoke_config, smoke_head
from vggts_ros.training.losses import batch_iou, dice_loss, focal_loss, segmentation_loss
from vggts_ros.training.masks_io import decode_segmentation, read_label_png
from vggts_ros.training.pairs import collate
from vggts_ros.training.self_training import SelfTrainingPairs, coco_instances, png_pair_instances
from vggts_ros.training.toydata import write_shapes_dataset

S = 84


# ------------------------------------------------------------------------------ config
def test_config_roundtrip_overrides_and_errors(tmp_path):
    cfg = TrainConfig()
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.lr_drops, cfg.optim.epochs) == (5e-5, 1e-4, [8, 11], 12)
    assert (cfg.optim.focal_weight, cfg.optim.focal_alpha, cfg.optim.focal_gamma, cfg.optim.max_norm) == (20, 0.25, 2, 1)
    assert cfg.optim.refine_ratio == 0.5 and cfg.data.adaptive_ratio == 0.5
    cfg2 = cfg.override(["optim.lr=1e-3", "optim.lr_drops=[2, 3]", "data.directions=[exo2ego]", "eval_data.root=/x"])
    assert cfg2.optim.lr == 1e-3 and cfg2.optim.lr_drops == [2, 3] and cfg2.data.directions == ["exo2ego"]
    assert cfg2.eval_data is not None and cfg2.eval_data.root == "/x"
    path = tmp_path / "c.json"
    cfg2.save(str(path))
    assert TrainConfig.load(str(path)) == cfg2
    (tmp_path / "c.yaml").write_text("optim:\n  epochs: 3\nmodel:\n  preset: smoke\n")
    assert TrainConfig.load(str(tmp_path / "c.yaml")).optim.epochs == 3
    for bad in (["optim.lr=0"], ["optim.nope=1"], ["data.kind=video"], ["model.img_size=85"], ["optim.lr_drops=[3,1]"],
                ["data.target_crop=[0.9, 0.2]"], ["lr=1"]):
        with pytest.raises(ValueError):
            cfg.override(bad)
    with pytest.raises(ValueError, match="unknown section"):
        TrainConfig.from_dict({"optimizer": {}})


# ------------------------------------------------------------------------------ losses
def test_losses_match_hand_values():
    x = torch.zeros(1, 1, 1, 2)
    t = torch.tensor([[[[1.0, 0.0]]]])
    # p = 0.5 everywhere: ce = log 2, (1 - p_t)^2 = 1/4; alpha 0.25 (object) and 0.75 (background)
    assert focal_loss(x, t).item() == pytest.approx((0.25 + 0.75) * math.log(2) * 0.25 / 2)
    # dice: 1 - (2 * 0.5 + 1) / (0.5 + 0.5 + 1 + 1)
    assert dice_loss(x, t).item() == pytest.approx(1 - 2.0 / 3.0)
    out = segmentation_loss(x, t)
    assert out["loss"].item() == pytest.approx(20 * out["focal"].item() + out["dice"].item())
    big = torch.tensor([[[[30.0, -30.0]]]])
    assert focal_loss(big, t).item() < 1e-12 and dice_loss(big, t).item() == pytest.approx(0.0, abs=1e-6)
    assert batch_iou(torch.tensor([[[[1.0, 1.0]]]]), t).tolist() == [0.5]
    assert batch_iou(torch.tensor([[[[-1.0, -1.0]]]]), torch.zeros(1, 1, 1, 2)).tolist() == [1.0]


# ------------------------------------------------------------------------------ data
@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    paths = write_shapes_dataset(str(root), n_images=6, n_objects=2, seed=5, coco=True, background="plain")
    poly = tmp_path_factory.mktemp("toy_poly")
    ppaths = write_shapes_dataset(str(poly), n_images=2, n_objects=2, seed=5, png_pairs=False, coco=True,
                                  coco_format="polygon", background="plain")
    return paths, ppaths


def test_instances_from_png_pairs_and_coco_agree(toy, tmp_path):
    paths, ppaths = toy
    png = png_pair_instances(paths["root"])
    coco = coco_instances(paths["coco"])
    assert len(png) == len(coco) >= 10  # an object hidden under the other one is not an instance
    for a, b in zip(png, coco):
        labels = read_label_png(a.label_png)
        assert np.array_equal(labels == a.label_id, decode_segmentation(b.segmentation, b.height, b.width) > 0)
    import cv2

    # polygons (outer outlines, the same first images): re-filled like the RLE masks with holes filled
    for a, b in zip(coco, coco_instances(ppaths["coco"])):
        rle = decode_segmentation(a.segmentation, a.height, a.width)
        contours, _ = cv2.findContours(rle, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        ref = cv2.drawContours(np.zeros_like(rle), contours, -1, 1, -1) > 0
        got = decode_segmentation(b.segmentation, b.height, b.width) > 0
        assert (ref & got).sum() / (ref | got).sum() > 0.95
    # <name>.png + <name>_mask.png siblings
    img = cv2.imread(str(Path(paths["root"]) / "images" / "img_5_000.png"))
    cv2.imwrite(str(tmp_path / "a.png"), img)
    cv2.imwrite(str(tmp_path / "a_mask.png"), cv2.imread(str(Path(paths["root"]) / "masks" / "img_5_000.png"), 0))
    assert len(png_pair_instances(str(tmp_path))) == 2
    with pytest.raises(ValueError, match="no image/mask pairs"):
        png_pair_instances(str(tmp_path / "nothing")) if (tmp_path / "nothing").mkdir() is None else None


def test_self_training_pairs(toy):
    paths, _ = toy
    d = DataSection(root=paths["root"], adaptive_prompts="warp", first_pass_points=20, outlier_k=4, seed=1)
    ds = SelfTrainingPairs(d, S)
    samples = [ds[i] for i in range(len(ds))]
    fams = [s["direction"] for s in samples]
    assert abs(fams.count("adaptive") - fams.count("non-adaptive")) <= len(fams) % 2  # 1:1 per epoch
    radius = d.offset_radius * S / 518
    on_object = []
    for s in samples:
        assert s["src_img"].shape == (S, S, 3) and s["tar_img"].shape == (S, S, 3)
        assert s["src_mask"].sum() >= 0.001 * S * S and s["tar_mask"].sum() > 0
        assert s["src_points"].shape == (5, 2) and s["tar_points"].shape == (5, 2) and not s["track"]
        assert np.all((s["tar_points"] >= 0) & (s["tar_points"] <= S - 1))
        ij = np.round(s["tar_points"]).astype(int)
        on_object.append(s["tar_mask"][ij[:, 1], ij[:, 0]].mean())
        if s["direction"] == "non-adaptive":  # K-means of the warped mask, each moved within the radius
            ref = kmeans_sample_points(s["tar_mask"], 5)
            assert np.all(np.linalg.norm(s["tar_points"] - ref, axis=1) <= radius + 1e-4)
            assert set(s["augment"]) & {"strong_perspective", "elastic", "piecewise"}
        else:
            assert s["augment"] == ["similarity", "mild_perspective"]
    assert np.mean(on_object) > 0.7
    # deterministic in (seed, epoch, index); another epoch draws another pair
    again = SelfTrainingPairs(d, S)[3]
    assert all(np.array_equal(again[k], samples[3][k]) for k in ("src_img", "tar_img", "tar_points"))
    ds.set_epoch(1)
    assert not np.array_equal(ds[3]["tar_img"], samples[3]["tar_img"])
    assert not np.array_equal(ds[(2, 3)]["tar_img"], ds[(1, 3)]["tar_img"])  # (epoch, index) from the sampler
    fixed = SelfTrainingPairs(dataclasses.replace(d, fixed_pairs=True), S)
    a = fixed[2]["tar_img"]
    fixed.set_epoch(7)
    assert np.array_equal(fixed[2]["tar_img"], a)


def test_backbone_prompts_for_adaptive_pairs(toy):
    from vggts_ros.training.runtime import FeatureExtractor, build_backbone

    paths, _ = toy
    d = DataSection(root=paths["root"], coco=paths["coco"], adaptive_prompts="backbone", first_pass_points=20,
                    outlier_k=4)
    ds = SelfTrainingPairs(d, S)
    batch = collate([ds[i] for i in range(4)])
    tracked = np.asarray(batch["track"])
    assert tracked.any() and np.isnan(batch["tar_points"][tracked]).all()
    ex = FeatureExtractor(build_backbone(ModelSection(preset="smoke", vggt_checkpoint=None), torch.device("cpu")),
                          torch.device("cpu"))
    feats = ex.features(batch)
    assert feats.shape == (4, 2, 32, S // 2, S // 2)
    tar = ex.target_prompts(batch, feats, d)
    assert np.isfinite(tar).all() and tar.min() >= 0 and tar.max() <= S - 1
    assert np.array_equal(tar[~tracked], batch["tar_points"][~tracked])


def test_feature_cache(toy, tmp_path):
    from vggts_ros.training.runtime import FeatureExtractor, build_backbone

    paths, _ = toy
    ds = SelfTrainingPairs(DataSection(root=paths["root"], adaptive_prompts="warp", fixed_pairs=True,
                                       first_pass_points=20, outlier_k=4), S)
    batch = collate([ds[i] for i in range(3)])
    bb = build_backbone(ModelSection(preset="smoke", vggt_checkpoint=None), torch.device("cpu"))
    ex = FeatureExtractor(bb, torch.device("cpu"), str(tmp_path / "cache"))
    f1 = ex.features(batch)
    f2 = ex.features(batch)
    assert (ex.cache.misses, ex.cache.hits, ex.backbone_pairs) == (3, 3, 3)
    assert torch.allclose(f1, f2, atol=2e-2 * f1.abs().max().item(), rtol=1e-2)
    other = FeatureExtractor(build_backbone(ModelSection(preset="smoke", vggt_checkpoint=None, backbone_seed=1),
                                            torch.device("cpu")), torch.device("cpu"), str(tmp_path / "cache"))
    other.features(batch)
    assert other.cache.hits == 0, "a different backbone must not read these features"


def test_train_step_refines_half_the_batch(toy):
    from vggts_ros.models.union_head import UnionSegmentationHead
    from vggts_ros.training.trainer import HeadTrainStep

    torch.manual_seed(0)
    head = UnionSegmentationHead(smoke_head())
    g = S // 2
    feats = torch.randn(2, 2, 32, g, g)
    pts = torch.rand(2, 5, 2) * (S - 1)
    mask = (torch.rand(2, S, S) > 0.5).float()
    out = HeadTrainStep(head)(feats, pts, pts, mask, n_plain=1, refine_time=1)
    assert out.shape == (2, 1, S, S) and out.requires_grad
    with torch.no_grad():
        first, _ = head(feats[:1], pts[:1], pts[:1], mask[:1])
        refined, _ = head.predict(feats[1:], pts[1:], pts[1:], mask[1:], refine_iterations=1)
    assert torch.allclose(out[:1], first, atol=1e-5) and torch.allclose(out[1:], refined, atol=1e-5)
    out.sum().backward()
    assert all(p.grad is not None for p in head.parameters())


# ------------------------------------------------------------------------------ smoke run
def test_smoke_training_learns(tmp_path):
    """The smoke preset self-trained on generated shapes: the loss falls and the held-out
    IoU (other images, COCO-RLE annotated) rises clearly above the untrained head's."""
    from vggts_ros.cli import main as vggts_main
    from vggts_ros.models.union_head import UnionSegmentationHead
    from vggts_ros.training.trainer import Trainer

    write_shapes_dataset(str(tmp_path / "train"), n_images=24, n_objects=2, seed=1, background="plain")
    val = write_shapes_dataset(str(tmp_path / "val"), n_images=8, n_objects=2, seed=2, png_pairs=False, coco=True,
                               background="plain")
    cache = str(tmp_path / "cache")
    cfg = smoke_config(str(tmp_path / "run"), str(tmp_path / "train"), {"run.feature_cache": cache})
    cfg.eval_data = dataclasses.replace(cfg.data, root=val["root"], coco=val["coco"])
    trainer = Trainer(cfg)
    trainer.setup()
    before = trainer.evaluate().mean_iou()
    summary = trainer.fit()
    curve = [(e["epoch"], round(e["loss"], 3), round(e["iou"], 3), round(e["eval_overall_iou"], 3),
              round(e["seconds_per_step"], 3)) for e in summary["epochs"]]
    print("\nepoch, train loss, train IoU, held-out IoU, s/step:", curve, "\nheld-out IoU before:", round(before, 3))
    first, last = summary["epochs"][0], summary["epochs"][-1]
    assert last["loss"] < 0.75 * first["loss"]
    after = last["eval_overall_iou"]
    assert after >= before + 0.1 and after >= 0.25, f"held-out IoU {before:.3f} -> {after:.3f}"
    assert [e["lr"] for e in summary["epochs"]][14:16] == [pytest.approx(3e-3), pytest.approx(3e-4)]

    # the checkpoint has the main_exp.pth layout and loads as a head
    ckpt = Path(cfg.run.out_dir) / "ckpts" / f"epoch_{cfg.optim.epochs}.pth"
    state = torch.load(str(ckpt), map_location="cpu", weights_only=True)
    assert set(state) == {"model", "optimizer", "scheduler", "epoch"} and state["epoch"] == cfg.optim.epochs
    assert state["scheduler"]["last_epoch"] == cfg.optim.epochs
    UnionSegmentationHead.from_pretrained(str(ckpt), cfg=smoke_head())
    tags = {json.loads(line)["tag"] for line in (Path(cfg.run.out_dir) / "metrics.jsonl").read_text().splitlines()}
    assert tags == {"train", "epoch", "eval"}

    # `vggts evaluate` on the held-out set reproduces the trainer's number
    out = tmp_path / "eval"
    rc = vggts_main(["evaluate", "--preset", "smoke", "--vggt-checkpoint", "none", "--data", "self",
                     "--data-root", val["root"], "--coco", val["coco"], "--set", "eval_data.fixed_pairs=true",
                     "--set", "eval_data.adaptive_prompts=warp", "--set", "eval_data.first_pass_points=20",
                     "--set", "eval_data.outlier_k=4", "--head-checkpoint", str(ckpt), "--out", str(out),
                     "--feature-cache", cache, "--workers", "0", "--worst", "3", "--device", "cpu", "--no-progress"])
    assert rc == 0
    report = json.loads((out / "eval.json").read_text())
    assert report["summary"]["overall"]["iou"] == pytest.approx(after, abs=1e-6)
    assert set(report["summary"]) == {"adaptive", "non-adaptive", "overall"}
    assert len(list((out / "overlays").glob("*.png"))) == 3


def test_cli_errors_are_usage_errors(tmp_path, capsys):
    from vggts_ros.cli import main as vggts_main

    assert vggts_main(["train", "--data", "self", "--data-root", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert vggts_main(["train", "--data", "self", "--data-root", str(tmp_path), "--set", "optim.lr=-1"]) == 2
    assert "optim.lr must be > 0" in capsys.readouterr().err
