"""The VGGT backbone used by VGGT-S: aggregator + track head, loadable from ``model.pt``.

Only ``aggregator.*`` and ``track_head.*`` of the published VGGT-1B checkpoint are used;
the camera, depth and point heads are skipped. Heads run in the parameters' precision
(float32, or float64 after ``.double()``); the aggregator can optionally run under
bfloat16/float16 autocast.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from ..checkpoint import CheckpointError, load_exact, read_state_dict, resolve_checkpoint, select_prefixes
from ..config import AggregatorConfig, BackboneConfig, TrackHeadConfig, from_dict, vggt_1b_backbone
from .aggregator import Aggregator
from .heads.track_head import TrackHead

CHECKPOINT_FILENAME = "model.pt"
BACKBONE_PREFIXES = ("aggregator.", "track_head.")

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def parse_dtype(dtype: Union[str, torch.dtype, None]) -> torch.dtype:
    """Accept ``None``/``"float32"``/``"bfloat16"``/``"float16"`` (or a torch dtype)."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        value = dtype
    else:
        value = _DTYPES.get(str(dtype).lower().replace("torch.", ""))
    if value not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"unsupported backbone dtype {dtype!r}; use float32, bfloat16 or float16")
    return value


def autocast_context(device: torch.device, dtype: Optional[torch.dtype]):
    """Autocast to ``dtype`` on ``device``; ``None``/float32 explicitly disables any outer
    autocast. Devices without autocast support (e.g. ``meta``) get a no-op context."""
    kind = torch.device(device).type
    try:
        if dtype is None or dtype == torch.float32:
            return torch.autocast(device_type=kind, enabled=False)
        return torch.autocast(device_type=kind, dtype=dtype)
    except RuntimeError:
        return contextlib.nullcontext()


def _param_dtype(module: nn.Module) -> torch.dtype:
    """dtype of ``module``'s first floating parameter (float32 when it has none)."""
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def backbone_config_from_dict(data: Mapping[str, Any]) -> BackboneConfig:
    """Build a :class:`BackboneConfig` from a nested ``{"aggregator": ..., "track_head": ...}``
    dict or from the flat form of the reference fixtures (aggregator keys at the top level,
    ``track_head`` nested, optionally with a redundant ``dim_in`` that must equal 2*embed_dim)."""
    data = dict(data)
    if "aggregator" in data:
        agg = from_dict(AggregatorConfig, data.pop("aggregator"))
    else:
        track = data.pop("track_head", None)
        agg = from_dict(AggregatorConfig, {k: v for k, v in data.items()})
        data = {"track_head": track} if track is not None else {}
    track = dict(data.pop("track_head", None) or {})
    if data:
        raise ValueError(f"BackboneConfig: unknown key(s) {sorted(data)}")
    dim_in = track.pop("dim_in", None)
    if dim_in is not None and int(dim_in) != 2 * agg.embed_dim:
        raise ValueError(f"track_head.dim_in {dim_in} != 2 * embed_dim ({2 * agg.embed_dim})")
    return BackboneConfig(agg, from_dict(TrackHeadConfig, track))


@dataclass
class BackboneOutput:
    """Result of one backbone pass.

    ``features``: DPT track features ``[B, S, C, H/2, W/2]``; ``coords``: final track
    coordinates ``[B, S, N, 2]`` in image pixels (None without query points);
    ``coord_iters``: every iteration's coordinates; ``vis``/``conf``: ``[B, S, N]``;
    ``tokens``/``patch_start_idx``: the aggregator output when requested.
    """

    features: torch.Tensor
    coords: Optional[torch.Tensor] = None
    vis: Optional[torch.Tensor] = None
    conf: Optional[torch.Tensor] = None
    coord_iters: List[torch.Tensor] = dataclasses.field(default_factory=list)
    tokens: Optional[List[Optional[torch.Tensor]]] = None
    patch_start_idx: Optional[int] = None


class VGGTBackbone(nn.Module):
    """Aggregator + track head with the state-dict layout of VGGT-1B (``aggregator.*``, ``track_head.*``)."""

    def __init__(self, cfg: Optional[BackboneConfig] = None, dtype: Union[str, torch.dtype, None] = None) -> None:
        super().__init__()
        self.cfg = cfg or vggt_1b_backbone()
        agg, th = self.cfg.aggregator, self.cfg.track_head
        self.aggregator = Aggregator(agg)
        self.track_head = TrackHead(
            dim_in=2 * agg.embed_dim,
            patch_size=agg.patch_size,
            features=th.features,
            iters=th.iters,
            predict_conf=th.predict_conf,
            stride=th.stride,
            corr_levels=th.corr_levels,
            corr_radius=th.corr_radius,
            hidden_size=th.hidden_size,
        )
        deepest = max(self.track_head.feature_extractor.intermediate_layer_idx)
        if deepest >= agg.depth:
            raise ValueError(f"the track head reads aggregator layer {deepest}; depth must be > {deepest}, got {agg.depth}")
        self.dtype = dtype

    # -- precision ---------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        """Autocast precision of the aggregator (float32 means no autocast)."""
        return self._dtype

    @dtype.setter
    def dtype(self, value: Union[str, torch.dtype, None]) -> None:
        self._dtype = parse_dtype(value)

    # -- loading -----------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls, source: str, cfg: Optional[BackboneConfig] = None, map_location: Union[str, torch.device] = "cpu"
    ) -> "VGGTBackbone":
        """Build the network (VGGT-1B layout unless ``cfg`` says otherwise) and load
        ``model.pt`` from a file, a directory or a Hugging Face repo id."""
        state = cls._read_backbone_state(source)
        # Built without initialising 1B random weights: allocate, then fill from the file.
        with torch.device("meta"):
            model = cls(cfg)
        model = model.to_empty(device=map_location)
        load_exact(model, state, what=f"VGGT checkpoint {source}")
        return model.eval()

    @staticmethod
    def _read_backbone_state(source: str) -> Dict[str, torch.Tensor]:
        path = resolve_checkpoint(source, CHECKPOINT_FILENAME)
        state = select_prefixes(read_state_dict(path), BACKBONE_PREFIXES)
        if not state:
            raise CheckpointError(f"{path} holds no aggregator./track_head. keys; is it a VGGT checkpoint?")
        return state

    def load_checkpoint(self, source: str) -> "VGGTBackbone":
        """Load the ``aggregator.``/``track_head.`` entries of a VGGT checkpoint, requiring
        exactly the keys and shapes of this network (raises :class:`CheckpointError`)."""
        load_exact(self, self._read_backbone_state(source), what=f"VGGT checkpoint {source}")
        return self

    # -- inference pieces ----------------------------------------------------------------
    @staticmethod
    def _as_batch(images: torch.Tensor) -> torch.Tensor:
        if images.dim() == 4:
            images = images.unsqueeze(0)
        if images.dim() != 5 or images.shape[2] != 3:
            raise ValueError(f"images must be [B, S, 3, H, W] or [S, 3, H, W], got {tuple(images.shape)}")
        return images

    def encode(
        self, images: torch.Tensor, keep_layers: Optional[List[int]] = None
    ) -> Tuple[List[Optional[torch.Tensor]], int]:
        """Aggregate ``images`` (``[B,S,3,H,W]`` or ``[S,3,H,W]``, values in [0, 1]) into the
        per-layer token list and the index where patch tokens start. Images are cast to the
        parameters' dtype; tokens come back in that dtype (float32, or float64 for a
        ``.double()`` model) even when the aggregator runs under reduced-precision autocast."""
        dtype = _param_dtype(self.aggregator)
        images = self._as_batch(images).to(dtype)
        with autocast_context(images.device, self._dtype):
            tokens, start = self.aggregator(images, keep_layers=keep_layers)
        return [t.to(dtype) if t is not None else None for t in tokens], start

    def features(self, tokens_list: List[torch.Tensor], images: torch.Tensor, patch_start_idx: int) -> torch.Tensor:
        """DPT track features ``[B, S, C, H/2, W/2]`` in the track head's parameter dtype."""
        images = self._as_batch(images)
        dtype = _param_dtype(self.track_head.feature_extractor)
        with autocast_context(images.device, None):
            tokens = [t.to(dtype) if t is not None else None for t in tokens_list]
            return self.track_head.features(tokens, images, patch_start_idx)

    def track(
        self, features: torch.Tensor, query_points: torch.Tensor, iters: Optional[int] = None
    ) -> Tuple[List[torch.Tensor], torch.Tensor, Optional[torch.Tensor]]:
        """Track ``query_points`` (``[B, N, 2]`` or ``[N, 2]``, x/y pixels in frame 0) through
        all frames. Returns (coords per iteration ``[B,S,N,2]``, vis ``[B,S,N]``, conf ``[B,S,N]``)."""
        if query_points.dim() == 2:
            query_points = query_points.unsqueeze(0)
        dtype = _param_dtype(self.track_head.tracker)
        with autocast_context(features.device, None):
            return self.track_head.track(features.to(dtype), query_points.to(dtype), iters)

    def needed_layers(self) -> List[int]:
        """Token layers read by the track head's DPT decoder."""
        return list(self.track_head.feature_extractor.intermediate_layer_idx)

    def forward(
        self,
        images: torch.Tensor,
        query_points: Optional[torch.Tensor] = None,
        *,
        iters: Optional[int] = None,
        return_tokens: bool = False,
    ) -> BackboneOutput:
        """One aggregator pass, the track features, and (with query points) the tracks.

        Without ``return_tokens`` only the layers the DPT decoder reads are kept in memory.
        """
        images = self._as_batch(images)
        keep = None if return_tokens else self.needed_layers()
        tokens, start = self.encode(images, keep_layers=keep)
        feats = self.features(tokens, images, start)
        out = BackboneOutput(features=feats, tokens=tokens if return_tokens else None, patch_start_idx=start)
        if query_points is not None:
            coord_iters, vis, conf = self.track(feats, query_points, iters)
            out.coord_iters, out.coords, out.vis, out.conf = coord_iters, coord_iters[-1], vis, conf
        return out
