"""Temporal VGGT-S: the memory modules leave the head bit-identical until trained, banks
reset when a stream cannot continue, temporal weights load strictly from their own file,
and "image as video" clips have the properties training relies on."""

import dataclasses

import pytest
import torch

from conftest import assert_close_ref, load_fixture
from helpers.head_fixture import fixture_features, head_config
from vggts_ros.checkpoint import CheckpointError, save_state_dict
from vggts_ros.models.deterministic import fill_deterministic
from vggts_ros.models.temporal import MemoryBank, TemporalConfig, TemporalMemory, load_temporal, save_temporal
from vggts_ros.models.union_head import UnionSegmentationHead
from vggts_ros.temporal import TemporalState


@pytest.fixture(scope="module")
def fx():
    return load_fixture("vggts_head.pt")


@pytest.fixture(scope="module")
def head(fx):
    return fill_deterministic(UnionSegmentationHead(head_config(fx)).eval(), fx["weight_seed"])


def _one(ctx, i):
    return dataclasses.replace(ctx, tokens=ctx.tokens[i:i + 1], src_map=ctx.src_map[i:i + 1],
                               tar_feat=ctx.tar_feat[i:i + 1], src_down0=ctx.src_down0[i:i + 1])


@pytest.fixture(scope="module")
def small():
    """A smoke-size head (84 px, 32 channels) and one context on seeded random features."""
    from vggts_ros.training.config import smoke_head

    torch.manual_seed(0)
    h = UnionSegmentationHead(smoke_head()).eval()
    gen = torch.Generator().manual_seed(1)
    feats = torch.randn(1, 2, 32, 42, 42, generator=gen)
    pts = torch.rand(1, 5, 2, generator=gen) * 83
    mask = torch.zeros(1, 84, 84)
    mask[:, 20:60, 25:55] = 1
    with torch.no_grad():
        return h, h.encode(feats, pts, pts, mask)


@pytest.fixture(scope="module")
def contexts(fx, head):
    """Per-sample head contexts of the reference head fixture (batch 2)."""
    with torch.no_grad():
        ctx = head.encode(fixture_features(fx), fx["src_points"], fx["tar_points"], fx["src_masks"])
    return [_one(ctx, i) for i in range(2)]


# ------------------------------------------------------------------------------ zero gate
def test_zero_gate_and_switched_off_are_bit_identical_to_the_plain_head(fx, head, contexts):
    tm = TemporalMemory.seeded(head.cfg, TemporalConfig(memory_frames=1, first_confidence=0.0), seed=0).eval()
    assert torch.count_nonzero(tm.gate) == 0
    state = TemporalState(tm)
    with torch.no_grad():
        for i, ctx in enumerate(contexts):
            plain = head.decode(ctx)
            plain = head.decode(ctx, plain[1])
            assert_close_ref(plain[0], fx["pass1_pred"][i:i + 1], "pass1_pred")  # the reference's function
            off = state.step(i, "exo2", head, ctx, stamp=0.0, source_version=1, size=(126, 126), enabled=False)
            assert torch.equal(off[0], plain[0]) and torch.equal(off[1], plain[1])
            for frame in range(3):  # the bank fills (and overflows) with real predictions
                got = state.step(i, "exo1", head, ctx, stamp=0.1 * frame, source_version=1, size=(126, 126))
                assert torch.equal(got[0], plain[0]) and torch.equal(got[1], plain[1]), f"sample {i} frame {frame}"
    assert state.bank_sizes() == {"0/exo1": 2, "1/exo1": 2}  # 1 recent + the first; exo2 never written
    # the gate is what makes the memory matter: open it and the output moves
    with torch.no_grad():
        tm.gate.fill_(0.5)
        moved = state.step(0, "exo1", head, contexts[0], stamp=0.3, source_version=1, size=(126, 126))
        plain = head.predict(fixture_features(fx)[:1], fx["src_points"][:1], fx["tar_points"][:1],
                             fx["src_masks"][:1], refine_iterations=1)
    assert (moved[0] - plain[0]).abs().max() > 1e-3


def test_condition_with_empty_bank_returns_the_context_itself(small):
    head, ctx = small
    tm = TemporalMemory.seeded(head.cfg, TemporalConfig(), seed=0)
    assert tm.condition(head, ctx, tm.new_bank()) is ctx
    assert tm.condition(head, ctx, None) is ctx
    assert tm.side == head.cfg.sa_tokens  # default: the head's self-attention grid


# ------------------------------------------------------------------------------ bank
def test_bank_keeps_last_k_and_the_first_confident_entry():
    bank = MemoryBank(capacity=3, keep_first=True)
    assert len(bank) == 0 and bank.read(None) is None
    entries = [torch.full((2, 4, 8), float(i)) for i in range(6)]
    bank.add(entries[0], confident=False)
    bank.add(entries[1], confident=True)
    for e in entries[2:]:
        bank.add(e, confident=True)
    assert len(bank) == 4 and bank.added == 6
    assert torch.equal(bank.first, entries[1])  # the first *confident* one
    assert [float(t[0, 0, 0]) for t in bank.recent] == [3.0, 4.0, 5.0]

    class Enc:  # position tables: spatial zero, age a -> a
        def position(self, device=None):
            return torch.zeros(1, 4, 8)

        def age_encoding(self, age):
            return torch.full((1, 1, 8), float(age))

    mem, pos = bank.read(Enc())
    assert mem.shape == (2, 16, 8) and pos.shape == (2, 16, 8)
    assert mem[0, ::4, 0].tolist() == [1.0, 3.0, 4.0, 5.0]  # first, then oldest -> newest
    assert pos[0, ::4, 0].tolist() == [0.0, 3.0, 2.0, 1.0]  # age 0 = first, 1 = newest
    with pytest.raises(ValueError, match="do not match"):
        bank.add(torch.zeros(2, 5, 8))
    bank.reset()
    assert len(bank) == 0 and bank.first is None and bank.added == 0
    no_first = MemoryBank(2, keep_first=False)
    for e in entries:
        no_first.add(e, confident=True)
    assert len(no_first) == 2 and no_first.first is None


def test_stream_resets_on_source_size_stale_and_clear(small):
    head, ctx = small
    tm = TemporalMemory.seeded(head.cfg, TemporalConfig(memory_frames=4, stale_after_s=0.5), seed=0).eval()
    state = TemporalState(tm)
    kw = dict(source_version="mask-a", size=(480, 640))

    def step(obj, cam, stamp, **over):
        with torch.no_grad():
            state.step(obj, cam, head, ctx, stamp=stamp, **dict(kw, **over))
        return len(state.stream(obj, cam).bank)

    assert [step(1, "exo", 0.1 * i) for i in range(3)] == [1, 2, 3]
    assert step(1, "exo", 0.35, source_version="mask-b") == 1  # replaced source mask
    assert step(1, "exo", 0.4, source_version="mask-b") == 2
    assert step(1, "exo", 0.45, source_version="mask-b", size=(240, 320)) == 1  # target size changed
    assert step(1, "exo", 2.0, source_version="mask-b", size=(240, 320)) == 1  # stale: 1.55 s gap
    assert step(1, "exo", 1.9, source_version="mask-b", size=(240, 320)) == 1  # stamp went back
    s = state.stream(1, "exo")
    assert dict(s.resets) == {"source": 1, "size": 1, "stale": 2}
    assert step(1, "exo", 1.95, source_version="mask-b", size=(240, 320)) == 2
    step(2, "exo", 0.0)
    step(1, "ego", 0.0)
    assert state.bank_sizes() == {"1/ego": 1, "1/exo": 2, "2/exo": 1}
    assert state.clear(1) == 2 and state.bank_sizes() == {"2/exo": 1}
    assert step(1, "exo", 3.0, source_version="mask-b", size=(240, 320)) == 1  # a cleared object starts empty
    assert state.clear() == 2 and state.bank_sizes() == {}


# ------------------------------------------------------------------------------ checkpoints
def test_temporal_weights_roundtrip_and_strict_loading(tmp_path, small):
    head, ctx = small
    cfg = TemporalConfig(memory_frames=2, blocks=1)
    tm = TemporalMemory.seeded(head.cfg, cfg, seed=3).eval()
    with torch.no_grad():
        tm.gate.fill_(0.3)
    path = tmp_path / "temporal.pth"
    save_temporal(tm, path)
    loaded = load_temporal(tmp_path, head.cfg)  # a directory holding temporal.pth works too
    assert loaded.cfg == cfg
    assert all(torch.equal(a, b) for a, b in zip(tm.state_dict().values(), loaded.state_dict().values()))
    b1, b2 = tm.new_bank(), loaded.new_bank()
    with torch.no_grad():
        for _ in range(2):
            out1 = tm.decode(head, ctx, b1)
            out2 = loaded.decode(head, ctx, b2)
    assert torch.equal(out1[0], out2[0])

    def write(mutate):
        obj = torch.load(path, weights_only=True)
        mutate(obj)
        p = tmp_path / "bad.pth"
        torch.save(obj, p)
        return p

    extra = write(lambda o: o["temporal"].__setitem__("memory_attention.extra.weight", torch.zeros(1)))
    with pytest.raises(CheckpointError, match=r"unexpected keys: memory_attention\.extra\.weight"):
        load_temporal(extra, head.cfg)
    missing = write(lambda o: o["temporal"].pop("gate"))
    with pytest.raises(CheckpointError, match="missing keys: gate"):
        load_temporal(missing, head.cfg)
    shaped = write(lambda o: o["temporal"].__setitem__("gate", torch.zeros(3)))
    with pytest.raises(CheckpointError, match="shape mismatch: gate"):
        load_temporal(shaped, head.cfg)
    with pytest.raises(CheckpointError, match=r"blocks \(file 1, requested 2\)"):
        load_temporal(path, head.cfg, TemporalConfig(memory_frames=2, blocks=2))
    with pytest.raises(CheckpointError, match="embed_dim"):
        load_temporal(path, dataclasses.replace(head.cfg, embed_dim=64, num_heads=4))
    # the streaming fields of a caller's config win; the architecture must agree
    assert load_temporal(path, head.cfg, TemporalConfig(memory_frames=2, blocks=1, stale_after_s=9.0)).cfg.stale_after_s == 9.0

    # main_exp.pth stays the head's file: it loads as before and is refused as temporal weights
    head_file = tmp_path / "main_exp.pth"
    save_state_dict(head.state_dict(), head_file, wrap="model")
    again = UnionSegmentationHead.from_pretrained(str(head_file), cfg=head.cfg)
    assert all(torch.equal(a, b) for a, b in zip(head.state_dict().values(), again.state_dict().values()))
    with pytest.raises(CheckpointError, match="head checkpoint"):
        load_temporal(head_file, head.cfg)
    with pytest.raises(CheckpointError):
        UnionSegmentationHead.from_pretrained(str(path), cfg=head.cfg)
    with pytest.raises(CheckpointError, match="not found"):
        load_temporal(tmp_path / "nope.pth", head.cfg)


def test_config_errors():
    for bad in (dict(memory_frames=0), dict(tokens=0), dict(blocks=0), dict(first_confidence=2.0),
                dict(stale_after_s=0)):
        with pytest.raises(ValueError):
            TemporalConfig(**bad).validate()
    with pytest.raises(ValueError, match=r"temporal config: unknown key\(s\) \['memory_frame'\]"):
        TemporalConfig.from_dict({"memory_frame": 3})
