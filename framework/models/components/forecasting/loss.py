"""Quantile (pinball) loss in GluonTS's convention."""

from __future__ import annotations

from torch import Tensor

__all__ = ["pinball_loss"]


def pinball_loss(quantiles: Tensor, target: Tensor, levels: Tensor) -> Tensor:
    """``2·(q·(y − ŷ)⁺ + (1 − q)·(ŷ − y)⁺)`` per element and level.

    Args:
        quantiles: ``[..., Q]`` forecasts. target: ``[...]``. levels: ``[Q]``.

    Returns:
        ``[..., Q]`` losses (average over Q with equal weights, as GluonTS's quantile loss).
    """
    error = target[..., None] - quantiles
    return 2.0 * (levels * error.clamp_min(0) + (1.0 - levels) * (-error).clamp_min(0))
