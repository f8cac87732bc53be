"""Reading the ``vggts_head.pt`` fixture: the head config and the seeded feature maps."""

import dataclasses

import torch

from vggts_ros.config import HeadConfig
from vggts_ros.models.deterministic import standard_normal


def head_config(fx) -> HeadConfig:
    known = {f.name for f in dataclasses.fields(HeadConfig)}
    return HeadConfig(**{k: v for k, v in fx["config"].items() if k in known})


def fixture_features(fx) -> torch.Tensor:
    """``torch.randn(feat_shape)`` from ``feat_seed`` as the fixture generator drew it (the
    vectorised sampler, on any CPU: see ``standard_normal``)."""
    gen = torch.Generator().manual_seed(int(fx["feat_seed"]))
    return standard_normal(tuple(fx["feat_shape"]), gen)
