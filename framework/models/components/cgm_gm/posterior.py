"""Posterior ``q(z_t | x_≤t, c)`` of CGM-GM: a causal GRU over [spectrogram frame ‖ condition embedding]."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["GRUPosterior"]


def _mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))


class GRUPosterior(nn.Module):
    """Unidirectional one-layer GRU (hidden ``rnn_dim + n_cond``), BatchNorm over its channels, two MLP heads.

    Shapes: ``x [B, T, F]``, ``cond [B, T, n_cond]`` -> ``mean, logvar [B, T, z_dim]`` (one latent per frame).

    Args:
        num_frequencies: F (81).
        embedding_dim: n_cond.
        z_dim: latent size per frame.
        rnn_dim: base GRU width (128; the GRU has ``rnn_dim + embedding_dim`` units).
        mlp_hidden: hidden width of the mean / log-variance heads (64).
    """

    def __init__(self, *, num_frequencies: int, embedding_dim: int, z_dim: int, rnn_dim: int = 128,
                 mlp_hidden: int = 64) -> None:
        super().__init__()
        hidden = rnn_dim + embedding_dim
        self.rnn = nn.GRU(num_frequencies + embedding_dim, hidden, num_layers=1, batch_first=True)
        self.norm = nn.BatchNorm1d(hidden)
        self.mean = _mlp(hidden, mlp_hidden, z_dim)
        self.logvar = _mlp(hidden, mlp_hidden, z_dim)

    def forward(self, x: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        h, _ = self.rnn(torch.cat([x, cond], dim=-1))
        h = self.norm(h.transpose(1, 2)).transpose(1, 2)
        return self.mean(h), self.logvar(h)
