"""Training of Temporal VGGT-S on clips (scoring: :mod:`.clip_eval`).

The backbone stays frozen (features of every (source, target frame) pair come from the
feature cache when possible). Each step decodes a batch of clips frame by frame: the head
encodes frame t, the memory modules condition its target features on the bank of frames
< t (frame 0 is the kept first frame), the head decodes (the last ``refine_ratio`` of the
batch through ``refine_time`` no-grad refinement passes, as the single-frame trainer
does), and the frame's memory tokens are written from the detached low-res logits.
Loss ``20 * focal + dice`` over every frame. With ``mode.use_memory=false`` the same loop
trains the plain per-frame head on the same clips: the baseline of the evidence run.

Outputs (rank 0): ``ckpts/epoch_<e>.pth`` (head ``model``, ``temporal`` weights,
optimiser, scheduler, epoch; resumable), ``temporal.pth`` (memory modules only, see
:mod:`vggts_ros.models.temporal.checkpoint`), ``head.pth`` (``main_exp.pth`` layout, when
the head was trained), ``metrics.jsonl``, ``config.json``, ``train_summary.json``.

Run ``python -m vggts_ros.training.temporal_train --help``; under ``torchrun`` every
process joins the process group (DDP, gloo on CPU, NCCL on CUDA).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from ..checkpoint import save_state_dict
from ..models.temporal import TemporalConfig, TemporalMemory, load_temporal, save_temporal
from ..models.union_head.union_head import LOW_RES_CLAMP, UnionSegmentationHead
from .clip_eval import OCCLUDED, clip_features, clip_inputs, context_rows, evaluate_clips, summarise  # noqa: F401
from .clips import ClipSection, ImageClips, collate_clips
from ..schema import from_dict
from .config import DataSection, ModelSection, OptimSection, RunSection, SectionsFile, TrainConfig
from .losses import batch_iou, segmentation_loss
from .pairs import EpochTaggedSampler
from .runtime import DistEnv, FeatureExtractor, build_backbone, build_head, check_sizes, setup_distributed



# ---------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------
@dataclass
class ModeSection:
    use_memory: bool = True  # false: train/evaluate the plain per-frame head on the clips
    train_head: bool = True  # fine-tune the head together with the memory modules
    init_temporal: Optional[str] = None  # start the memory modules from a temporal.pth
    temporal_seed: int = 0  # fresh memory modules are drawn from this seed
    # learning-rate multiplier of the zero-initialised gate: it starts every other memory
    # parameter's gradient, and at the head's learning rate it opens too slowly
    gate_lr_scale: float = 10.0
    # share of training clips whose memory is written from the ground-truth mask instead
    # of the prediction (teacher forcing). Off by default: evaluation and inference stream
    # the model's own predictions, and a model trained on perfect memories learns to copy
    # them, which compounds its own errors (smoke run: held-out IoU 0.20 with forcing on
    # every clip against 0.37 without, README "Temporal VGGT-S")
    teacher_forcing: float = 0.0


@dataclass
class TemporalTrainConfig(SectionsFile):
    base: TrainConfig = field(default_factory=TrainConfig)
    clips: ClipSection = field(default_factory=ClipSection)
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    mode: ModeSection = field(default_factory=ModeSection)

    OWN = ("clips", "temporal", "mode")

    def to_dict(self) -> Dict[str, Any]:
        d = self.base.to_dict()
        d.update(clips=dataclasses.asdict(self.clips), temporal=self.temporal.to_dict(),
                 mode=dataclasses.asdict(self.mode))
        return d

    @classmethod
    def from_dict(cls, data: Optional[Dict[str, Any]]) -> "TemporalTrainConfig":
        data = dict(data or {})
        own = {k: data.pop(k) for k in cls.OWN if k in data}
        clips = from_dict(ClipSection, own.get("clips"), "clips")
        temporal = from_dict(TemporalConfig, own.get("temporal"), "temporal")
        mode = from_dict(ModeSection, own.get("mode"), "mode")
        cfg = cls(TrainConfig.from_dict(data), clips, temporal, mode)
        return cfg.validate()

    def validate(self) -> "TemporalTrainConfig":
        self.clips.validate()
        self.temporal.validate()
        if not self.mode.use_memory and not self.mode.train_head:
            raise ValueError("mode.use_memory=false and mode.train_head=false leave nothing to train")
        return self



def smoke_temporal_config(out_dir: str, data_root: str, use_memory: bool = True,
                          overrides: Optional[Dict[str, Any]] = None) -> TemporalTrainConfig:
    """The tiny CPU configuration of the tests and ``bench/bench_temporal.py``: the smoke
    networks (84 px, 32 channels, random content-preserving backbone, prompts through the
    known warp), fixed clips of 5 frames (features cached), batches of 4 clips, AdamW 3e-3,
    memory on a 14 x 14 token grid with 4 recent frames, one attention head (32 channels:
    a single head keeps the attention sharp at this width)."""
    base = TrainConfig(
        model=ModelSection(preset="smoke", vggt_checkpoint=None, backbone_seed=0, backbone_init="content"),
        data=DataSection(kind="self", root=data_root, adaptive_prompts="warp", fixed_pairs=True,
                         first_pass_points=20, outlier_k=4),
        optim=OptimSection(epochs=12, batch_size=4, lr=3e-3, weight_decay=1e-4, lr_drops=[10], max_norm=1.0),
        run=RunSection(out_dir=out_dir, resume="none", device="cpu", num_workers=0, progress=False, log_every=1,
                       tensorboard=False),
    )
    cfg = TemporalTrainConfig(base=base, clips=ClipSection(frames=5),
                              temporal=TemporalConfig(memory_frames=4, tokens=14, blocks=2, num_heads=1),
                              mode=ModeSection(use_memory=use_memory))
    if overrides:
        cfg = cfg.override([f"{k}={json.dumps(v)}" for k, v in overrides.items()])
    return cfg.validate()


# ---------------------------------------------------------------------------------------
# the clip forward
# ---------------------------------------------------------------------------------------
class ClipTrainStep(nn.Module):
    """Decode a batch of clips frame by frame (one module call, so DDP sees one forward).

    feats ``[B, T, 2, C, g, g]``, points ``[B, T, P, 2]``, src_mask ``[B, T, S, S]``.
    Clips ``[0, n_plain)`` are decoded once per frame; ``[n_plain, B)`` first run
    ``refine_time`` no-grad passes. Returns full-resolution logits ``[B, T, 1, S, S]``."""

    def __init__(self, head: UnionSegmentationHead, temporal: Optional[TemporalMemory]) -> None:
        super().__init__()
        self.head = head
        self.temporal = temporal

    def forward(self, feats, src_points, tar_points, src_mask, n_plain: int, refine_time: int = 1,
                memory_masks=None, forced=None):
        """``memory_masks`` ``[B, T, S, S]`` (ground truth) replace the prediction in the
        memory of the clips flagged in ``forced`` ``[B]`` (teacher forcing)."""
        head, temporal = self.head, self.temporal
        b, T = feats.shape[:2]
        bank = temporal.new_bank() if temporal is not None else None
        outs = []
        for t in range(T):
            ctx = head.encode(feats[:, t], src_points[:, t], tar_points[:, t], src_mask[:, t])
            cond, prior = temporal.prepare_rows(head, ctx, [bank]) if temporal is not None else (ctx, None)
            full_parts, low_parts = [], []
            if n_plain > 0:
                full, low = head.decode(context_rows(cond, 0, n_plain))
                full_parts.append(full)
                low_parts.append(low)
            if n_plain < b:
                sub = context_rows(cond, n_plain, b)
                low = None
                with torch.no_grad():
                    for _ in range(max(1, int(refine_time))):
                        _, low = head.decode(sub, low)
                full, low = head.decode(sub, low.detach())
                full_parts.append(full)
                low_parts.append(low)
            full, low = torch.cat(full_parts, 0), torch.cat(low_parts, 0)
            if temporal is not None:
                full, low = temporal.fuse(full, low, prior)
            outs.append(full)
            if temporal is not None and t + 1 < T:
                low = low.detach()
                if memory_masks is not None and forced is not None and bool(forced.any()):
                    gt = F.interpolate(memory_masks[:, t, None].float(), size=low.shape[-2:], mode="nearest")
                    low = torch.where(forced.view(-1, 1, 1, 1), (2.0 * gt - 1.0) * LOW_RES_CLAMP, low)
                bank.add(temporal.memorise(ctx, low), confident=(t == 0))
        return torch.stack(outs, dim=1)


# ---------------------------------------------------------------------------------------
# trainer
# ---------------------------------------------------------------------------------------
def build_clips(data: DataSection, clips: ClipSection, size: int, backbone=None, env: Optional[DistEnv] = None,
                batch_size: int = 4):
    """``data.kind`` "self": synthetic clips from images; "egoexo": Ego-Exo4D clips (their
    missing first-pass projections are computed with ``backbone`` first)."""
    if data.kind == "self":
        return ImageClips(data, clips, size)
    if data.kind == "egoexo":
        from .clips import EgoExoClips
        from .runtime import ensure_projections

        ds = EgoExoClips(data, clips, size)
        if backbone is not None:
            ensure_projections(ds.pairs, backbone, env or DistEnv(), batch_size)
        return ds
    raise ValueError(f"unknown data kind {data.kind!r}")


class ClipTrainer:
    def __init__(self, cfg: TemporalTrainConfig, env: Optional[DistEnv] = None) -> None:
        self.cfg = cfg.validate()
        self.env = env
        self.out = Path(cfg.base.run.out_dir)
        self._jsonl = None

    def setup(self) -> None:
        cfg, base = self.cfg, self.cfg.base
        if self.env is None:
            self.env = setup_distributed(base.run.device)
        env = self.env
        if base.run.threads:
            torch.set_num_threads(int(base.run.threads))
        torch.manual_seed(base.run.seed)
        self.backbone = build_backbone(base.model, env.device)
        self.head = build_head(base.model, env.device, seed=base.run.seed)
        check_sizes(self.backbone, self.head)
        self.size = self.head.cfg.img_size
        self.temporal: Optional[TemporalMemory] = None
        if cfg.mode.use_memory:
            if cfg.mode.init_temporal:
                self.temporal = load_temporal(cfg.mode.init_temporal, self.head.cfg, cfg.temporal)
            else:
                self.temporal = TemporalMemory.seeded(self.head.cfg, cfg.temporal, cfg.mode.temporal_seed)
            self.temporal.to(env.device).train()
        self.head.requires_grad_(bool(cfg.mode.train_head))
        self.head.train()
        self.extractor = FeatureExtractor(self.backbone, env.device, base.run.feature_cache,
                                          base.run.feature_cache_dtype)
        self.dataset = build_clips(base.data, cfg.clips, self.size, self.backbone, env, base.optim.batch_size)
        self.eval_dataset = None
        if base.eval_data is not None:
            self.eval_dataset = build_clips(base.eval_data, cfg.clips, self.size, self.backbone, env,
                                            base.optim.batch_size)
        bs = base.optim.batch_size
        if len(self.dataset) < bs * env.world:
            raise ValueError(f"{len(self.dataset)} training clips cannot fill one batch of {bs} on each of "
                             f"{env.world} process(es)")
        self.sampler = EpochTaggedSampler(DistributedSampler(self.dataset, num_replicas=env.world, rank=env.rank,
                                                             shuffle=True, seed=base.run.seed, drop_last=False))
        workers = int(base.run.num_workers)
        self.loader = DataLoader(self.dataset, batch_size=bs, sampler=self.sampler, collate_fn=collate_clips,
                                 num_workers=workers, drop_last=True, persistent_workers=workers > 0)
        self.steps_per_epoch = len(self.loader)
        if base.optim.steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, int(base.optim.steps_per_epoch))
        self.step_module: nn.Module = ClipTrainStep(self.head, self.temporal)
        if env.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [env.device.index] if env.device.type == "cuda" else None
            self.step_module = DDP(self.step_module, device_ids=ids)
        self.params = [p for p in self.step_module.parameters() if p.requires_grad]
        o = base.optim
        gates = [self.temporal.gate, getattr(self.temporal, "logit_gate", None)] if self.temporal is not None else []
        gate = [p for p in self.params if any(p is g for g in gates)]
        rest = [p for p in self.params if not any(p is q for q in gate)]
        groups = [{"params": rest}]
        if gate:
            groups.append({"params": gate, "lr": o.lr * cfg.mode.gate_lr_scale, "weight_decay": 0.0})
        self.optimizer = torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones=list(o.lr_drops),
                                                              gamma=o.lr_gamma)
        self.tf_gen = torch.Generator().manual_seed(int(base.run.seed) * 1000 + env.rank)
        self.start_epoch = 1
        self._resume()
        if env.is_main:
            (self.out / "ckpts").mkdir(parents=True, exist_ok=True)
            cfg.save(str(self.out / "config.json"))
            self._jsonl = open(self.out / "metrics.jsonl", "a", encoding="utf-8")

    def _resume(self) -> None:
        run = self.cfg.base.run
        path = None
        if run.resume and run.resume.lower() not in ("none", "no", "false", ""):
            if run.resume == "auto":
                from .trainer import newest_checkpoint

                path = newest_checkpoint(self.out / "ckpts")
            else:
                path = Path(run.resume)
                if not path.is_file():
                    raise FileNotFoundError(f"resume checkpoint {path} does not exist")
        if path is None:
            return
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
        self.head.load_state_dict(ckpt["model"], strict=True)
        if (self.temporal is None) != ("temporal" not in ckpt):
            raise ValueError(f"{path}: memory modules {'present' if 'temporal' in ckpt else 'absent'} in the "
                             f"checkpoint but mode.use_memory={self.cfg.mode.use_memory}")
        if self.temporal is not None:
            self.temporal.load_state_dict(ckpt["temporal"], strict=True)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.start_epoch = int(ckpt["epoch"]) + 1

    def log(self, tag: str, values: Dict[str, Any], step: int) -> None:
        if self._jsonl is not None:
            clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}
            self._jsonl.write(json.dumps({"tag": tag, "step": step, **clean}) + "\n")
            self._jsonl.flush()

    def train_step(self, batch: Dict[str, Any]) -> Dict[str, float]:
        o, env = self.cfg.base.optim, self.env
        t0 = time.perf_counter()
        feats = clip_features(self.extractor, batch)
        t_feat = time.perf_counter() - t0
        src_points, tar_points, src_mask, target = clip_inputs(batch, env.device)
        b, T = feats.shape[:2]
        n_plain = b - int(b * o.refine_ratio)
        forced = None
        if self.temporal is not None and self.cfg.mode.teacher_forcing > 0:
            forced = torch.rand(b, generator=self.tf_gen) < self.cfg.mode.teacher_forcing
            forced = forced.to(env.device)
        logits = self.step_module(feats, src_points, tar_points, src_mask, n_plain, o.refine_time, target, forced)
        flat_logits = logits.reshape(b * T, 1, *logits.shape[-2:])
        flat_target = target.reshape(b * T, *target.shape[-2:])
        losses = segmentation_loss(flat_logits, flat_target, o.focal_weight, o.dice_weight, o.focal_alpha,
                                   o.focal_gamma)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, o.max_norm)
        self.optimizer.step()
        iou = batch_iou(flat_logits.detach(), flat_target).view(b, T)
        occ = torch.from_numpy(np.asarray(batch["occlusion"])).to(iou.device) > OCCLUDED
        gate = float(self.temporal.gate.detach().abs().mean()) if self.temporal is not None else 0.0
        return {"loss": float(losses["loss"].detach()), "iou": float(iou.mean()),
                "iou_occluded": float(iou[occ].mean()) if bool(occ.any()) else float("nan"),
                "grad_norm": float(grad_norm), "gate": gate, "lr": float(self.optimizer.param_groups[0]["lr"]),
                "step_seconds": time.perf_counter() - t0, "feature_seconds": t_feat}

    def evaluate(self) -> Dict[str, Any]:
        return evaluate_clips(self.head, self.temporal, self.eval_dataset, self.extractor,
                              self.cfg.base.run.refine_iterations)

    def fit(self) -> Dict[str, Any]:
        if not hasattr(self, "head"):
            self.setup()
        base, env = self.cfg.base, self.env
        epochs: List[Dict[str, Any]] = []
        t_start = time.perf_counter()
        steps = 0
        for epoch in range(self.start_epoch, base.optim.epochs + 1):
            self.dataset.set_epoch(epoch)
            self.sampler.set_epoch(epoch)
            self.step_module.train()
            stats_list = []
            for i, batch in enumerate(self.loader):
                if i >= self.steps_per_epoch:
                    break
                stats = self.train_step(batch)
                stats_list.append(stats)
                steps += 1
                if base.run.log_every and i % base.run.log_every == 0:
                    self.log("train", dict(stats, epoch=epoch), (epoch - 1) * self.steps_per_epoch + i)
            lr_used = float(self.optimizer.param_groups[0]["lr"])
            self.scheduler.step()
            record = {"epoch": epoch, "loss": float(np.mean([s["loss"] for s in stats_list])),
                      "iou": float(np.mean([s["iou"] for s in stats_list])), "lr": lr_used,
                      "gate": stats_list[-1]["gate"], "steps": len(stats_list),
                      "seconds_per_step": float(np.median([s["step_seconds"] for s in stats_list]))}
            if env.is_main:
                self.save_checkpoint(epoch)
            if self.eval_dataset is not None and env.is_main:
                s = self.evaluate()["summary"]
                record.update({f"eval_{k}_iou": v["iou"] for k, v in s.items()})
            self.log("epoch", record, epoch)
            epochs.append(record)
        summary = {"epochs": epochs, "steps": steps, "train_seconds": time.perf_counter() - t_start,
                   "backbone_pairs": self.extractor.backbone_pairs,
                   "backbone_seconds": self.extractor.backbone_seconds, "world_size": env.world,
                   "start_epoch": self.start_epoch}
        from .runtime import state_digest

        digest = state_digest(self.step_module.module if env.distributed else self.step_module)
        if env.distributed:
            digests: List[Any] = [None] * env.world
            torch.distributed.all_gather_object(digests, digest)
            summary["rank_weight_digests"] = digests
        else:
            summary["rank_weight_digests"] = [digest]
        if env.is_main:
            self.export()
            (self.out / "train_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
            if self._jsonl is not None:
                self._jsonl.close()
                self._jsonl = None
        return summary

    def save_checkpoint(self, epoch: int) -> Path:
        path = self.out / "ckpts" / f"epoch_{epoch}.pth"
        payload = {"model": {k: v.detach().cpu() for k, v in self.head.state_dict().items()},
                   "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                   "epoch": int(epoch)}
        if self.temporal is not None:
            payload["temporal"] = {k: v.detach().cpu() for k, v in self.temporal.state_dict().items()}
            payload["temporal_config"] = self.temporal.cfg.to_dict()
        tmp = path.with_name(path.name + ".tmp")
        torch.save(payload, str(tmp))
        tmp.replace(path)
        return path

    def export(self) -> None:
        """``temporal.pth`` (memory modules) and ``head.pth`` (when the head was trained)."""
        if self.temporal is not None:
            save_temporal(self.temporal, self.out / "temporal.pth")
        if self.cfg.mode.train_head:
            save_state_dict(self.head.state_dict(), self.out / "head.pth", wrap="model")

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None


def train_temporal(cfg: TemporalTrainConfig, env: Optional[DistEnv] = None) -> Dict[str, Any]:
    trainer = ClipTrainer(cfg, env)
    try:
        trainer.setup()
        return trainer.fit()
    finally:
        trainer.close()
        if trainer.env is not None and env is None:
            trainer.env.close()


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vggts_ros.training.temporal_train",
                                description="Train Temporal VGGT-S memory modules on synthetic occlusion clips.")
    p.add_argument("--config", help="YAML/JSON with sections model, data, optim, run, eval_data, clips, temporal, mode")
    p.add_argument("--preset", choices=("smoke", "vggt-1b"), default="vggt-1b")
    p.add_argument("--data-root", help="images + instance masks (PNG pairs) or COCO image folder")
    p.add_argument("--coco", help="COCO instances JSON")
    p.add_argument("--eval-root", help="held-out images (+ --eval-coco)")
    p.add_argument("--eval-coco")
    p.add_argument("--init-head", help="main_exp.pth to start the head from")
    p.add_argument("--out", default="runs/temporal")
    p.add_argument("--plain", action="store_true", help="train the per-frame head only (the baseline)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    a = p.parse_args(argv)
    try:
        if a.config:
            cfg = TemporalTrainConfig.load(a.config)
        elif a.preset == "smoke":
            cfg = smoke_temporal_config(a.out, a.data_root or "")
        else:
            cfg = TemporalTrainConfig()
        sets = list(a.set) + [f"run.out_dir={a.out}"]
        if a.data_root:
            sets.append(f"data.root={a.data_root}")
        if a.coco:
            sets.append(f"data.coco={a.coco}")
        if a.eval_root:
            sets += [f"eval_data.root={a.eval_root}", "eval_data.fixed_pairs=true"]
            if cfg.base.data.adaptive_prompts == "warp":
                sets.append("eval_data.adaptive_prompts=warp")
        if a.eval_coco:
            sets.append(f"eval_data.coco={a.eval_coco}")
        if a.init_head:
            sets.append(f"model.init_head={a.init_head}")
        if a.plain:
            sets.append("mode.use_memory=false")
        cfg = cfg.override(sets)
        if not cfg.base.data.root and not cfg.base.data.coco:
            raise ValueError("no training data: give --data-root (and/or --coco)")
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = train_temporal(cfg)
    print(json.dumps({k: v for k, v in summary.items() if k != "epochs"}, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
