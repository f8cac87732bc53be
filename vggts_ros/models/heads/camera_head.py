"""VGGT camera head: each view's camera, as a 9-number pose encoding, from its camera token.

The head reads only the camera token (token 0) of every view in the aggregator's last
layer. A small transformer (the *trunk*) attends across the views' tokens; its output is
turned into a pose encoding, and this is repeated ``iterations`` times: each round embeds
the previous estimate (a learned placeholder in the first round), uses it to shift, scale
and gate the layer-normalised tokens (adaptive layer norm, as in diffusion transformers),
and adds a predicted correction to the estimate.

The encoding (``absT_quaR_FoV``): translation (3), rotation as a quaternion (x, y, z, w),
and the vertical then horizontal field of view (radians) of the network's input image.
Translation and quaternion are used as predicted; the fields of view go through a ReLU.
:mod:`vggts_ros.geometry.camera` turns it into extrinsics and intrinsics.
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import Block
from ..layers.mlp import Mlp

POSE_ENCODING_DIM = 9  # translation 3 + quaternion 4 + field of view 2
_ACTIVATIONS = ("linear", "relu", "exp")


def _activate(x: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "linear":
        return x
    if kind == "relu":
        return F.relu(x)
    if kind == "exp":
        return torch.exp(x)
    raise ValueError(f"unknown pose activation {kind!r}; expected one of {_ACTIVATIONS}")


def activate_pose(raw: torch.Tensor, trans_act: str = "linear", quat_act: str = "linear",
                  fov_act: str = "relu") -> torch.Tensor:
    """Apply the per-part activations to a raw ``[..., 9]`` encoding."""
    t, q, fov = raw[..., :3], raw[..., 3:7], raw[..., 7:]
    return torch.cat((_activate(t, trans_act), _activate(q, quat_act), _activate(fov, fov_act)), dim=-1)


class CameraHead(nn.Module):
    """Keys as in VGGT-1B's ``camera_head.*``: ``trunk.{i}``, ``token_norm``, ``trunk_norm``,
    ``empty_pose_tokens``, ``embed_pose``, ``poseLN_modulation.1``, ``pose_branch``."""

    def __init__(
        self,
        dim_in: int = 2048,
        trunk_depth: int = 4,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        init_values: float = 0.01,
        iterations: int = 4,
        trans_act: str = "linear",
        quat_act: str = "linear",
        fov_act: str = "relu",
    ) -> None:
        super().__init__()
        for kind in (trans_act, quat_act, fov_act):
            if kind not in _ACTIVATIONS:
                raise ValueError(f"unknown pose activation {kind!r}; expected one of {_ACTIVATIONS}")
        if iterations < 1:
            raise ValueError(f"the camera head needs at least one iteration, got {iterations}")
        self.iterations = int(iterations)
        self.activations = (trans_act, quat_act, fov_act)
        self.trunk = nn.Sequential(
            *[Block(dim_in, num_heads, mlp_ratio=mlp_ratio, init_values=init_values) for _ in range(trunk_depth)]
        )
        self.token_norm = nn.LayerNorm(dim_in)
        self.trunk_norm = nn.LayerNorm(dim_in)
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, POSE_ENCODING_DIM))
        self.embed_pose = nn.Linear(POSE_ENCODING_DIM, dim_in)
        # Index 0 is a parameter-free SiLU, so the linear layer's keys are ``poseLN_modulation.1.*``.
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim_in, 3 * dim_in))
        self.adaln_norm = nn.LayerNorm(dim_in, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim_in, dim_in // 2, POSE_ENCODING_DIM)

    def forward(self, tokens_list: List[torch.Tensor], iterations: int | None = None) -> List[torch.Tensor]:
        """The activated ``[B, S, 9]`` encoding after every iteration (the last one is the answer).

        ``tokens_list``: the aggregator's per-layer tokens ``[B, S, P, C]``; the last layer
        must be present (a pass that kept only some layers keeps it when the geometry heads
        are on)."""
        last = tokens_list[-1]
        if last is None:
            raise ValueError("the camera head reads the aggregator's last layer, which was not kept")
        tokens = self.token_norm(last[:, :, 0])
        return self.refine(tokens, self.iterations if iterations is None else int(iterations))

    def refine(self, tokens: torch.Tensor, iterations: int) -> List[torch.Tensor]:
        """Iterative refinement from normalised camera tokens ``[B, S, C]``."""
        b, s, _ = tokens.shape
        normed = self.adaln_norm(tokens)  # the same every round
        raw = None
        out: List[torch.Tensor] = []
        for _ in range(iterations):
            previous = self.empty_pose_tokens.expand(b, s, -1) if raw is None else raw.detach()
            shift, scale, gate = self.poseLN_modulation(self.embed_pose(previous)).chunk(3, dim=-1)
            x = tokens + gate * (normed * (1 + scale) + shift)
            delta = self.pose_branch(self.trunk_norm(self.trunk(x)))
            raw = delta if raw is None else raw + delta
            out.append(activate_pose(raw, *self.activations))
        return out
