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
from typing import TYPE_CHECKING, Dict, Iterable, Mapping, Optional, Sequence

if TYPE_CHECKING:  # torch is imported where a checkpoint is read: the weight-free node never needs it
    import torch
    from torch import nn


# Every "no weights" error ends with this: the weight-free backend runs without any download.
NO_WEIGHTS_HINT = (" (no weights at hand? the weight-free backend needs none: model.backend: geometric as a node "
                   "parameter, --backend geometric for vggts segment / replay / demo)")


class CheckpointError(RuntimeError):
    """A checkpoint could not be found, read, or matched to the network."""


def _looks_like_repo_id(source: str) -> bool:
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "/", "~"))


# Where each published file goes, to name the option in messages.
_OPTIONS = {
    "model.pt": "--vggt-checkpoint (node: model.vggt_checkpoint)",
    "main_exp.pth": "--head-checkpoint (node: model.head_checkpoint)",
}
PROBE_TIMEOUT = 1.0  # seconds to decide whether the Hugging Face endpoint is reachable


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set, read now rather than at import."""
    return _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE")


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, from ``HF_HUB_CACHE`` / ``HF_HOME`` as they are now."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.path.expanduser(os.environ["HF_HUB_CACHE"]))
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(os.path.expanduser(home)) / "hub"


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def endpoint_reachable(url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """Can a TCP connection to ``url``'s host (or to the HTTPS proxy) open within ``timeout``?

    Runs in a daemon thread so that a hanging name lookup cannot hold the caller longer.
    """
    import socket
    import threading
    from urllib.parse import urlsplit

    proxy = next((os.environ[k] for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
                  if os.environ.get(k)), "")
    target = urlsplit(proxy if "://" in proxy else (f"http://{proxy}" if proxy else url))
    host = target.hostname
    port = target.port or (443 if target.scheme == "https" else 80)
    if not host:
        return False
    result = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, name="hf-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.2)
    return bool(result and result[0])


def _offline_error(source: str, filename: str, cache: Path, why: str) -> CheckpointError:
    option = _OPTIONS.get(filename, "the checkpoint option")
    return CheckpointError(
        f"{filename} of Hugging Face repo {source!r} is not in the local cache ({cache}) and {why}. "
        f"Download https://huggingface.co/{source}/resolve/main/{filename} on a machine with network "
        f"access and pass its local path (the file, or the directory holding it) with {option}"
    )


def resolve_checkpoint(source: str | os.PathLike, filename: str) -> Path:
    """Turn a local file, a local directory or a Hugging Face repo id into a file path.

    A repo id is looked up in the local Hugging Face cache first (no network). Otherwise,
    with ``HF_HUB_OFFLINE`` set or the endpoint unreachable within about a second, the
    error comes at once (no download retries) and names the local path option to use, and
    the weight-free backend that needs no file at all.
    """
    try:
        return _resolve(source, filename)
    except CheckpointError as exc:
        raise CheckpointError(str(exc).rstrip(".") + NO_WEIGHTS_HINT) from exc.__cause__


def _resolve(source: str | os.PathLike, filename: str) -> Path:
    """:func:`resolve_checkpoint` without the weight-free hint.

    A repo id is looked up in the local Hugging Face cache first (no network). Otherwise,
    with ``HF_HUB_OFFLINE`` set or the endpoint unreachable within about a second, the
    error comes at once (no download retries) and names the local path option to use.
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
        from huggingface_hub import hf_hub_download, try_to_load_from_cache
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise CheckpointError(
            f"{source!r} is not a local file and huggingface_hub is not installed; "
            f"download {filename} from https://huggingface.co/{source} and pass its path"
            + (f" with {_OPTIONS[filename]}" if filename in _OPTIONS else "")
        ) from exc
    cache = hub_cache_dir()
    try:
        cached = try_to_load_from_cache(str(source), filename, cache_dir=str(cache))
    except Exception:  # a malformed cache entry is the same as none
        cached = None
    if isinstance(cached, str) and Path(cached).is_file():
        return Path(cached)
    if hub_offline():
        raise _offline_error(str(source), filename, cache, "HF_HUB_OFFLINE is set")
    endpoint = hub_endpoint()
    if not endpoint_reachable(endpoint):
        raise _offline_error(str(source), filename, cache,
                             f"{endpoint} cannot be reached (no network?) within {PROBE_TIMEOUT:.0f} s")
    try:
        return Path(hf_hub_download(repo_id=str(source), filename=filename, cache_dir=str(cache)))
    except Exception as exc:  # network errors come in many types
        raise CheckpointError(
            f"could not fetch {filename} from Hugging Face repo {source!r} "
            f"({type(exc).__name__}: {exc}). Offline? Download it elsewhere and pass the local path"
            + (f" with {_OPTIONS[filename]}" if filename in _OPTIONS else "") + "."
        ) from exc


def read_state_dict(path: str | os.PathLike) -> Dict[str, "torch.Tensor"]:
    """Read a checkpoint file as a flat ``{key: tensor}`` dict, without running pickles.

    Accepts a bare state dict, ``{"model": ...}`` / ``{"state_dict": ...}`` wrappers and
    DDP's ``module.`` prefix.
    """
    import torch

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
    import torch

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
    import torch

    payload = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    torch.save({wrap: payload} if wrap else payload, str(path))
