"""Reading the ``vggts_head.pt`` fixture: the head config and the seeded feature maps."""

import dataclasses

import torch

from vggts_ros.config import HeadConfig


def head_config(fx) -> HeadConfig:
    known = {f.name for f in dataclasses.fields(HeadConfig)}
    return HeadConfig(**{k: v for k, v in fx["config"].items() if k in known})


def fixture_features(fx) -> torch.Tensor:
    gen = torch.Generator().manual_seed(int(fx["feat_seed"]))
    return torch.randn(tuple(fx["feat_shape"]), generator=gen, dtype=torch.float32)
