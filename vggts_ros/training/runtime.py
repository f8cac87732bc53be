"""Pieces shared by training and evaluation: building the frozen backbone and the head,
the data sets, backbone features (optionally cached) and target prompts for pairs whose
prompts come from the track head, and the torch.distributed environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch import nn

from ..checkpoint import load_exact, read_state_dict, resolve_checkpoint
from ..models.backbone import VGGTBackbone
from ..models.deterministic import fill_deterministic
from ..models.union_head import UnionSegmentationHead
from .config import DataSection, ModelSection, network_configs
from .features_cache import FeatureCache, backbone_fingerprint
from .pairs import condense_projections, pair_images, single_threaded


# ---------------------------------------------------------------------------------------
# distributed environment
# ---------------------------------------------------------------------------------------
@dataclass
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def close(self) -> None:
        if self.initialised_here and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but CUDA is not available")
        return torch.device(f"cuda:{local_rank}")
    return torch.device(name)


def setup_distributed(device: str = "auto") -> DistEnv:
    """Join the process group when started by ``torchrun`` (``WORLD_SIZE`` > 1): NCCL on
    CUDA, gloo on CPU. A single process runs without a process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    env = DistEnv(rank=rank, world=world, local_rank=local_rank, device=dev)
    if world > 1:
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
            env.initialised_here = True
    return env


# ---------------------------------------------------------------------------------------
# networks
# ---------------------------------------------------------------------------------------
def build_backbone(model: ModelSection, device: torch.device) -> VGGTBackbone:
    """The frozen VGGT backbone: published weights, or the deterministic rule when
    ``vggt_checkpoint`` is None (tests)."""
    bcfg, _ = network_configs(model.preset, model.img_size)
    if model.vggt_checkpoint:
        backbone = VGGTBackbone.from_pretrained(model.vggt_checkpoint, bcfg)
    else:
        backbone = fill_deterministic(VGGTBackbone(bcfg), model.backbone_seed)
        if model.backbone_init == "content":
            content_preserving_dpt_init(backbone.track_head.feature_extractor, model.backbone_seed)
    backbone.dtype = model.backbone_dtype
    backbone.requires_grad_(False)
    return backbone.eval().to(device)


@torch.no_grad()
def content_preserving_dpt_init(dpt: nn.Module, seed: int = 0) -> None:
    """Weights for a *random* backbone's DPT feature extractor that carry the token content
    through to the feature maps (test backbones only; published weights never use this).

    Projections and the ``layer*_rn`` convolutions are seeded random projections (centre
    tap only); transposed-conv resizes become nearest-neighbour upsampling, the stride-2
    conv, fusion 1x1 convs and the output conv identities, and residual branches are
    zeroed, so each map is a sum of rectified random projections of the tokens."""
    import math

    from ..models.heads.dpt_head import ResidualConvUnit

    g = torch.Generator().manual_seed(int(seed) + 1)

    def rand(shape, fan_in):
        return torch.randn(shape, generator=g) / math.sqrt(fan_in)

    for m in dpt.modules():
        if isinstance(m, ResidualConvUnit):
            nn.init.dirac_(m.conv1.weight)
            m.conv1.bias.zero_()
            m.conv2.weight.zero_()
            m.conv2.bias.zero_()
    for proj in dpt.projects:
        proj.weight.copy_(rand(proj.weight.shape, proj.weight.shape[1]))
        proj.bias.zero_()
    for layer in dpt.resize_layers:
        if isinstance(layer, nn.ConvTranspose2d):
            layer.weight.zero_()
            layer.bias.zero_()
            for c in range(min(layer.weight.shape[0], layer.weight.shape[1])):
                layer.weight[c, c] = 1.0
        elif isinstance(layer, nn.Conv2d):
            nn.init.dirac_(layer.weight)
            layer.bias.zero_()
    sc = dpt.scratch
    for j in range(1, 5):
        conv = getattr(sc, f"layer{j}_rn")
        conv.weight.zero_()
        k = conv.weight.shape[-1] // 2
        conv.weight[:, :, k, k] = rand(conv.weight.shape[:2], conv.weight.shape[1])
    for j in range(1, 5):
        out = getattr(sc, f"refinenet{j}").out_conv
        nn.init.dirac_(out.weight)
        out.bias.zero_()
    nn.init.dirac_(sc.output_conv1.weight)
    sc.output_conv1.bias.zero_()


def build_head(model: ModelSection, device: torch.device, seed: int = 0) -> UnionSegmentationHead:
    _, hcfg = network_configs(model.preset, model.img_size)
    if model.head_seed is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            head = UnionSegmentationHead(hcfg)
    else:
        head = fill_deterministic(UnionSegmentationHead(hcfg), model.head_seed)
    if model.init_head:
        path = resolve_checkpoint(model.init_head, "main_exp.pth")
        load_exact(head, read_state_dict(path), what=f"head checkpoint {path}")
    return head.float().to(device)


def load_head_weights(head: nn.Module, source: str) -> None:
    path = resolve_checkpoint(source, "main_exp.pth")
    load_exact(head, read_state_dict(path), what=f"head checkpoint {path}")


def check_sizes(backbone: VGGTBackbone, head: UnionSegmentationHead) -> None:
    c_back = backbone.cfg.track_head.features
    if c_back != head.cfg.embed_dim:
        raise ValueError(f"backbone features ({c_back} channels) do not match the head's embed_dim {head.cfg.embed_dim}")


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------
def build_dataset(data: DataSection, img_size: int, train: bool, keep_frames: bool = False):
    if data.kind == "self":
        from .self_training import SelfTrainingPairs

        return SelfTrainingPairs(data, img_size)
    if data.kind == "egoexo":
        from .egoexo import EgoExoPairs

        return EgoExoPairs(data, img_size, train=train, keep_frames=keep_frames)
    raise ValueError(f"unknown data kind {data.kind!r}")


def ensure_projections(dataset, backbone: VGGTBackbone, env: DistEnv, batch_size: int = 4, progress: bool = False) -> int:
    """Ego-Exo4D: compute the first-pass projections the data set lacks (rank 0, written
    to the projections file), then every rank reloads them. Returns how many were added."""
    from .egoexo import EgoExoPairs, compute_projections, write_projections

    if not isinstance(dataset, EgoExoPairs):
        return 0
    missing = dataset.missing_projections()
    if not missing:
        return 0
    if env.is_main:
        entries = compute_projections(dataset, backbone, missing, env.device, batch_size, progress=progress)
        try:
            write_projections(str(dataset.projections_path), entries)
        except OSError:
            dataset.projections.update(entries)  # read-only data folder: keep them in memory
    env.barrier()
    if dataset.projections_path.is_file():
        dataset.projections = dataset._read_projections(dataset.projections_path)
    if dataset.missing_projections():
        if env.is_main:
            return len(missing)
        raise RuntimeError(f"projections file {dataset.projections_path} could not be written; make it writable")
    return len(missing)


# ---------------------------------------------------------------------------------------
# features and prompts
# ---------------------------------------------------------------------------------------
class FeatureExtractor:
    """Backbone features of a batch of pairs ``[B, 2, C, g, g]`` (float32, on ``device``),
    read from / written to a :class:`FeatureCache` when one is given."""

    def __init__(self, backbone: VGGTBackbone, device: torch.device, cache_dir: Optional[str] = None,
                 cache_dtype: str = "float16") -> None:
        self.backbone = backbone
        self.device = device
        self.cache = FeatureCache(cache_dir, backbone_fingerprint(backbone), cache_dtype) if cache_dir else None
        self.backbone_seconds = 0.0
        self.backbone_pairs = 0

    @torch.no_grad()
    def features(self, batch: Dict[str, Any]) -> torch.Tensor:
        import time

        n = len(batch["src_img"])
        found: List[Optional[torch.Tensor]] = [None] * n
        keys: List[str] = []
        if self.cache is not None:
            keys = [FeatureCache.key(batch["src_img"][i], batch["tar_img"][i]) for i in range(n)]
            found = self.cache.lookup(keys)
        todo = [i for i in range(n) if found[i] is None]
        if todo:
            sub = {"src_img": batch["src_img"][todo], "tar_img": batch["tar_img"][todo]}
            t0 = time.perf_counter()
            feats = self.backbone(pair_images(sub, self.device)).features.float()
            self.backbone_seconds += time.perf_counter() - t0
            self.backbone_pairs += len(todo)
            for j, i in enumerate(todo):
                found[i] = feats[j]
                if self.cache is not None:
                    self.cache.put(keys[i], feats[j])
        return torch.stack([f.to(self.device, torch.float32) for f in found])

    @torch.no_grad()
    def target_prompts(self, batch: Dict[str, Any], feats: torch.Tensor, data: DataSection) -> np.ndarray:
        """The batch's target prompts; pairs flagged ``track`` get them from the track
        head: their ``track_points`` projected into the target, then clipped, outliers
        dropped and clustered (the pipeline's remapping)."""
        tar = np.array(batch["tar_points"], dtype=np.float32, copy=True)
        idx = np.flatnonzero(np.asarray(batch["track"], dtype=bool))
        if idx.size == 0:
            return tar
        q = torch.from_numpy(np.asarray(batch["track_points"])[idx]).float().to(self.device)
        coord_iters, _, _ = self.backbone.track(feats[idx], q)
        coords = coord_iters[-1][:, 1].float().cpu().numpy()
        size = int(batch["tar_img"].shape[1])
        with single_threaded():
            for j, i in enumerate(idx):
                tar[i] = condense_projections(coords[j], size, data.prompt_points, data.outlier_k)
        return tar


def head_inputs(batch: Dict[str, Any], tar_points: np.ndarray, device: torch.device):
    src_points = torch.from_numpy(np.asarray(batch["src_points"], dtype=np.float32)).to(device)
    tar = torch.from_numpy(np.asarray(tar_points, dtype=np.float32)).to(device)
    src_mask = torch.from_numpy(np.asarray(batch["src_mask"])).to(device).float()
    return src_points, tar, src_mask


def state_digest(module: nn.Module) -> str:
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
