"""VGGT track head: DPT feature maps at half resolution + the iterative tracker."""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import nn

from .dpt_head import DPTHead
from .track_modules.base_track_predictor import BaseTrackerPredictor


class TrackHead(nn.Module):
    """Keys ``feature_extractor.*`` (DPT, feature-only, down ratio 2, no position embedding)
    and ``tracker.*`` as in the published checkpoint."""

    def __init__(
        self,
        dim_in: int,
        patch_size: int = 14,
        features: int = 128,
        iters: int = 4,
        predict_conf: bool = True,
        stride: int = 2,
        corr_levels: int = 7,
        corr_radius: int = 4,
        hidden_size: int = 384,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.iters = iters
        self.feature_extractor = DPTHead(
            dim_in=dim_in,
            patch_size=patch_size,
            features=features,
            feature_only=True,
            down_ratio=2,
            pos_embed=False,
        )
        self.tracker = BaseTrackerPredictor(
            latent_dim=features,
            predict_conf=predict_conf,
            stride=stride,
            corr_levels=corr_levels,
            corr_radius=corr_radius,
            hidden_size=hidden_size,
        )

    def features(self, tokens_list: List[torch.Tensor], images: torch.Tensor, patch_start_idx: int) -> torch.Tensor:
        return self.feature_extractor(tokens_list, images, patch_start_idx)

    def track(
        self, feature_maps: torch.Tensor, query_points: torch.Tensor, iters: Optional[int] = None
    ) -> Tuple[List[torch.Tensor], torch.Tensor, Optional[torch.Tensor]]:
        return self.tracker(query_points, feature_maps, iters=self.iters if iters is None else iters)

    def forward(self, tokens_list, images, patch_start_idx, query_points, iters=None):
        return self.track(self.features(tokens_list, images, patch_start_idx), query_points, iters)
