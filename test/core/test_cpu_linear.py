"""The oneDNN float32 linear path (vggts_ros.models.cpu_linear): same products as
``F.linear`` within float32 rounding, plain path for autograd and float64, cached weight
layouts rebuilt when a parameter changes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vggts_ros.config import HeadConfig
from vggts_ros.models import cpu_linear
from vggts_ros.models.deterministic import deterministic_state_dict
from vggts_ros.models.union_head import UnionSegmentationHead, decode_with_refinement

needs_onednn = pytest.mark.skipif(not cpu_linear.available(), reason="this torch build has no oneDNN linear kernel")


@needs_onednn
def test_linear_relu_and_residual_match_f_linear():
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(2, 300, 96, generator=g), torch.randn(40, 96, generator=g), torch.randn(40, generator=g)
    res = torch.randn(2, 300, 40, generator=g)
    ref = F.linear(x, w, b)
    with torch.inference_mode():
        assert torch.allclose(cpu_linear.linear(x, w, b), ref, atol=1e-4, rtol=1e-5)
        assert torch.allclose(cpu_linear.linear(x, w, b, relu=True), F.relu(ref), atol=1e-4, rtol=1e-5)
        assert torch.allclose(cpu_linear.linear_add(x, w, b, res), res + ref, atol=1e-4, rtol=1e-5)
        assert torch.allclose(cpu_linear.linear(x, w, b, gelu=True), F.gelu(ref), atol=1e-4, rtol=1e-5)
        assert torch.equal(cpu_linear.linear(x.double(), w.double(), b.double()), F.linear(x.double(), w.double(),
                                                                                          b.double()))


def test_relu_and_gelu_are_exclusive():
    with pytest.raises(ValueError, match="exclusive"):
        cpu_linear.linear(torch.ones(1, 2), torch.ones(3, 2), relu=True, gelu=True)


def test_gradients_flow_on_the_plain_path():
    layer = nn.Linear(8, 4)
    x = torch.randn(3, 8, requires_grad=True)
    cpu_linear.linear_add(x, layer.weight, layer.bias, torch.zeros(3, 4)).sum().backward()
    assert x.grad is not None and layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def small_head():
    head = UnionSegmentationHead(HeadConfig(img_size=126, sa_tokens=9))
    head.load_state_dict(deterministic_state_dict(head, 1))
    g = torch.Generator().manual_seed(1)
    feat = torch.randn(2, 2, 128, 63, 63, generator=g)
    src, tar = torch.rand(2, 5, 2, generator=g) * 125, torch.rand(2, 5, 2, generator=g) * 125
    mask = torch.zeros(2, 126, 126)
    mask[:, 30:80, 40:90] = 1

    def run(**kw):
        with torch.inference_mode():
            return decode_with_refinement(head, head.encode(feat, src, tar, mask), 1, **kw)[0]

    return head, run


@needs_onednn
def test_head_output_matches_the_plain_path_and_follows_weight_updates():
    head, run = small_head()
    fast = run()
    with cpu_linear.enabled(False):
        plain = run()
    scale = float(plain.abs().max())
    assert float((fast - plain).abs().max()) <= 1e-5 * scale
    with torch.no_grad():  # an in-place update must rebuild the cached conv-as-matrix weights
        head.mask_decoder.transformer.layers[0].downsampling.weight.mul_(1.5)
        head.mask_decoder.transformer.layers[1].upsampling.weight.mul_(0.5)
    updated = run()
    with cpu_linear.enabled(False):
        updated_plain = run()
    assert float((updated - fast).abs().max()) > 1e-3 * scale
    assert float((updated - updated_plain).abs().max()) <= 1e-5 * scale


def test_head_built_under_inference_mode_runs():
    with torch.inference_mode():  # inference-tensor parameters carry no version counter
        head = UnionSegmentationHead(HeadConfig(img_size=126, sa_tokens=9))
        out = head(torch.randn(1, 2, 128, 63, 63), torch.rand(1, 5, 2) * 125, torch.rand(1, 5, 2) * 125,
                   torch.ones(1, 126, 126))[0]
    assert out.shape == (1, 1, 126, 126) and torch.isfinite(out).all()


def small_backbone():
    """A VGGT backbone with the DINOv2 patch embedding (2 blocks), 2 aggregator blocks
    and the track head, deterministic weights, 2 views at 126 px."""
    from vggts_ros.config import AggregatorConfig, BackboneConfig, TrackHeadConfig
    from vggts_ros.models.backbone import VGGTBackbone
    from vggts_ros.models.deterministic import fill_deterministic

    cfg = BackboneConfig(AggregatorConfig(img_size=126, embed_dim=384, depth=24, num_heads=6,
                                          patch_embed="dinov2_vits14_reg", patch_embed_depth=2),
                         TrackHeadConfig(corr_levels=4))
    backbone = fill_deterministic(VGGTBackbone(cfg).eval(), 0)
    images = torch.rand(1, 2, 3, 126, 126, generator=torch.Generator().manual_seed(2))
    return backbone, images


@needs_onednn
def test_backbone_fast_path_matches_the_plain_path_and_leaves_float64_alone():
    """The aggregator's blocks (QKV, projection, MLP with its GELU) and the DPT projections
    take the oneDNN path in float32: the same features within float32 rounding; the tracker
    does not (its iterations amplify rounding: bit-identical with the path on and off);
    float64 runs never take it (bit-identical with the path on and off)."""
    backbone, images = small_backbone()
    query = torch.rand(1, 6, 2, generator=torch.Generator().manual_seed(3)) * 125
    with torch.inference_mode():
        fast = backbone(images).features
        with cpu_linear.enabled(False):
            plain = backbone(images).features
        scale = float(plain.abs().max())
        err = float((fast - plain).abs().max())
        assert 0 < err <= 1e-5 * scale  # 0 would mean the fast path was not taken
        tracked = backbone.track(plain, query)[0][-1]
        with cpu_linear.enabled(False):
            assert torch.equal(backbone.track(plain, query)[0][-1], tracked)
        b64 = backbone.double()
        f64 = b64(images.double()).features
        with cpu_linear.enabled(False):
            assert torch.equal(b64(images.double()).features, f64)


@needs_onednn
def test_head_image_side_in_many_chunks_matches_the_plain_path(monkeypatch):
    """The CPU float32 path runs the head's image side a few coarse rows at a time (the
    token->image attention combined over chunks by log-sum-exp, the logits row by row).
    With chunks of one coarse row (9 chunks per block, final attention and logits in many
    pieces) the logits are those of the plain path within float32 rounding, and the same
    as with one chunk."""
    from vggts_ros.models.union_head import two_way_transformer

    if two_way_transformer._FLASH_CPU is None:
        pytest.skip("this torch build has no CPU attention kernel returning its log-sum-exp")
    head, run = small_head()
    one_chunk = run()
    monkeypatch.setattr(two_way_transformer, "CHUNK_BYTES", 1)
    many = run()
    with cpu_linear.enabled(False):
        plain = run()
    scale = float(plain.abs().max())
    assert float((many - plain).abs().max()) <= 1e-5 * scale
    assert float((many - one_chunk).abs().max()) <= 1e-5 * scale
    assert float((many - plain).abs().max()) > 0  # the chunked path was taken


@needs_onednn
def test_chunked_block_leaves_the_callers_keys_alone():
    """A block given keys it does not own copies them before its in-place updates; the
    transformer hands over the keys it built itself."""
    head, _ = small_head()
    block = head.mask_decoder.transformer.layers[1]
    g = torch.Generator().manual_seed(4)
    keys = torch.randn(2, 63 * 126, 128, generator=g)
    queries, pe = torch.randn(2, 16, 128, generator=g), torch.randn(2, 16, 128, generator=g)
    ca_pe = head.prompt_encoder.cross_attn_pe()
    sa_pe = head.prompt_encoder.self_attn_pe()
    before = keys.clone()
    with torch.inference_mode():
        _, out = block(queries, keys, pe, ca_pe, sa_pe, (63, 63))
        with cpu_linear.enabled(False):
            _, plain = block(queries, keys, pe, ca_pe, sa_pe, (63, 63))
    assert torch.equal(keys, before)
    assert float((out - plain).abs().max()) <= 1e-5 * float(plain.abs().max())


@needs_onednn
def test_folded_layer_scale_follows_updates_of_gamma():
    """The fast path folds each block's layer scale into the product before it; changing
    ``gamma`` in place rebuilds the folded weights (the output follows, and still matches
    the plain path)."""
    from vggts_ros.models.layers import Block

    block = Block(64, 4, init_values=0.5, qk_norm=True, onednn=True).eval()
    x = torch.randn(2, 30, 64, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        fast = block(x)
        with cpu_linear.enabled(False):
            plain = block(x)
    assert 0 < float((fast - plain).abs().max()) <= 1e-5 * float(plain.abs().max())
    with torch.no_grad():
        block.ls1.gamma.mul_(3.0)
        block.ls2.gamma.mul_(-1.0)
    with torch.inference_mode():
        updated = block(x)
        with cpu_linear.enabled(False):
            updated_plain = block(x)
    assert float((updated - fast).abs().max()) > 1e-2
    assert float((updated - updated_plain).abs().max()) <= 1e-5 * float(updated_plain.abs().max())
