"""Temporal weights in their own file, loaded by exact key names.

Layout: ``{"temporal": state dict of TemporalMemory, "temporal_config": {...},
"embed_dim": int, "side": int}``, written with tensors and plain values only so it opens
with ``torch.load(weights_only=True)``. The head's ``main_exp.pth`` is a separate file and
loads exactly as before.
"""

from __future__ import annotations

import os
from typing import Optional, Union

import torch

from ...checkpoint import CheckpointError, load_exact
from ...config import HeadConfig
from .config import TemporalConfig
from .temporal_memory import TemporalMemory

TEMPORAL_FILENAME = "temporal.pth"


def save_temporal(module: TemporalMemory, path: Union[str, os.PathLike]) -> None:
    payload = {
        "temporal": {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()},
        "temporal_config": module.cfg.to_dict(),
        "embed_dim": int(module.head_cfg.embed_dim),
        "side": int(module.side),
    }
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_temporal(path: Union[str, os.PathLike], head_cfg: HeadConfig, cfg: Optional[TemporalConfig] = None,
                  device: Union[str, torch.device, None] = None) -> TemporalMemory:
    """Build :class:`TemporalMemory` for ``head_cfg`` and load ``path`` strictly.

    The architecture comes from the file; a ``cfg`` given by the caller must agree with
    it on every shape-defining field (its streaming fields win). Raises
    :class:`CheckpointError` naming what does not match."""
    p = os.fspath(path)
    if os.path.isdir(p):
        p = os.path.join(p, TEMPORAL_FILENAME)
    if not os.path.isfile(p):
        raise CheckpointError(f"temporal checkpoint not found: {p}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read temporal checkpoint {p}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, dict) or "temporal" not in obj or "temporal_config" not in obj:
        what = "a head checkpoint (main_exp.pth layout), not" if isinstance(obj, dict) and "model" in obj else "not"
        raise CheckpointError(f"{p} is {what} temporal weights: expected 'temporal' and 'temporal_config' entries")
    try:
        file_cfg = TemporalConfig.from_dict(dict(obj["temporal_config"]))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{p}: bad temporal_config: {exc}") from exc
    if cfg is not None:
        diff = [f"{k} (file {getattr(file_cfg, k)!r}, requested {getattr(cfg, k)!r})"
                for k in TemporalConfig.ARCH if getattr(file_cfg, k) != getattr(cfg, k)]
        if diff:
            raise CheckpointError(f"{p}: temporal architecture differs: " + ", ".join(diff))
        file_cfg = cfg.validate()
    if int(obj.get("embed_dim", -1)) != int(head_cfg.embed_dim):
        raise CheckpointError(f"{p}: temporal weights are for embed_dim {obj.get('embed_dim')}, "
                              f"the head has {head_cfg.embed_dim}")
    module = TemporalMemory(head_cfg, file_cfg)
    if int(obj.get("side", -1)) != module.side:
        raise CheckpointError(f"{p}: temporal weights use a {obj.get('side')} token grid, this head gives {module.side}")
    load_exact(module, obj["temporal"], what=f"temporal checkpoint {p}")
    module.eval()
    return module.to(device) if device is not None else module
