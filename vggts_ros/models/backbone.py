"""The VGGT backbone used by VGGT-S: aggregator + track head, loadable from ``model.pt``.

``aggregator.*`` and ``track_head.*`` of the published VGGT-1B checkpoint are always used.
With ``BackboneConfig.geometry_heads`` the camera and depth heads (``camera_head.*``,
``depth_head.*``) are built and loaded too, and :meth:`VGGTBackbone.geometry` runs them on
the tokens of a pass already made; otherwise they are skipped, like the point head always
is. Heads run in the parameters' precision (float32, or float64 after ``.double()``); the
aggregator can optionally run under bfloat16/float16 autocast.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from ..checkpoint import CheckpointError, load_exact, read_state_dict, resolve_checkpoint, select_prefixes
from ..config import (
    AggregatorConfig,
    BackboneConfig,
    CameraHeadConfig,
    DepthHeadConfig,
    TrackHeadConfig,
    from_dict,
    vggt_1b_backbone,
)
from .aggregator import Aggregator
from .deterministic import fill_deterministic_groups
from .heads.camera_head import CameraHead
from .heads.dpt_head import DPTHead
from .heads.track_head import TrackHead

CHECKPOINT_FILENAME = "model.pt"
BACKBONE_PREFIXES = ("aggregator.", "track_head.")
GEOMETRY_PREFIXES = ("camera_head.", "depth_head.")
# The deterministic weight rule fills each head group as the reference model that pins it
# down was filled: aggregator + track head (vggt_track_tiny.pt), aggregator + camera and
# depth heads (vggt_geometry_tiny.pt). The aggregator's values are the same in both (its
# keys sort first), and turning the geometry heads on leaves the track head's weights alone.
REFERENCE_WEIGHT_GROUPS = (("aggregator.", "track_head."), ("aggregator.",) + GEOMETRY_PREFIXES)
# The reference depth head's fixed settings (VGGT builds it with these).
DEPTH_HEAD_FIXED = {"output_dim": 2, "activation": "exp", "conf_activation": "expp1"}

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
    ``track_head`` / ``camera_head`` / ``depth_head`` nested, each optionally with a redundant
    ``dim_in`` that must equal 2*embed_dim). A ``camera_head`` or ``depth_head`` entry in the
    flat form turns the geometry heads on (both are built together); the depth head's
    ``output_dim`` / ``activation`` / ``conf_activation``, when given, must be VGGT's."""
    data = dict(data)
    heads = {k: data.pop(k) for k in ("track_head", "camera_head", "depth_head") if k in data}
    if "aggregator" in data:
        agg = from_dict(AggregatorConfig, data.pop("aggregator"))
        geometry = bool(data.pop("geometry_heads", False))
        if data:
            raise ValueError(f"BackboneConfig: unknown key(s) {sorted(data)}")
    else:
        agg = from_dict(AggregatorConfig, data)
        geometry = "camera_head" in heads or "depth_head" in heads
    sub = {}
    for name in heads:
        values = dict(heads[name] or {})
        dim_in = values.pop("dim_in", None)
        if dim_in is not None and int(dim_in) != 2 * agg.embed_dim:
            raise ValueError(f"{name}.dim_in {dim_in} != 2 * embed_dim ({2 * agg.embed_dim})")
        if name == "depth_head":
            for key, fixed in DEPTH_HEAD_FIXED.items():
                given = values.pop(key, fixed)
                if given != fixed:
                    raise ValueError(f"depth_head.{key} must be {fixed!r} (VGGT's depth head), got {given!r}")
        sub[name] = values
    return BackboneConfig(
        agg,
        from_dict(TrackHeadConfig, sub.get("track_head", {})),
        geometry_heads=geometry,
        camera_head=from_dict(CameraHeadConfig, sub.get("camera_head", {})),
        depth_head=from_dict(DepthHeadConfig, sub.get("depth_head", {})),
    )


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
    geometry: Optional["GeometryOutput"] = None


@dataclass
class GeometryOutput:
    """The camera and depth heads on one pass, in network pixels.

    ``pose_encodings``: the camera head's ``[B, S, 9]`` after every iteration (translation,
    quaternion x/y/z/w, vertical and horizontal field of view); ``depth``: ``[B, S, H, W, 1]``;
    ``depth_conf``: ``[B, S, H, W]``; ``image_hw``: the network input size they refer to.
    """

    pose_encodings: List[torch.Tensor]
    depth: torch.Tensor
    depth_conf: torch.Tensor
    image_hw: Tuple[int, int]

    @property
    def pose_encoding(self) -> torch.Tensor:
        """The last iteration's ``[B, S, 9]``."""
        return self.pose_encodings[-1]

    def cameras(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """Extrinsics ``[B, S, 3, 4]`` (camera from world) and intrinsics ``[B, S, 3, 3]``
        (network pixels) of the last iteration (:mod:`vggts_ros.geometry.camera`)."""
        from ..geometry.camera import pose_encoding_to_cameras

        return pose_encoding_to_cameras(self.pose_encoding, self.image_hw)


class VGGTBackbone(nn.Module):
    """Aggregator + track head with the state-dict layout of VGGT-1B (``aggregator.*``,
    ``track_head.*``), plus ``camera_head.*`` and ``depth_head.*`` with ``cfg.geometry_heads``."""

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
        self.camera_head: Optional[CameraHead] = None
        self.depth_head: Optional[DPTHead] = None
        if self.cfg.geometry_heads:
            cam, dep = self.cfg.camera_head, self.cfg.depth_head
            self.camera_head = CameraHead(
                dim_in=2 * agg.embed_dim,
                trunk_depth=cam.trunk_depth,
                num_heads=cam.num_heads,
                mlp_ratio=cam.mlp_ratio,
                init_values=cam.init_values,
                iterations=cam.iterations,
            )
            self.depth_head = DPTHead(
                dim_in=2 * agg.embed_dim,
                patch_size=agg.patch_size,
                features=dep.features,
                out_channels=dep.out_channels,
                intermediate_layer_idx=dep.intermediate_layer_idx,
                **DEPTH_HEAD_FIXED,
            )
            deepest = max(dep.intermediate_layer_idx)
            if deepest >= agg.depth:
                raise ValueError(
                    f"the depth head reads aggregator layer {deepest}; depth must be > {deepest}, got {agg.depth}"
                )
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
        cfg = cfg or vggt_1b_backbone()
        state = cls._read_backbone_state(source, cls.checkpoint_prefixes_for(cfg))
        # Built without initialising 1B random weights: allocate, then fill from the file.
        with torch.device("meta"):
            model = cls(cfg)
        model = model.to_empty(device=map_location)
        load_exact(model, state, what=f"VGGT checkpoint {source}")
        return model.eval()

    @staticmethod
    def checkpoint_prefixes_for(cfg: BackboneConfig) -> Tuple[str, ...]:
        """The ``model.pt`` key prefixes a network of ``cfg`` consumes (the rest are skipped)."""
        return BACKBONE_PREFIXES + (GEOMETRY_PREFIXES if cfg.geometry_heads else ())

    @staticmethod
    def _read_backbone_state(source: str, prefixes: Tuple[str, ...] = BACKBONE_PREFIXES) -> Dict[str, torch.Tensor]:
        path = resolve_checkpoint(source, CHECKPOINT_FILENAME)
        state = select_prefixes(read_state_dict(path), prefixes)
        if not state:
            raise CheckpointError(f"{path} holds no {'/'.join(prefixes)} keys; is it a VGGT checkpoint?")
        return state

    def load_checkpoint(self, source: str) -> "VGGTBackbone":
        """Load the ``aggregator.``/``track_head.`` entries of a VGGT checkpoint (and
        ``camera_head.``/``depth_head.`` with the geometry heads), requiring exactly the keys
        and shapes of this network (raises :class:`CheckpointError`; nothing changes then)."""
        state = self._read_backbone_state(source, self.checkpoint_prefixes_for(self.cfg))
        load_exact(self, state, what=f"VGGT checkpoint {source}")
        return self

    def fill_deterministic(self, seed: int) -> "VGGTBackbone":
        """The fixtures' deterministic weights, each head group drawn as its reference
        model was (:data:`REFERENCE_WEIGHT_GROUPS`)."""
        groups = [g for g in REFERENCE_WEIGHT_GROUPS if self.cfg.geometry_heads or not set(g) & set(GEOMETRY_PREFIXES)]
        return fill_deterministic_groups(self, seed, groups)

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

    def needed_layers(self, geometry: bool = False) -> List[int]:
        """Token layers read by the track head's DPT decoder (and, with ``geometry``, by
        the depth head and the camera head, which reads the last layer)."""
        layers = list(self.track_head.feature_extractor.intermediate_layer_idx)
        if geometry:
            self._require_geometry()
            extra = list(self.depth_head.intermediate_layer_idx) + [self.cfg.aggregator.depth - 1]
            layers += [i for i in extra if i not in layers]
        return layers

    def _require_geometry(self) -> None:
        if self.camera_head is None or self.depth_head is None:
            raise RuntimeError("this backbone was built without the geometry heads (BackboneConfig.geometry_heads)")

    def geometry(
        self, tokens_list: List[Optional[torch.Tensor]], images: torch.Tensor, patch_start_idx: int
    ) -> GeometryOutput:
        """The camera head and the depth head on the tokens of a pass already made (the
        aggregator output of :meth:`encode` or ``forward(..., return_tokens=True)``),
        in the heads' parameter dtype and without autocast."""
        self._require_geometry()
        images = self._as_batch(images)
        if len(tokens_list) != self.cfg.aggregator.depth:
            raise ValueError(f"expected {self.cfg.aggregator.depth} token layers, got {len(tokens_list)}")
        cam_dtype = _param_dtype(self.camera_head)
        dpt_dtype = _param_dtype(self.depth_head)
        with autocast_context(images.device, None):
            last = tokens_list[-1]
            pose = self.camera_head([None if last is None else last.to(cam_dtype)])
            tokens = [t.to(dpt_dtype) if t is not None else None for t in tokens_list]
            depth, conf = self.depth_head(tokens, images, patch_start_idx,
                                          frames_chunk_size=self.cfg.depth_head.frames_chunk_size)
        return GeometryOutput(pose, depth, conf, (int(images.shape[-2]), int(images.shape[-1])))

    def forward(
        self,
        images: torch.Tensor,
        query_points: Optional[torch.Tensor] = None,
        *,
        iters: Optional[int] = None,
        return_tokens: bool = False,
        geometry: bool = False,
    ) -> BackboneOutput:
        """One aggregator pass, the track features, (with query points) the tracks and
        (with ``geometry``) the camera and depth heads on the same tokens.

        Without ``return_tokens`` only the layers the DPT decoders read are kept in memory.
        """
        images = self._as_batch(images)
        keep = None if return_tokens else self.needed_layers(geometry)
        tokens, start = self.encode(images, keep_layers=keep)
        feats = self.features(tokens, images, start)
        out = BackboneOutput(features=feats, tokens=tokens if return_tokens else None, patch_start_idx=start)
        if geometry:
            out.geometry = self.geometry(tokens, images, start)
        if query_points is not None:
            coord_iters, vis, conf = self.track(feats, query_points, iters)
            out.coord_iters, out.coords, out.vis, out.conf = coord_iters, coord_iters[-1], vis, conf
        return out
