"""Architecture and streaming settings of Temporal VGGT-S (kept next to the modules
until the pipeline/node integration moves them into ``vggts_ros/config.py``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

from ...schema import from_dict


@dataclass
class TemporalConfig:
    """Memory encoder, bank and memory attention.

    ``memory_frames`` (K): recent frames kept per (object, target camera); the temporal
    position table has one entry per age 1..K plus one for the kept first confident frame
    (``keep_first``). ``tokens``: side of the token grid the memory works on (None: the
    head's self-attention grid ``sa_tokens``; 37 at full size). ``blocks`` x (cross-attention
    to the bank + MLP) with ``num_heads`` heads at the head's ``embed_dim``.
    ``first_confidence``: mean object probability a prediction needs to become the kept
    first frame. ``stale_after_s``: a target frame older than this relative to the last
    one (or going back in time) resets the bank. ``fuse_logits``: also add the carried
    mask to the head's output logits through a zero-initialised scalar gate.
    """

    memory_frames: int = 6
    keep_first: bool = True
    tokens: Optional[int] = None
    blocks: int = 2
    num_heads: int = 4
    mlp_ratio: float = 2.0
    first_confidence: float = 0.75
    stale_after_s: float = 1.0
    fuse_logits: bool = True

    def validate(self) -> "TemporalConfig":
        if int(self.memory_frames) < 1:
            raise ValueError(f"temporal memory_frames must be >= 1, got {self.memory_frames}")
        if self.tokens is not None and int(self.tokens) < 1:
            raise ValueError(f"temporal tokens must be >= 1 or None, got {self.tokens}")
        if int(self.blocks) < 1 or int(self.num_heads) < 1 or float(self.mlp_ratio) <= 0:
            raise ValueError("temporal blocks, num_heads and mlp_ratio must be positive")
        if not 0.0 <= float(self.first_confidence) <= 1.0:
            raise ValueError(f"temporal first_confidence must be in [0, 1], got {self.first_confidence}")
        if float(self.stale_after_s) <= 0:
            raise ValueError(f"temporal stale_after_s must be > 0, got {self.stale_after_s}")
        return self

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TemporalConfig":
        return from_dict(cls, d, "temporal config").validate()

    # fields that change the shapes of the weights (a checkpoint must agree on them)
    ARCH = ("memory_frames", "tokens", "blocks", "num_heads", "mlp_ratio", "fuse_logits")
