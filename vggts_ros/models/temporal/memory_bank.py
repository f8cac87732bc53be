"""Memory bank: the memory tokens of the last K predictions of one stream (batched for
training: every tensor is ``[B, N, D]``, keys and values of the memory encoder), plus optionally the first confident one, which
video segmenters keep as an anchor when the recent frames go bad (occlusion, blur)."""

from __future__ import annotations

from collections import deque
from typing import Deque, Optional, Tuple

import torch
from torch import Tensor


class MemoryBank:
    def __init__(self, capacity: int, keep_first: bool = True) -> None:
        if int(capacity) < 1:
            raise ValueError(f"memory bank capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.keep_first = bool(keep_first)
        self.recent: Deque[Tensor] = deque(maxlen=self.capacity)
        self.first: Optional[Tensor] = None
        self.added = 0  # entries written since the last reset

    def __len__(self) -> int:
        return len(self.recent) + (self.first is not None)

    def reset(self) -> None:
        self.recent.clear()
        self.first = None
        self.added = 0

    def add(self, tokens: Tensor, confident: bool = False) -> None:
        """Append ``tokens`` ``[B, N, D]`` (the oldest recent entry falls out past K); the
        first ``confident`` entry since the last reset is also kept as the anchor."""
        if self.recent and tokens.shape != self.recent[-1].shape:
            raise ValueError(f"memory tokens {tuple(tokens.shape)} do not match the bank's "
                             f"{tuple(self.recent[-1].shape)}; reset the bank first")
        self.recent.append(tokens)
        if self.keep_first and self.first is None and confident:
            self.first = tokens
        self.added += 1

    def ages(self):
        """Age of each entry in :meth:`read` order: 0 = the kept first frame, 1 = newest."""
        return ([0] if self.first is not None else []) + list(range(len(self.recent), 0, -1))

    def read(self, encoder) -> Optional[Tuple[Tensor, Tensor]]:
        """``(memory [B, M, D], position [B, M, C])`` (all entries, the kept first one
        first; spatial + temporal encodings), or None when empty. ``encoder`` is the
        :class:`MemoryEncoder` (position tables, ``C`` channels)."""
        if not len(self):
            return None
        tokens = []
        pos = []
        spatial = None
        entries = list(zip(self.ages(), ([self.first] if self.first is not None else []) + list(self.recent)))
        for age, t in entries:
            if spatial is None:
                spatial = encoder.position(device=t.device)
            tokens.append(t)
            pos.append((spatial + encoder.age_encoding(age)).expand(t.shape[0], -1, -1))
        return torch.cat(tokens, dim=1), torch.cat(pos, dim=1)
