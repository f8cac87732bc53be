"""Training loop of the Union Segmentation Head on a frozen VGGT backbone.

Per step: backbone features of the (source, target) inputs without gradients (read from
the feature cache when possible), target prompts (from the data set, or projected by the
track head), then the head in float32. The first part of the batch is trained on its
first pass; the rest (``refine_ratio``, half by default) first runs ``refine_time``
no-grad passes whose detached low-res logits are fed back as the previous mask, and is
trained on the refined pass. Loss ``20 * focal + dice``; AdamW, grad-norm clip, step
decay per epoch.

Checkpoints (``<out_dir>/ckpts/epoch_<e>.pth``) use the layout of ``main_exp.pth``:
``{"model": head state dict, "optimizer", "scheduler", "epoch"}``, written by rank 0
after the epoch's scheduler step, so resuming continues the schedule. Rank 0 also writes
``metrics.jsonl`` (every scalar), TensorBoard scalars when TensorBoard is installed,
``config.json`` and ``train_summary.json``.
"""

from __future__ import annotations

import bisect
import collections
import json
import math
import re
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from ..models.union_head.refinement import check_identity, decode_with_refinement
from ..models.union_head.union_head import HeadContext, UnionSegmentationHead
from .config import TrainConfig
from .losses import batch_iou, segmentation_loss
from .pairs import EpochTaggedSampler, collate
from .runtime import (DistEnv, FeatureExtractor, build_backbone, build_dataset, build_head, check_sizes,
                      ensure_projections, head_inputs, setup_distributed, state_digest)

CKPT_RE = re.compile(r"epoch_(\d+)\.pth$")


def slice_context(ctx: HeadContext, start: int, stop: int) -> HeadContext:
    return replace(ctx, tokens=ctx.tokens[start:stop], src_map=ctx.src_map[start:stop],
                   tar_feat=ctx.tar_feat[start:stop], src_down0=ctx.src_down0[start:stop])


class HeadTrainStep(nn.Module):
    """The head's training forward as one module call, so DDP sees a single forward.

    Samples ``[0, n_plain)`` are decoded once; samples ``[n_plain, B)`` run ``refine_time``
    passes without gradients and are decoded again from the detached low-res logits, all
    through :func:`decode_with_refinement` with the point-identity semantics ``identity``
    (``"accumulate"``, the reference training loop's, by default), the same function
    evaluation and inference use. Returns full-resolution logits ``[B, 1, S, S]`` in batch
    order."""

    def __init__(self, head: UnionSegmentationHead, identity: str = "accumulate") -> None:
        super().__init__()
        self.head = head
        self.identity = check_identity(identity)

    def forward(self, feats, src_points, tar_points, src_mask, n_plain: int, refine_time: int = 1):
        head = self.head
        ctx = head.encode(feats, src_points, tar_points, src_mask)
        b = feats.shape[0]
        outs = []
        if n_plain > 0:
            outs.append(decode_with_refinement(head, slice_context(ctx, 0, n_plain), 0, self.identity)[0])
        if n_plain < b:
            sub = slice_context(ctx, n_plain, b)
            passes = max(1, int(refine_time))
            outs.append(decode_with_refinement(head, sub, passes, self.identity, grad_last_only=True)[0])
        return torch.cat(outs, dim=0)


def newest_checkpoint(directory: Path) -> Optional[Path]:
    best = None
    if directory.is_dir():
        for p in directory.glob("epoch_*.pth"):
            m = CKPT_RE.search(p.name)
            if m and (best is None or int(m.group(1)) > best[0]):
                best = (int(m.group(1)), p)
    return best[1] if best else None


class Trainer:
    def __init__(self, cfg: TrainConfig, env: Optional[DistEnv] = None) -> None:
        self.cfg = cfg.validate()
        self.env = env
        self.out = Path(cfg.run.out_dir)
        self.history: List[Dict[str, Any]] = []
        self.writer = None
        self._jsonl = None

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        cfg = self.cfg
        if self.env is None:
            self.env = setup_distributed(cfg.run.device)
        env = self.env
        if cfg.run.threads:
            torch.set_num_threads(int(cfg.run.threads))
        torch.manual_seed(cfg.run.seed)
        self.backbone = build_backbone(cfg.model, env.device)
        self.head = build_head(cfg.model, env.device, seed=cfg.run.seed)
        check_sizes(self.backbone, self.head)
        self.head.train()
        self.size = self.head.cfg.img_size
        cache_dir = cfg.run.feature_cache
        if cache_dir and cfg.data.kind == "self" and not cfg.data.fixed_pairs:
            warnings.warn("run.feature_cache is ignored: self-training pairs change every epoch "
                          "(set data.fixed_pairs=true to reuse them and their features)")
            cache_dir = None
        self.extractor = FeatureExtractor(self.backbone, env.device, cache_dir, cfg.run.feature_cache_dtype)

        self.dataset = build_dataset(cfg.data, self.size, train=True)
        ensure_projections(self.dataset, self.backbone, env, cfg.optim.batch_size, progress=cfg.run.progress)
        self.eval_dataset = None
        if cfg.eval_data is not None:
            self.eval_dataset = build_dataset(cfg.eval_data, self.size, train=False)
            ensure_projections(self.eval_dataset, self.backbone, env, cfg.optim.batch_size, progress=cfg.run.progress)
        if len(self.dataset) < cfg.optim.batch_size * env.world:
            raise ValueError(f"{len(self.dataset)} training samples cannot fill one batch of "
                             f"{cfg.optim.batch_size} on each of {env.world} process(es)")
        self.sampler = EpochTaggedSampler(DistributedSampler(
            self.dataset, num_replicas=env.world, rank=env.rank, shuffle=True, seed=cfg.run.seed, drop_last=False))
        workers = int(cfg.run.num_workers)
        self.loader = DataLoader(self.dataset, batch_size=cfg.optim.batch_size, sampler=self.sampler,
                                 collate_fn=collate, num_workers=workers, drop_last=True,
                                 persistent_workers=workers > 0)
        self.steps_per_epoch = len(self.loader)
        if cfg.optim.steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, int(cfg.optim.steps_per_epoch))

        self.step_module: nn.Module = HeadTrainStep(self.head, cfg.model.point_identity)
        if env.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [env.device.index] if env.device.type == "cuda" else None
            self.step_module = DDP(self.step_module, device_ids=ids)
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(self.head.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones=list(o.lr_drops), gamma=o.lr_gamma)
        self.start_epoch = 1
        self._resume()

        if env.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "ckpts").mkdir(exist_ok=True)
            cfg.save(str(self.out / "config.json"))
            self._jsonl = open(self.out / "metrics.jsonl", "a", encoding="utf-8")
            if cfg.run.tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self.writer = SummaryWriter(str(self.out / "tb"))
                except ImportError:
                    warnings.warn("TensorBoard is not installed: scalars go to metrics.jsonl only "
                                  "(pip install tensorboard for event files)")

    def _resume(self) -> None:
        run = self.cfg.run
        path: Optional[Path] = None
        if run.resume and run.resume.lower() not in ("none", "no", "false", ""):
            if run.resume == "auto":
                path = newest_checkpoint(self.out / "ckpts")
            else:
                path = Path(run.resume)
                if not path.is_file():
                    raise FileNotFoundError(f"resume checkpoint {path} does not exist")
        if path is None:
            return
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
        for key in ("model", "optimizer", "scheduler", "epoch"):
            if key not in ckpt:
                raise ValueError(f"{path} is not a training checkpoint (no {key!r}); use model.init_head for weights only")
        state = ckpt["model"]
        if state and all(k.startswith("module.") for k in state):
            state = {k[len("module."):]: v for k, v in state.items()}
        self.head.load_state_dict(state, strict=True)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        epoch = int(ckpt["epoch"])
        o = self.cfg.optim
        # The configured schedule wins; reference checkpoints are saved before the epoch's
        # scheduler step, ours after it: either way the next epoch is epoch + 1.
        self.scheduler.milestones = collections.Counter(o.lr_drops)
        self.scheduler.gamma = o.lr_gamma
        self.scheduler.base_lrs = [o.lr for _ in self.optimizer.param_groups]
        self.scheduler.last_epoch = epoch
        lr = self.lr_for_epoch(epoch + 1)
        for group in self.optimizer.param_groups:
            group["initial_lr"] = o.lr
            group["lr"] = lr
        self.scheduler._last_lr = [lr for _ in self.optimizer.param_groups]
        self.start_epoch = epoch + 1
        self.resumed_from = str(path)
        if self.env.is_main:
            print(f"resumed from {path}: epoch {epoch} done, continuing at epoch {self.start_epoch} with lr {lr:g}",
                  file=sys.stderr)

    def lr_for_epoch(self, epoch: int) -> float:
        """Learning rate used while training ``epoch`` (1-based): x gamma per drop passed."""
        o = self.cfg.optim
        return o.lr * o.lr_gamma ** bisect.bisect_right(sorted(o.lr_drops), epoch - 1)

    # ------------------------------------------------------------------ logging
    def log(self, tag: str, values: Dict[str, float], step: int) -> None:
        if not self.env.is_main:
            return
        if self._jsonl is not None:
            self._jsonl.write(json.dumps({"tag": tag, "step": step, **{k: _num(v) for k, v in values.items()}}) + "\n")
            self._jsonl.flush()
        if self.writer is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and k not in ("epoch",) and math.isfinite(float(v)):
                    self.writer.add_scalar(f"{tag}/{k}", float(v), step)

    # ------------------------------------------------------------------ training
    def train_step(self, batch: Dict[str, Any]) -> Dict[str, float]:
        cfg, env = self.cfg, self.env
        o = cfg.optim
        t0 = time.perf_counter()
        feats = self.extractor.features(batch)
        tar_points = self.extractor.target_prompts(batch, feats, cfg.data)
        t_feat = time.perf_counter() - t0
        src_points, tar, src_mask = head_inputs(batch, tar_points, env.device)
        target = torch.from_numpy(np.asarray(batch["tar_mask"])).to(env.device).float()
        b = feats.shape[0]
        n_plain = b - int(b * o.refine_ratio)
        logits = self.step_module(feats, src_points, tar, src_mask, n_plain, o.refine_time)
        losses = segmentation_loss(logits, target, o.focal_weight, o.dice_weight, o.focal_alpha, o.focal_gamma)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.head.parameters(), o.max_norm)
        self.optimizer.step()
        iou = batch_iou(logits.detach(), target)
        return {
            "loss": float(losses["loss"].detach()), "focal": float(losses["focal"].detach()),
            "dice": float(losses["dice"].detach()), "iou": float(iou.mean()),
            "iou_first_pass": float(iou[:n_plain].mean()) if n_plain > 0 else float("nan"),
            "iou_refined": float(iou[n_plain:].mean()) if n_plain < b else float("nan"),
            "grad_norm": float(grad_norm), "lr": float(self.optimizer.param_groups[0]["lr"]),
            "step_seconds": time.perf_counter() - t0, "feature_seconds": t_feat,
        }

    def fit(self) -> Dict[str, Any]:
        if not hasattr(self, "head"):
            self.setup()
        cfg, env = self.cfg, self.env
        epochs = cfg.optim.epochs
        try:
            from tqdm import tqdm
        except ImportError:  # pragma: no cover
            tqdm = None
        for epoch in range(self.start_epoch, epochs + 1):
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(epoch)
            self.sampler.set_epoch(epoch)
            self.head.train()
            sums = torch.zeros(4, dtype=torch.float64)  # loss, iou, count, seconds
            times: List[float] = []
            bar = None
            if tqdm is not None and cfg.run.progress and env.is_main:
                bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch}/{epochs}", dynamic_ncols=True)
            for i, batch in enumerate(self.loader):
                if i >= self.steps_per_epoch:
                    break
                stats = self.train_step(batch)
                times.append(stats["step_seconds"])
                sums += torch.tensor([stats["loss"], stats["iou"], 1.0, stats["step_seconds"]], dtype=torch.float64)
                global_step = (epoch - 1) * self.steps_per_epoch + i
                if cfg.run.log_every and (i % cfg.run.log_every == 0 or i == self.steps_per_epoch - 1):
                    self.log("train", dict(stats, epoch=epoch), global_step)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{stats['loss']:.4f}", iou=f"{stats['iou']:.3f}", lr=f"{stats['lr']:.2e}")
            if bar is not None:
                bar.close()
            if env.distributed:
                torch.distributed.all_reduce(sums)
            lr_used = float(self.optimizer.param_groups[0]["lr"])
            self.scheduler.step()
            n = max(1.0, float(sums[2]))
            record = {
                "epoch": epoch, "loss": float(sums[0]) / n, "iou": float(sums[1]) / n, "steps": int(sums[2]) // env.world,
                "lr": lr_used, "next_lr": float(self.optimizer.param_groups[0]["lr"]),
                "seconds_per_step": float(np.median(times)) if times else float("nan"),
            }
            if self.extractor.cache is not None:
                record.update(cache_hits=self.extractor.cache.hits, cache_misses=self.extractor.cache.misses)
            if env.is_main:
                self.save_checkpoint(epoch)
            if self.eval_dataset is not None:
                report = self.evaluate()
                if env.is_main:
                    for direction, m in report.summary().items():
                        record[f"eval_{direction}_iou"] = m["iou"]
                    self.log("eval", {f"{d}_{k}": v for d, m in report.summary().items() for k, v in m.items()
                                      if isinstance(v, (int, float))}, epoch)
            self.history.append(record)
            self.log("epoch", record, epoch)
            env.barrier()
        return self.finish()

    def evaluate(self):
        from .evaluate import evaluate

        return evaluate(self.head, self.extractor, self.eval_dataset, self.cfg.eval_data,
                        batch_size=self.cfg.optim.batch_size, refine_iterations=self.cfg.run.refine_iterations,
                        worst_k=0, env=self.env, identity=self.cfg.model.point_identity)

    def save_checkpoint(self, epoch: int) -> Path:
        path = self.out / "ckpts" / f"epoch_{epoch}.pth"
        tmp = path.with_name(path.name + ".tmp")
        torch.save({
            "model": {k: v.detach().cpu() for k, v in self.head.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": int(epoch),
        }, str(tmp))
        tmp.replace(path)
        return path

    def finish(self) -> Dict[str, Any]:
        env = self.env
        digest = state_digest(self.head)
        digests = [digest]
        if env.distributed:
            digests = [None] * env.world
            torch.distributed.all_gather_object(digests, digest)
        summary = {
            "world_size": env.world,
            "start_epoch": self.start_epoch,
            "resumed_from": getattr(self, "resumed_from", None),
            "epochs": self.history,
            "rank_weight_digests": digests,
            "steps_per_epoch": self.steps_per_epoch,
            "backbone_seconds_per_pair": (self.extractor.backbone_seconds / self.extractor.backbone_pairs
                                          if self.extractor.backbone_pairs else None),
        }
        if env.is_main:
            (self.out / "train_summary.json").write_text(json.dumps(_clean(summary), indent=2), encoding="utf-8")
            if self.writer is not None:
                self.writer.close()
            if self._jsonl is not None:
                self._jsonl.close()
        return summary


def _num(v):
    if isinstance(v, (np.floating, np.integer)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _clean(obj):
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return _num(obj)


def train(cfg: TrainConfig, env: Optional[DistEnv] = None) -> Dict[str, Any]:
    """Run a whole training (joining the process group under ``torchrun``)."""
    trainer = Trainer(cfg, env)
    try:
        trainer.setup()
        return trainer.fit()
    finally:
        if trainer.env is not None and env is None:
            trainer.env.close()
