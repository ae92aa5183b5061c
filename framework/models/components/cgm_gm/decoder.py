"""Per-frame decoder of CGM-GM: ``[z_t ‖ c_t] -> 128 -> 128 -> F`` (ReLU between, no output activation)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["FrameDecoder"]


class FrameDecoder(nn.Module):
    """``z [B, T, z_dim]``, ``cond [B, T, n_cond]`` -> scaled log-amplitude frames ``[B, T, F]``."""

    def __init__(self, *, z_dim: int, embedding_dim: int, num_frequencies: int, hidden_dim: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(z_dim + embedding_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, num_frequencies),
        )

    def forward(self, z: Tensor, cond: Tensor) -> Tensor:
        return self.net(torch.cat([z, cond], dim=-1))
