"""``UnionSegmentationHead.from_pretrained`` reads files in the ``main_exp.pth`` layout."""


import pytest
import torch

from conftest import load_fixture
from vggts_ros.checkpoint import CheckpointError
from helpers.head_fixture import fixture_features, head_config
from vggts_ros.models.deterministic import fill_deterministic
from vggts_ros.models.union_head import CHECKPOINT_FILENAME, UnionSegmentationHead


@pytest.fixture(scope="module")
def setup():
    fx = load_fixture("vggts_head.pt")
    cfg = head_config(fx)
    model = fill_deterministic(UnionSegmentationHead(cfg).eval(), fx["weight_seed"])
    feat = fixture_features(fx)
    with torch.no_grad():
        out = model(feat, fx["src_points"], fx["tar_points"], fx["src_masks"])
    return fx, cfg, model, feat, out


def _save(path, state, prefix=""):
    payload = {
        "model": {prefix + k: v.clone() for k, v in state.items()},
        "optimizer": {"state": {}, "param_groups": [{"lr": 5e-5, "weight_decay": 1e-4, "params": [0, 1]}]},
        "scheduler": {"milestones": {8: 1, 11: 1}, "last_epoch": 12},
        "epoch": 12,
    }
    torch.save(payload, str(path))
    return path


@pytest.mark.parametrize("prefix", ["", "module."])
def test_loads_and_matches(tmp_path, setup, prefix):
    fx, cfg, model, feat, (full, low) = setup
    path = _save(tmp_path / CHECKPOINT_FILENAME, model.state_dict(), prefix)
    loaded = UnionSegmentationHead.from_pretrained(path, cfg)
    assert not loaded.training
    with torch.no_grad():
        full2, low2 = loaded(feat, fx["src_points"], fx["tar_points"], fx["src_masks"])
    assert torch.equal(full, full2) and torch.equal(low, low2)
    # A directory holding main_exp.pth works too.
    from_dir = UnionSegmentationHead.from_pretrained(tmp_path, cfg).state_dict()
    assert all(torch.equal(v, from_dir[k]) for k, v in model.state_dict().items())


def _expect_refusal(tmp_path, cfg, state, *names):
    path = _save(tmp_path / "bad.pth", state)
    with pytest.raises(CheckpointError) as err:
        UnionSegmentationHead.from_pretrained(path, cfg)
    for name in names:
        assert name in str(err.value)


def test_refuses_missing_key(tmp_path, setup):
    _, cfg, model, _, _ = setup
    state = dict(model.state_dict())
    key = "mask_decoder.transformer.layers.1.norm4.bias"
    del state[key]
    _expect_refusal(tmp_path, cfg, state, "missing", key)


def test_refuses_renamed_key(tmp_path, setup):
    _, cfg, model, _, _ = setup
    state = dict(model.state_dict())
    old, new = "prompt_encoder.src_point_pe.weight", "prompt_encoder.source_point_pe.weight"
    state[new] = state.pop(old)
    _expect_refusal(tmp_path, cfg, state, old, new)


def test_refuses_wrong_shape(tmp_path, setup):
    _, cfg, model, _, _ = setup
    state = dict(model.state_dict())
    key = "mask_decoder.transformer.layers.0.downsampling.weight"
    state[key] = torch.zeros(8, 128, 7, 7)
    _expect_refusal(tmp_path, cfg, state, "shape", key)


def test_refuses_missing_file(tmp_path, setup):
    _, cfg, _, _, _ = setup
    with pytest.raises(CheckpointError):
        UnionSegmentationHead.from_pretrained(tmp_path / "nothing_here.pth", cfg)
