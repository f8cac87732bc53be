"""Iterative point tracker (VGGSfM / CoTracker style) on dense per-frame feature maps."""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import nn

from ...layers.mlp import Mlp
from .blocks import CorrBlock, EfficientUpdateFormer
from .utils import flow_embedding, flow_frequencies, grid_pos_embed, sample_points, sample_points_f32_exact


class BaseTrackerPredictor(nn.Module):
    """Track query points of frame 0 through all frames.

    Each iteration looks up multi-scale correlations of every track's feature around its
    current position, encodes its displacement from the query, and lets the update
    transformer predict a coordinate step and a feature update. Visibility and confidence
    are read from the final track features.
    """

    def __init__(
        self,
        stride: int = 1,
        corr_levels: int = 5,
        corr_radius: int = 4,
        latent_dim: int = 128,
        hidden_size: int = 384,
        use_spaceatt: bool = True,
        depth: int = 6,
        max_scale: int = 518,
        predict_conf: bool = True,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.latent_dim = latent_dim
        self.corr_levels = corr_levels
        self.corr_radius = corr_radius
        self.max_scale = max_scale
        self.predict_conf = predict_conf
        # "volume" (reference order) or "window" (low memory); see CorrBlock.
        self.corr_mode = "volume"
        self.flows_emb_dim = latent_dim // 2
        self.transformer_dim = 3 * latent_dim + 4

        self.corr_mlp = Mlp(corr_levels * (2 * corr_radius + 1) ** 2, hidden_size, latent_dim)
        self.query_ref_token = nn.Parameter(torch.randn(1, 2, self.transformer_dim))
        self.updateformer = EfficientUpdateFormer(
            space_depth=depth if use_spaceatt else 0,
            time_depth=depth,
            input_dim=self.transformer_dim,
            hidden_size=hidden_size,
            output_dim=latent_dim + 2,
            mlp_ratio=4.0,
            add_space_attn=use_spaceatt,
        )
        self.fmap_norm = nn.LayerNorm(latent_dim)
        self.ffeat_norm = nn.GroupNorm(1, latent_dim)
        self.ffeat_updater = nn.Sequential(nn.Linear(latent_dim, latent_dim), nn.GELU())
        self.vis_predictor = nn.Sequential(nn.Linear(latent_dim, 1))
        if predict_conf:
            self.conf_predictor = nn.Sequential(nn.Linear(latent_dim, 1))

    def forward(
        self,
        query_points: torch.Tensor,
        fmaps: torch.Tensor,
        iters: int = 6,
        apply_sigmoid: bool = True,
    ) -> Tuple[List[torch.Tensor], torch.Tensor, Optional[torch.Tensor]]:
        """``query_points [B, N, 2]`` (x, y in image pixels of frame 0), ``fmaps [B, S, C, h, w]``.

        Returns per-iteration coordinates ``[B, S, N, 2]`` in image pixels, visibility and
        confidence ``[B, S, N]`` (probabilities unless ``apply_sigmoid`` is False).
        """
        b, n, d = query_points.shape
        if d != 2:
            raise ValueError(f"query points must be [B, N, 2], got {tuple(query_points.shape)}")
        _, s, c, hh, ww = fmaps.shape
        fmaps = self.fmap_norm(fmaps.permute(0, 1, 3, 4, 2)).permute(0, 1, 4, 2, 3)

        query = query_points.to(fmaps.dtype) / float(self.stride)
        coords = query[:, None].repeat(1, s, 1, 1)  # [B, S, N, 2] in feature-map pixels
        query_feat = sample_points(fmaps[:, 0], query)  # [B, N, C]
        track_feats = query_feat[:, None].repeat(1, s, 1, 1)  # [B, S, N, C]
        corr = CorrBlock(fmaps, num_levels=self.corr_levels, radius=self.corr_radius, mode=self.corr_mode)

        # The query positions never move, so their position embedding is computed once. It is a
        # float32 table sampled in float32 in every precision, as in the published tracker,
        # with an arithmetic that does not depend on the CPU's instruction set (see
        # sample_points_f32_exact: the iterations amplify its last bit).
        grid = grid_pos_embed(self.transformer_dim, hh, ww, device=fmaps.device)
        pos_emb = sample_points_f32_exact(grid.expand(b, -1, -1, -1), query).reshape(b * n, 1, -1).to(fmaps.dtype)
        del grid
        ref = self.query_ref_token
        ref = torch.cat((ref[:, :1], ref[:, 1:2].expand(-1, s - 1, -1)), dim=1).to(fmaps.dtype)
        # Everything the loop needs on the device is built here, before it: no host-to-device
        # copies per iteration (each would synchronise a CUDA stream).
        freq = flow_frequencies(self.flows_emb_dim, fmaps.device)

        coord_preds = []
        for _ in range(iters):
            coords = coords.detach()
            corrs = corr.corr_sample(track_feats, coords)  # [B, S, N, K]
            corr_emb = self.corr_mlp(corrs.permute(0, 2, 1, 3).reshape(b * n, s, -1))
            flows = (coords - coords[:, :1]).permute(0, 2, 1, 3).reshape(b * n, s, 2)
            flow_emb = torch.cat(
                (flow_embedding(flows, self.flows_emb_dim, freq), flows / self.max_scale, flows / self.max_scale), dim=-1
            )
            feats_bns = track_feats.permute(0, 2, 1, 3).reshape(b * n, s, c)
            x = torch.cat((flow_emb, corr_emb, feats_bns), dim=-1) + pos_emb + ref
            delta = self.updateformer(x.reshape(b, n, s, -1)).reshape(b * n * s, -1)

            feats_flat = feats_bns.reshape(b * n * s, c)
            feats_flat = self.ffeat_updater(self.ffeat_norm(delta[:, 2:])) + feats_flat
            track_feats = feats_flat.reshape(b, n, s, c).permute(0, 2, 1, 3)
            coords = coords + delta[:, :2].reshape(b, n, s, 2).permute(0, 2, 1, 3)
            coords = torch.cat((query[:, None], coords[:, 1:]), dim=1)  # frame 0 stays at the query
            coord_preds.append(coords * self.stride)

        flat = track_feats.reshape(b * s * n, c)
        vis = self.vis_predictor(flat).reshape(b, s, n)
        conf = self.conf_predictor(flat).reshape(b, s, n) if self.predict_conf else None
        if apply_sigmoid:
            vis = torch.sigmoid(vis)
            conf = torch.sigmoid(conf) if conf is not None else None
        return coord_preds, vis, conf
