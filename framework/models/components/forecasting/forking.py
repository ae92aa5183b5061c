"""Forking-sequence indexing: fork ``t`` (the last observed position) forecasts positions ``t+1 .. t+H``."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["fork_horizon_index", "gather_horizon"]


def fork_horizon_index(fork_positions: Tensor, horizon: int) -> Tensor:
    """``[F, H]`` long: ``fork_positions[f] + 1 + h``."""
    return fork_positions[:, None] + 1 + torch.arange(horizon, device=fork_positions.device)[None, :]


def gather_horizon(values: Tensor, fork_positions: Tensor, horizon: int) -> Tensor:
    """``values [B, T, ...]`` -> ``[B, F, H, ...]`` at positions ``t+1 .. t+H`` of every fork ``t``."""
    index = fork_horizon_index(fork_positions, horizon)
    if int(index.max()) >= values.shape[1]:
        raise ValueError(f"forks up to position {int(fork_positions.max())} need {int(index.max()) + 1} steps of "
                         f"known covariates (horizon {horizon}), got {values.shape[1]}")
    return values[:, index]
