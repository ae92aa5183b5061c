"""Non-crossing quantile outputs (GluonTS's incremental quantile function, "IQF")."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["IncrementalQuantileHead", "validate_quantiles"]


def validate_quantiles(quantiles: Sequence[float]) -> list[float]:
    """Strictly increasing levels in (0, 1); raises ValueError otherwise."""
    levels = [float(q) for q in quantiles]
    if not levels or any(not 0.0 < q < 1.0 for q in levels) or any(b <= a for a, b in zip(levels, levels[1:])):
        raise ValueError(f"quantiles must be strictly increasing levels in (0, 1), got {list(quantiles)}")
    return levels


class IncrementalQuantileHead(nn.Module):
    """``q_1 = a``, ``q_j = q_{j−1} + softplus(b_j)``: a linear map to Q values whose outputs never cross.

    Args:
        in_features: input width.
        num_quantiles: Q.
    """

    def __init__(self, *, in_features: int, num_quantiles: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_features, num_quantiles)
        self.num_quantiles = num_quantiles

    def forward(self, x: Tensor) -> Tensor:
        """``x [..., in_features]`` -> non-decreasing ``[..., Q]``."""
        raw = self.proj(x)
        if self.num_quantiles == 1:
            return raw
        return torch.cat([raw[..., :1], raw[..., :1] + torch.cumsum(F.softplus(raw[..., 1:]), dim=-1)], dim=-1)
