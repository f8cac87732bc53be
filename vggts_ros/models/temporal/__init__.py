"""Temporal VGGT-S: memory encoder, memory bank and memory attention applied to the
target features before the Union Segmentation Head (see SPEC "Temporal VGGT-S")."""

from .checkpoint import TEMPORAL_FILENAME, load_temporal, save_temporal
from .config import TemporalConfig
from .memory_attention import MemoryAttention
from .memory_bank import MemoryBank
from .memory_encoder import MemoryEncoder
from .temporal_memory import TemporalMemory

__all__ = ["MemoryAttention", "MemoryBank", "MemoryEncoder", "TEMPORAL_FILENAME", "TemporalConfig",
           "TemporalMemory", "load_temporal", "save_temporal"]
