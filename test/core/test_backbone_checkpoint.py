"""Checkpoint layout and loading of the VGGT backbone."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import fixture_path
from vggts_ros.checkpoint import CheckpointError, save_state_dict
from vggts_ros.config import AggregatorConfig, BackboneConfig, TrackHeadConfig, vggt_1b_backbone
from vggts_ros.models.backbone import BackboneOutput, VGGTBackbone
from vggts_ros.models.deterministic import fill_deterministic

PREFIXES = ("aggregator.", "track_head.")


def small_config() -> BackboneConfig:
    """Cheap config with every structural feature of the real one (DPT reads layers 4..23)."""
    return BackboneConfig(
        AggregatorConfig(img_size=56, embed_dim=32, depth=24, num_heads=2, patch_embed="conv"),
        TrackHeadConfig(features=32, iters=2, corr_levels=3, corr_radius=2, hidden_size=64),
    )


def _published_shapes(prefixes) -> dict:
    path = fixture_path("vggt_1b_state_dict.json")
    if not path.is_file():
        pytest.fail(f"reference fixture {path} is missing")
    published = json.loads(path.read_text())
    return {k: tuple(v) for k, v in published.items() if k.startswith(prefixes)}


def _assert_same_layout(ours: dict, expected: dict) -> None:
    assert sorted(set(expected) - set(ours)) == [], "keys of model.pt missing from our network"
    assert sorted(set(ours) - set(expected)) == [], "keys of our network not in model.pt"
    wrong = {k: (ours[k], expected[k]) for k in expected if ours[k] != expected[k]}
    assert not wrong, f"shape mismatches: {list(wrong.items())[:5]}"


def test_full_size_keys_and_shapes_match_vggt_1b():
    expected = _published_shapes(PREFIXES)
    with torch.device("meta"):
        model = VGGTBackbone(vggt_1b_backbone())
    _assert_same_layout({k: tuple(v.shape) for k, v in model.state_dict().items()}, expected)


def test_full_size_geometry_heads_match_vggt_1b():
    """With the geometry heads on, the network holds exactly model.pt's aggregator, track,
    camera and depth head entries (69 camera_head and 62 depth_head keys); the point head
    stays out."""
    geometry = ("camera_head.", "depth_head.")
    expected = _published_shapes(PREFIXES + geometry)
    assert sum(k.startswith("camera_head.") for k in expected) == 69
    assert sum(k.startswith("depth_head.") for k in expected) == 62
    cfg = vggt_1b_backbone()
    cfg.geometry_heads = True
    with torch.device("meta"):
        model = VGGTBackbone(cfg)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    _assert_same_layout(ours, expected)
    assert ours["camera_head.trunk.3.mlp.fc1.weight"] == (8192, 2048)
    assert ours["depth_head.scratch.output_conv2.2.weight"] == (2, 32, 1, 1)
    assert VGGTBackbone.checkpoint_prefixes_for(cfg) == PREFIXES + geometry


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    model = VGGTBackbone(small_config()).eval()
    return fill_deterministic(model, 5)


@pytest.fixture(scope="module")
def small_inputs():
    gen = torch.Generator().manual_seed(11)
    images = torch.rand(1, 2, 3, 56, 42, generator=gen)
    query = torch.rand(1, 3, 2, generator=gen) * torch.tensor([41.0, 55.0])
    return images, query


def _published_layout(model: VGGTBackbone) -> dict:
    """Flat state dict like VGGT-1B's model.pt, including heads the backbone does not use."""
    state = dict(model.state_dict())
    state["camera_head.trunk.0.norm1.weight"] = torch.ones(8)
    state["depth_head.projects.0.weight"] = torch.zeros(4, 8, 1, 1)
    state["point_head.scratch.output_conv1.bias"] = torch.zeros(4)
    return state


def test_round_trip_through_published_layout(tmp_path, small_model, small_inputs):
    path = tmp_path / "model.pt"
    save_state_dict(_published_layout(small_model), path)
    loaded = VGGTBackbone.from_pretrained(str(path), cfg=small_config())
    for k, v in small_model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    from_dir = VGGTBackbone(small_config()).load_checkpoint(str(tmp_path))  # directory holding model.pt
    images, query = small_inputs
    with torch.no_grad():
        a = small_model(images, query)
        b = loaded(images, query)
        c = from_dir.eval()(images, query)
    assert isinstance(a, BackboneOutput)
    for other in (b, c):
        assert torch.equal(a.features, other.features)
        assert torch.equal(a.coords, other.coords)
        assert torch.equal(a.vis, other.vis) and torch.equal(a.conf, other.conf)


def test_missing_key_is_named(tmp_path, small_model):
    state = _published_layout(small_model)
    del state["aggregator.camera_token"]
    save_state_dict(state, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match=r"missing keys: .*aggregator\.camera_token"):
        VGGTBackbone.from_pretrained(str(tmp_path / "model.pt"), cfg=small_config())


def test_renamed_key_is_named(tmp_path, small_model):
    state = _published_layout(small_model)
    old = "track_head.tracker.updateformer.virual_tracks"
    state[old.replace("virual", "virtual")] = state.pop(old)
    save_state_dict(state, tmp_path / "model.pt")
    model = VGGTBackbone(small_config())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        model.load_checkpoint(str(tmp_path / "model.pt"))
    assert old in str(err.value) and "virtual_tracks" in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "failed load changed weights"


def test_missing_file_is_clear(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        VGGTBackbone.from_pretrained(str(tmp_path / "nope" / "model.pt"), cfg=small_config())


def test_repo_id_offline_is_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="facebook/VGGT-1B"):
        VGGTBackbone.from_pretrained("facebook/VGGT-1B")


def test_api_shapes_and_reduced_precision(small_model, small_inputs):
    images, query = small_inputs
    with torch.no_grad():
        tokens, start = small_model.encode(images[0])  # [S, 3, H, W] is accepted
        assert start == 5 and len(tokens) == 24
        assert tokens[0].shape == (1, 2, start + 4 * 3, 64) and tokens[0].dtype == torch.float32
        feats = small_model.features(tokens, images, start)
        assert feats.shape == (1, 2, 32, 28, 21)
        coords, vis, conf = small_model.track(feats, query[0], iters=3)
        assert len(coords) == 3 and coords[-1].shape == (1, 2, 3, 2)
        assert vis.shape == conf.shape == (1, 2, 3)
        assert torch.equal(coords[-1][:, 0], query)  # frame 0 stays at the query points
        out = small_model(images)
        assert out.coords is None and out.tokens is None and out.features.shape == feats.shape
        small_model.dtype = "bfloat16"
        try:
            low = small_model(images, query)
        finally:
            small_model.dtype = "float32"
    assert low.features.dtype == torch.float32 and low.coords.dtype == torch.float32
    assert torch.isfinite(low.features).all() and torch.isfinite(low.coords).all()
    rel = (low.features - feats).norm() / feats.norm()
    assert rel < 0.1, f"bfloat16 aggregator drifts too far from float32 ({rel:.3f})"


@pytest.mark.parametrize(
    "name,width,depth,heads",
    [
        ("dinov2_vits14_reg", 384, 12, 6),
        ("dinov2_vitb14_reg", 768, 12, 12),
        ("dinov2_vitl14_reg", 1024, 24, 16),
        ("dinov2_vitg2_reg", 1536, 40, 24),
    ],
)
def test_dinov2_variant_key_layout(name, width, depth, heads):
    """Every DINOv2-register variant builds with the checkpoint's key layout, and
    ``patch_embed_depth`` keeps only the first blocks."""
    from vggts_ros.models.aggregator import Aggregator

    with torch.device("meta"):
        full = Aggregator(AggregatorConfig(embed_dim=width, num_heads=heads, depth=1, patch_embed=name))
        cut = Aggregator(
            AggregatorConfig(embed_dim=width, num_heads=heads, depth=1, patch_embed=name, patch_embed_depth=2)
        )
    keys = {k: tuple(v.shape) for k, v in full.state_dict().items() if k.startswith("patch_embed.")}
    last = depth - 1
    assert keys["patch_embed.pos_embed"] == (1, 1 + 37 * 37, width)
    assert keys["patch_embed.register_tokens"] == (1, 4, width)
    assert keys["patch_embed.mask_token"] == (1, width)
    assert keys["patch_embed.patch_embed.proj.weight"] == (width, 3, 14, 14)
    assert keys[f"patch_embed.blocks.{last}.mlp.fc1.weight"] == (4 * width, width)
    assert keys[f"patch_embed.blocks.{last}.ls2.gamma"] == (width,)
    assert f"patch_embed.blocks.{depth}.norm1.weight" not in keys
    assert not any(".q_norm." in k for k in keys)
    cut_blocks = {k.split(".")[2] for k in cut.state_dict() if k.startswith("patch_embed.blocks.")}
    assert cut_blocks == {"0", "1"}
    with pytest.raises(ValueError, match="width"):
        Aggregator(AggregatorConfig(embed_dim=width + 8, num_heads=heads, depth=1, patch_embed=name))
