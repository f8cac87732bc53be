"""Choosing the torch device from the configuration (``auto``, ``cpu``, ``cuda``, ``cuda:N``).

Its own module so that the backends and the pipeline both use it without importing each other.
"""

from __future__ import annotations


def resolve_device(name: str) -> str:
    """``auto`` picks CUDA when present; asking for CUDA without it is an error."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda") and not str(name).startswith("cuda:"):
        raise ValueError(f"model.device must be auto, cpu or cuda, got {name!r}")
    if name != "cpu" and not torch.cuda.is_available():
        raise ValueError(f"model.device is {name!r} but no CUDA device is available (use 'auto' or 'cpu')")
    return name
