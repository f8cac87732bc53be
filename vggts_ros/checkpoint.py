"""Finding and reading published checkpoints without executing pickled code.

Two files matter: VGGT-1B's ``model.pt`` (a flat state dict of all five VGGT heads)
and VGGT-S's ``main_exp.pth`` (``{"model": state_dict}``, keys possibly prefixed with
``module.`` by DDP). Both are opened with ``torch.load(weights_only=True)``; a key the
network needs but the file lacks, a key the file has that the network does not know, or
a shape that differs is reported by name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional, Sequence

import torch
from torch import nn


class CheckpointError(RuntimeError):
    """A checkpoint could not be found, read, or matched to the network."""


def _looks_like_repo_id(source: str) -> bool:
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "/", "~"))


def resolve_checkpoint(source: str | os.PathLike, filename: str) -> Path:
    """Turn a local file, a local directory or a Hugging Face repo id into a file path.

    Downloads only happen for repo ids that are not local paths; without a network (or
    without ``huggingface_hub``) the error says what to do instead.
    """
    if source is None or str(source) == "":
        raise CheckpointError("no checkpoint given")
    path = Path(os.path.expanduser(str(source)))
    if path.is_file():
        return path
    if path.is_dir():
        candidate = path / filename
        if candidate.is_file():
            return candidate
        raise CheckpointError(f"directory {path} does not contain {filename}")
    if not _looks_like_repo_id(str(source)):
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise CheckpointError(
            f"{source!r} is not a local file and huggingface_hub is not installed; "
            f"download {filename} from https://huggingface.co/{source} and pass its path"
        ) from exc
    try:
        return Path(hf_hub_download(repo_id=str(source), filename=filename))
    except Exception as exc:  # network errors come in many types
        raise CheckpointError(
            f"could not fetch {filename} from Hugging Face repo {source!r} "
            f"({type(exc).__name__}: {exc}). Offline? Download it elsewhere and pass the local path."
        ) from exc


def read_state_dict(path: str | os.PathLike) -> Dict[str, torch.Tensor]:
    """Read a checkpoint file as a flat ``{key: tensor}`` dict, without running pickles.

    Accepts a bare state dict, ``{"model": ...}`` / ``{"state_dict": ...}`` wrappers and
    DDP's ``module.`` prefix.
    """
    try:
        try:
            # Memory-mapped: VGGT-1B's model.pt is ~5 GB, most of it heads we skip.
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc) and "zip" not in str(exc):
                raise
            obj = torch.load(str(path), map_location="cpu", weights_only=True)  # legacy format
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from exc
    if isinstance(obj, Mapping) and not _is_tensor_dict(obj):
        for wrapper in ("model", "state_dict"):
            if wrapper in obj and isinstance(obj[wrapper], Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not _is_tensor_dict(obj):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    state = dict(obj)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _is_tensor_dict(obj: Mapping) -> bool:
    return len(obj) > 0 and all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items())


def select_prefixes(state: Mapping[str, torch.Tensor], keep: Sequence[str]) -> Dict[str, torch.Tensor]:
    """Keep the entries whose key starts with one of ``keep`` (e.g. ``aggregator.``)."""
    return {k: v for k, v in state.items() if k.startswith(tuple(keep))}


def _preview(keys: Iterable[str], limit: int = 12) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_exact(module: nn.Module, state: Mapping[str, torch.Tensor], what: str = "checkpoint") -> None:
    """Load ``state`` into ``module`` requiring the same key set and shapes.

    Nothing is modified when the check fails.
    """
    expected = module.state_dict()
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    wrong_shape = [
        f"{k} (file {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
        for k in sorted(set(expected) & set(state))
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_preview(unexpected)}")
    if wrong_shape:
        problems.append(f"shape mismatch: {_preview(wrong_shape)}")
    if problems:
        raise CheckpointError(f"{what} does not match the network; " + "; ".join(problems))
    module.load_state_dict(dict(state), strict=True)


def save_state_dict(state: Mapping[str, torch.Tensor], path: str | os.PathLike, wrap: Optional[str] = None) -> None:
    """Write tensors in the published layout (optionally wrapped, as ``main_exp.pth``)."""
    payload = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    torch.save({wrap: payload} if wrap else payload, str(path))
