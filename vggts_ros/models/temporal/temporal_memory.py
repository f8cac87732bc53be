"""Temporal VGGT-S: the memory modules wrapped around the Union Segmentation Head.

:class:`TemporalMemory` owns the memory encoder, the memory attention and a per-channel
gate initialised to zero. It never changes the head: :meth:`condition` returns a copy of
the head's :class:`HeadContext` whose target features carry ``gate * readout``, so with
an empty bank, or a zero gate, the head computes exactly what it computes without memory.
The readout is the memory attention's feature readout plus its propagated mask prior
encoded by the head's own previous-mask encoder (``prompt_encoder.embed_low_res``, the
path its refinement passes use), so the head reads the memory's mask the way it already
reads its own earlier prediction.
Its state dict (``memory_encoder.*``, ``memory_attention.*``, ``gate``) is stored in its
own file (:mod:`.checkpoint`); ``main_exp.pth`` is untouched.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...config import HeadConfig
from ..union_head.refinement import decode_with_refinement
from ..union_head.union_head import LOW_RES_CLAMP, HeadContext, UnionSegmentationHead
from .config import TemporalConfig
from .memory_attention import MemoryAttention
from .memory_bank import MemoryBank
from .memory_encoder import MemoryEncoder


class TemporalMemory(nn.Module):
    def __init__(self, head_cfg: HeadConfig, cfg: Optional[TemporalConfig] = None) -> None:
        super().__init__()
        cfg = (TemporalConfig() if cfg is None else cfg).validate()
        self.cfg = cfg
        self.head_cfg = head_cfg
        dim = int(head_cfg.embed_dim)
        self.side = int(cfg.tokens or head_cfg.sa_tokens)
        if self.side > head_cfg.img_size // 2:
            raise ValueError(f"temporal tokens {self.side} exceed the feature grid {head_cfg.img_size // 2}")
        self.memory_encoder = MemoryEncoder(dim, self.side, cfg.memory_frames)
        self.memory_attention = MemoryAttention(dim, self.side, cfg.blocks, cfg.num_heads, cfg.mlp_ratio,
                                                cfg.memory_frames)
        self.gate = nn.Parameter(torch.zeros(dim))
        if cfg.fuse_logits:  # zero-initialised weight of the carried mask added to the head's logits
            self.logit_gate = nn.Parameter(torch.zeros(()))

    @classmethod
    def seeded(cls, head_cfg: HeadConfig, cfg: Optional[TemporalConfig] = None, seed: int = 0) -> "TemporalMemory":
        """Fresh weights from a fixed seed (the global RNG is left as it was)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            return cls(head_cfg, cfg)

    def new_bank(self) -> MemoryBank:
        return MemoryBank(self.cfg.memory_frames, self.cfg.keep_first)

    def memory_delta(self, head: UnionSegmentationHead, tar_feat: Tensor,
                     bank: Optional[MemoryBank]) -> Optional[Tuple[Tensor, Tensor]]:
        """What the bank adds to ``tar_feat`` before the gate (feature readout plus the
        carried mask through the head's previous-mask encoder) and the carried mask itself
        (logits ``[B, 1, side, side]``); None when the bank is empty."""
        read = None if bank is None else bank.read(self.memory_encoder)
        if read is None:
            return None
        memory, pos = read
        readout, prior = self.memory_attention(tar_feat, memory, pos, bank.ages())
        return readout + head.prompt_encoder.embed_low_res(prior), prior

    def condition(self, head: UnionSegmentationHead, ctx: HeadContext, bank: Optional[MemoryBank]) -> HeadContext:
        """The head context with memory applied to its target features (``ctx`` itself
        when the bank is empty)."""
        return self.prepare_rows(head, ctx, [bank])[0]

    def prepare_rows(self, head: UnionSegmentationHead, ctx: HeadContext,
                     banks: Sequence[Optional[MemoryBank]]) -> Tuple[HeadContext, Optional[Tensor]]:
        """As :meth:`condition` with one bank per batch row (one bank for all rows when
        ``banks`` has a single entry), plus the carried masks for :meth:`fuse` (zero logits
        for rows with an empty bank). Rows with an empty bank get nothing added, and
        ``(ctx, None)`` comes back when every bank is empty."""
        feat = ctx.tar_feat
        if len(banks) == 1:
            out = self.memory_delta(head, feat, banks[0])
        else:
            if len(banks) != feat.shape[0]:
                raise ValueError(f"{len(banks)} memory banks for a batch of {feat.shape[0]} targets")
            rows = [self.memory_delta(head, feat[i:i + 1], b) for i, b in enumerate(banks)]
            filled = [r for r in rows if r is not None]
            out = None
            if filled:
                out = tuple(torch.cat([r[j] if r is not None else torch.zeros_like(filled[0][j])
                                       for r in rows]) for j in (0, 1))
        if out is None:
            return ctx, None
        delta, prior = out
        return replace(ctx, tar_feat=feat + self.gate.view(1, -1, 1, 1) * delta.to(feat.dtype)), prior

    def fuse(self, full: Tensor, low: Tensor, prior: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        """With ``fuse_logits``: the head's logits plus ``logit_gate`` times the carried mask
        (resized to each), so a weak head's guess on an occluded frame is completed by what
        the earlier frames showed; unchanged otherwise (and while the gate is zero)."""
        if prior is None or not self.cfg.fuse_logits:
            return full, low

        def add(x: Tensor) -> Tensor:
            up = F.interpolate(prior.to(x.dtype), size=x.shape[-2:], mode="bilinear", align_corners=False)
            return x + self.logit_gate.to(x.dtype) * up

        return add(full), add(low).clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP)

    def memorise(self, ctx: HeadContext, low_res: Tensor) -> Tensor:
        """Memory tokens ``[B, N, 2C]`` (keys, values) of a finished prediction (``low_res``: the head's
        last low-resolution logits) on the frame's unconditioned target features."""
        return self.memory_encoder(ctx.tar_feat, low_res)

    @staticmethod
    def confident(low_res: Tensor, threshold: float) -> bool:
        """True when every sample predicts some object with mean probability >= threshold."""
        prob = torch.sigmoid(low_res.detach().float()).flatten(1)
        obj = prob > 0.5
        if not bool(obj.any(dim=1).all()):
            return False
        mean = (prob * obj).sum(1) / obj.sum(1)
        return bool((mean >= threshold).all())

    def decode(self, head: UnionSegmentationHead, ctx: HeadContext, bank: Optional[MemoryBank],
               refine_iterations: int = 1, write: bool = True, identity: str = "per_pass") -> Tuple[Tensor, Tensor]:
        """The head's first pass plus ``refine_iterations`` refinements (``identity``: the
        point-identity semantics of :func:`decode_with_refinement`; "per_pass" is the plain
        loop the trainer uses) on the memory-conditioned context; the result is written to
        ``bank`` (when ``write``)."""
        return self.decode_rows(head, ctx, [bank], refine_iterations, write, identity)

    def decode_rows(self, head: UnionSegmentationHead, ctx: HeadContext, banks: Sequence[Optional[MemoryBank]],
                    refine_iterations: int = 1, write: bool = True,
                    identity: str = "per_pass") -> Tuple[Tensor, Tensor]:
        """:meth:`decode` of a batch with one bank per row (see :meth:`condition_rows`);
        row ``i``'s memory tokens go to ``banks[i]``."""
        cond, prior = self.prepare_rows(head, ctx, banks)
        full, low = self.fuse(*decode_with_refinement(head, cond, refine_iterations, identity), prior)
        if write:
            if len(banks) == 1 and banks[0] is not None:
                banks[0].add(self.memorise(ctx, low), self.confident(low, self.cfg.first_confidence))
            elif len(banks) > 1:
                tokens = self.memorise(ctx, low)
                for i, bank in enumerate(banks):
                    if bank is not None:
                        bank.add(tokens[i:i + 1], self.confident(low[i:i + 1], self.cfg.first_confidence))
        return full, low
