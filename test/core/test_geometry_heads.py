"""VGGT's camera and depth heads in the backbone: built and loaded from model.pt only with
BackboneConfig.geometry_heads, keys checked like the others, run on the tokens of a pass
already made, deterministic weights that leave the track head alone."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vggts_ros.checkpoint import CheckpointError, save_state_dict
from vggts_ros.config import (
    AggregatorConfig,
    BackboneConfig,
    CameraHeadConfig,
    DepthHeadConfig,
    TrackHeadConfig,
)
from vggts_ros.models.backbone import GeometryOutput, VGGTBackbone, backbone_config_from_dict
from vggts_ros.models.deterministic import fill_deterministic, fill_deterministic_in_place


def geo_config(on: bool = True) -> BackboneConfig:
    """Cheap config with every structural feature of the real one."""
    return BackboneConfig(
        AggregatorConfig(img_size=56, embed_dim=32, depth=24, num_heads=2, patch_embed="conv"),
        TrackHeadConfig(features=32, iters=2, corr_levels=3, corr_radius=2, hidden_size=64),
        geometry_heads=on,
        camera_head=CameraHeadConfig(trunk_depth=2, num_heads=4, iterations=3),
        depth_head=DepthHeadConfig(features=32, out_channels=[16, 32, 64, 64]),
    )


@pytest.fixture(scope="module")
def model():
    return VGGTBackbone(geo_config()).eval().fill_deterministic(7)


@pytest.fixture(scope="module")
def images():
    return torch.rand(1, 3, 3, 56, 42, generator=torch.Generator().manual_seed(2))


def _published(model: VGGTBackbone) -> dict:
    """model.pt's layout: every head, the point head included."""
    state = dict(model.state_dict())
    state["point_head.scratch.output_conv1.bias"] = torch.zeros(4)
    return state


def test_loaded_only_when_on(tmp_path, model, images):
    save_state_dict(_published(model), tmp_path / "model.pt")
    on = VGGTBackbone.from_pretrained(str(tmp_path), cfg=geo_config(True))
    loaded = on.state_dict()
    assert set(loaded) == set(model.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded[k]), k
    off = VGGTBackbone.from_pretrained(str(tmp_path), cfg=geo_config(False))
    assert off.camera_head is None and off.depth_head is None
    assert not any(k.startswith(("camera_head.", "depth_head.")) for k in off.state_dict())
    with torch.no_grad():
        a, b, c = model(images, geometry=True), on(images, geometry=True), off(images)
    assert torch.equal(a.features, c.features), "the geometry heads changed the track features"
    assert torch.equal(a.geometry.depth, b.geometry.depth)
    assert torch.equal(a.geometry.pose_encoding, b.geometry.pose_encoding)
    with pytest.raises(RuntimeError, match="geometry_heads"):
        off.geometry([None] * 24, images, 5)


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda s: s.pop("camera_head.trunk.1.mlp.fc2.bias"), r"missing keys: .*camera_head\.trunk\.1\.mlp\.fc2\.bias"),
        (lambda s: s.pop("depth_head.scratch.output_conv2.2.weight"),
         r"missing keys: .*depth_head\.scratch\.output_conv2\.2\.weight"),
        (lambda s: s.__setitem__("depth_head.scratch.output_conv3.weight", torch.zeros(1)),
         r"unexpected keys: .*depth_head\.scratch\.output_conv3\.weight"),
        (lambda s: s.__setitem__("camera_head.embed_pose.weight", torch.zeros(64, 8)),
         r"shape mismatch: .*camera_head\.embed_pose\.weight"),
        (lambda s: [s.pop(k) for k in list(s) if k.startswith(("camera_head.", "depth_head."))],
         r"missing keys: camera_head\..*\(\d+ in all\)"),
    ],
    ids=["camera_missing", "depth_missing", "depth_unexpected", "camera_shape", "no_geometry_in_file"],
)
def test_checkpoint_problems_are_named_and_change_nothing(tmp_path, model, edit, message):
    state = _published(model)
    edit(state)
    save_state_dict(state, tmp_path / "model.pt")
    target = VGGTBackbone(geo_config()).fill_deterministic(3)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError, match=message):
        target.load_checkpoint(str(tmp_path / "model.pt"))
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items()), "a failed load changed weights"
    with pytest.raises(CheckpointError, match=message):
        VGGTBackbone.from_pretrained(str(tmp_path / "model.pt"), cfg=geo_config())


def test_heads_run_on_the_tokens_of_a_pass_already_made(model, images):
    """geometry() on a pass's tokens equals the forward with geometry, whether the pass
    kept every layer or only the ones the heads read (the track layers and the last)."""
    assert model.needed_layers() == [4, 11, 17, 23]
    assert model.needed_layers(geometry=True) == [4, 11, 17, 23]
    with torch.no_grad():
        full = model(images, return_tokens=True)
        geo = model.geometry(full.tokens, images, full.patch_start_idx)
        kept, start = model.encode(images, keep_layers=model.needed_layers(geometry=True))
        geo_kept = model.geometry(kept, images, start)
        fwd = model(images, geometry=True)
    assert isinstance(geo, GeometryOutput)
    assert len(geo.pose_encodings) == 3 and geo.pose_encoding.shape == (1, 3, 9)
    assert geo.depth.shape == (1, 3, 56, 42, 1) and geo.depth_conf.shape == (1, 3, 56, 42)
    assert geo.image_hw == (56, 42)
    assert (geo.depth > 0).all() and (geo.depth_conf > 1).all()
    assert (geo.pose_encoding[..., 7:] >= 0).all()  # fields of view through a ReLU
    for other in (geo_kept, fwd.geometry):
        assert torch.equal(other.depth, geo.depth) and torch.equal(other.depth_conf, geo.depth_conf)
        assert all(torch.equal(a, b) for a, b in zip(other.pose_encodings, geo.pose_encodings))
    E, K = geo.cameras()
    assert E.shape == (1, 3, 3, 4) and K.shape == (1, 3, 3, 3)
    assert torch.allclose(K[..., 0, 2], torch.tensor(21.0)) and torch.allclose(K[..., 1, 2], torch.tensor(28.0))
    # chunking the depth head over frames does not change it
    model.cfg.depth_head.frames_chunk_size = 2
    try:
        with torch.no_grad():
            chunked = model.geometry(full.tokens, images, full.patch_start_idx)
    finally:
        model.cfg.depth_head.frames_chunk_size = 8
    assert torch.allclose(chunked.depth, geo.depth, rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="last layer"):
        model.geometry([t if i != 23 else None for i, t in enumerate(full.tokens)], images, full.patch_start_idx)


def test_deterministic_weights_per_reference_group():
    """With the geometry heads on, the aggregator and track head get exactly the weights
    they get with them off (a pipeline's masks do not change), and the aggregator, camera
    and depth heads exactly the weights of a model of only those parts (the geometry
    fixture's model; its keys sort before track_head's, so the plain rule agrees)."""
    on = VGGTBackbone(geo_config(True)).fill_deterministic(5).state_dict()
    off = VGGTBackbone(geo_config(False)).fill_deterministic(5).state_dict()
    plain = fill_deterministic(VGGTBackbone(geo_config(True)), 5).state_dict()
    in_place = fill_deterministic_in_place(VGGTBackbone(geo_config(True)), 5).state_dict()
    assert all(torch.equal(plain[k], v) for k, v in in_place.items())  # the benchmarks' low-memory fill
    for k, v in off.items():
        assert torch.equal(on[k], v), k
    geometry = [k for k in on if k.startswith(("aggregator.", "camera_head.", "depth_head."))]
    assert any(k.startswith("camera_head.") for k in geometry) and any(k.startswith("depth_head.") for k in geometry)
    for k in geometry:
        assert torch.equal(on[k], plain[k]), k
    assert not torch.equal(on["track_head.tracker.fmap_norm.weight"], plain["track_head.tracker.fmap_norm.weight"])


def test_fixture_config_form():
    cfg = backbone_config_from_dict({
        "img_size": 126, "patch_size": 14, "embed_dim": 64, "depth": 24, "num_heads": 4, "patch_embed": "conv",
        "camera_head": {"dim_in": 128, "trunk_depth": 4, "num_heads": 16, "iterations": 4},
        "depth_head": {"dim_in": 128, "output_dim": 2, "activation": "exp", "conf_activation": "expp1"},
    })
    assert cfg.geometry_heads and cfg.camera_head.iterations == 4 and cfg.depth_head.features == 256
    nested = backbone_config_from_dict(dataclasses.asdict(cfg))
    assert nested == cfg
    assert not backbone_config_from_dict({"img_size": 126, "embed_dim": 64, "depth": 24, "num_heads": 4}).geometry_heads
    with pytest.raises(ValueError, match="depth_head.activation must be 'exp'"):
        backbone_config_from_dict({"embed_dim": 64, "depth_head": {"activation": "inv_log"}})
    with pytest.raises(ValueError, match=r"camera_head.dim_in 256 != 2 \* embed_dim \(128\)"):
        backbone_config_from_dict({"embed_dim": 64, "camera_head": {"dim_in": 256}})
    bad = geo_config()
    bad.depth_head.intermediate_layer_idx = [4, 11, 17, 30]
    with pytest.raises(ValueError, match="the depth head reads aggregator layer 30; depth must be > 30"):
        VGGTBackbone(bad)
