"""MQ-CNN's forking MLP decoder (Wen et al. 2017; GluonTS ``ForkingMLPDecoder``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ForkingMLPDecoder"]


class ForkingMLPDecoder(nn.Module):
    """Global MLP -> horizon-specific contexts + a horizon-agnostic context; local MLP shared across horizons.

    At every fork ``t`` the global MLP reads the encoder state and the *flattened* known covariates of the next H
    steps (GluonTS: width ``enc_dim + H·C``) and emits ``H`` horizon-specific contexts of ``dim`` units and one
    horizon-agnostic context (softrelu). The local MLP, shared over horizons, reads ``[c_h, c_a, x_{t+h}, extra_h]``
    (Wen et al.'s local MLP; ``extra_h`` is e.g. MQ-Transformer's attention context) and returns ``dim`` features.

    Args:
        enc_dim: encoder state width. horizon: H. num_features: C. dim: context width (GluonTS 30).
        extra_dim: width of optional per-horizon extra inputs of the local MLP.
    """

    def __init__(self, *, enc_dim: int, horizon: int, num_features: int, dim: int = 30, extra_dim: int = 0) -> None:
        super().__init__()
        self.horizon, self.dim = horizon, dim
        self.global_mlp = nn.Linear(enc_dim + horizon * num_features, (horizon + 1) * dim)
        self.local_mlp = nn.Sequential(nn.Linear(2 * dim + num_features + extra_dim, dim), nn.ReLU())
        self.out_features = dim

    def forward(self, enc: Tensor, future: Tensor, extra: Tensor | None = None) -> Tensor:
        """``enc [B, F, E]``, ``future [B, F, H, C]``, ``extra [B, F, H, X]`` -> ``[B, F, H, dim]``."""
        B, Fk, H, _ = future.shape
        contexts = F.softplus(self.global_mlp(torch.cat([enc, future.flatten(2)], dim=-1)))
        contexts = contexts.view(B, Fk, H + 1, self.dim)
        specific, agnostic = contexts[:, :, :H], contexts[:, :, H:].expand(B, Fk, H, self.dim)
        parts = [specific, agnostic, future] + ([extra] if extra is not None else [])
        return self.local_mlp(torch.cat(parts, dim=-1))
