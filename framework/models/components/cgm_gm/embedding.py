"""Conditioning embedding of CGM-GM: an MLP ``C -> 32 -> 32 -> n_cond`` with ReLU after every layer."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["ConditionEmbedding"]


class ConditionEmbedding(nn.Module):
    """``[B, C]`` scaled conditions -> ``[B, T, n_cond]`` (the embedding repeated over the T frames).

    Args:
        num_conditions: C (6 in the main configuration).
        embedding_dim: n_cond (16 in the best configuration).
        hidden_dim: width of the two hidden layers (32).
    """

    def __init__(self, *, num_conditions: int, embedding_dim: int, hidden_dim: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(num_conditions, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, embedding_dim), nn.ReLU(),
        )
        self.num_conditions, self.embedding_dim = num_conditions, embedding_dim

    def forward(self, condition: Tensor, num_frames: int) -> Tensor:
        if condition.dim() != 2 or condition.shape[-1] != self.num_conditions:
            raise ValueError(f"condition must be [B, {self.num_conditions}], got {tuple(condition.shape)}")
        return self.net(condition).unsqueeze(1).expand(-1, num_frames, -1)
