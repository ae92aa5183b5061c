"""Peak masking and causal scaling of demand histories.

SPADE's "masked convolution" input: every history value on a peak-event (PE) day is replaced by the most recent
non-PE value (forward fill), so the encoder never sees peak demand; the scale is computed on the same masked history,
because a mean scaler on raw history is itself a carry-over channel (note §1.3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["forward_fill_peaks", "rolling_mean_scale"]


def forward_fill_peaks(target: Tensor, peak: Tensor) -> tuple[Tensor, Tensor]:
    """Replace PE values by the most recent non-PE value.

    Args:
        target: ``[B, L]`` demand history.
        peak: ``[B, L]`` 0/1 PE flags.

    Returns:
        ``(filled [B, L], observed [B, L] bool)``: ``observed`` is False where no non-PE value precedes (leading PE
        days of a window); ``filled`` is 0 there. Causal: position τ depends on positions <= τ only.
    """
    B, L = target.shape
    keep = peak <= 0.5
    positions = torch.arange(L, device=target.device).expand(B, L)
    last = torch.where(keep, positions, torch.full_like(positions, -1)).cummax(dim=1).values
    observed = last >= 0
    filled = torch.gather(target, 1, last.clamp_min(0))
    return torch.where(observed, filled, torch.zeros_like(filled)), observed


def rolling_mean_scale(values: Tensor, observed: Tensor, window: int, minimum: float = 1.0) -> Tensor:
    """Causal scale ``s_τ = max(minimum, mean |values| over the observed days of (τ − window, τ])``.

    Args:
        values, observed: ``[B, L]``.
        window: trailing days.
        minimum: floor (demand counts: 1 unit).

    Returns:
        ``[B, L]`` positive scales (``minimum`` where nothing is observed yet).
    """
    weights = observed.to(values.dtype)
    kernel = torch.ones(1, 1, window, dtype=values.dtype, device=values.device)
    total = F.conv1d(F.pad((values.abs() * weights)[:, None], (window - 1, 0)), kernel)[:, 0]
    count = F.conv1d(F.pad(weights[:, None], (window - 1, 0)), kernel)[:, 0]
    mean = total / count.clamp_min(1.0)
    return torch.where(count > 0, mean, torch.zeros_like(mean)).clamp_min(minimum)
