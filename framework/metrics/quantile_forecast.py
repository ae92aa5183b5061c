"""Weighted quantile loss and P50 bias of quantile forecasts, overall and on peak / post-peak subsets (SPADE).

Definitions (GluonTS convention, research note §1.6), over a set of targets ``y`` with forecasts ``ŷ_q``:

* weighted quantile loss ``wQL_q = 2·Σ |(ŷ_q − y)·(1{y <= ŷ_q} − q)| / Σ |y|``;
* P50 bias ``Σ ŷ_0.5 / Σ y − 1`` (positive: over-forecast).

Subsets: ``all`` targets, ``peak`` (PE days), ``post_peak`` (PPE days) and ``most_affected`` (PPE days of forecasts
made within 7 days after a PE ended). The Metric keeps float64 sums per subset reduced with ``dist_reduce_fx="sum"``,
so a DDP run equals one process over all forecasts (ratios of global sums, never means of per-rank ratios).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["SUBSETS", "QuantileForecastMetrics", "quantile_loss_sum", "weighted_quantile_loss", "p50_bias",
           "subset_masks"]

SUBSETS = ("all", "peak", "post_peak", "most_affected")


def quantile_loss_sum(forecast: Tensor, target: Tensor, level: float, mask: Tensor | None = None) -> Tensor:
    """``2·Σ |(ŷ − y)·(1{y <= ŷ} − q)|`` (float64) over the masked elements; ``forecast``, ``target``, ``mask`` same
    shape."""
    f, y = forecast.double(), target.double()
    loss = 2.0 * ((f - y) * ((y <= f).double() - level)).abs()
    return loss[mask.bool()].sum() if mask is not None else loss.sum()


def weighted_quantile_loss(forecast: Tensor, target: Tensor, level: float, mask: Tensor | None = None) -> Tensor:
    """``quantile_loss_sum / Σ |y|`` over the masked elements (NaN when Σ |y| = 0)."""
    y = target.double().abs()
    denominator = y[mask.bool()].sum() if mask is not None else y.sum()
    return quantile_loss_sum(forecast, target, level, mask) / denominator


def p50_bias(forecast_p50: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """``Σ ŷ_0.5 / Σ y − 1`` over the masked elements."""
    f, y = forecast_p50.double(), target.double()
    if mask is not None:
        f, y = f[mask.bool()], y[mask.bool()]
    return f.sum() / y.sum() - 1.0


def subset_masks(peak: Tensor, post_peak: Tensor, most_affected: Tensor) -> dict[str, Tensor]:
    """Boolean ``[N, H]`` masks of :data:`SUBSETS`; ``most_affected`` is ``[N]`` (per forecast) or ``[N, H]``."""
    peak, post_peak = peak.bool(), post_peak.bool()
    affected = most_affected.bool()
    if affected.dim() == 1:
        affected = affected[:, None].expand_as(post_peak)
    return {"all": torch.ones_like(peak), "peak": peak, "post_peak": post_peak, "most_affected": affected & post_peak}


class QuantileForecastMetrics(Metric):
    """wQL at the chosen levels and P50 bias on each subset, accumulated over batches.

    ``update(forecasts [N, H, Q], target [N, H], peak [N, H], post_peak [N, H], most_affected [N])``; ``compute()``
    returns a dict of float64 scalars ``wql50_<subset>``, ``wql90_<subset>``, ``bias50_<subset>`` (NaN for an empty
    subset) and ``fraction_<subset>`` (share of all targets).

    Args:
        quantiles: the forecast's quantile levels (the last dim of ``forecasts``); must contain 0.5 and ``levels``.
        levels: levels reported as wQL (default P50 and P90).
        **kwargs: torchmetrics ``Metric`` options.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, *, quantiles: Sequence[float], levels: Sequence[float] = (0.5, 0.9), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.quantiles = [float(q) for q in quantiles]
        self.levels = [float(q) for q in levels]
        missing = [q for q in {0.5, *self.levels} if not any(abs(q - x) < 1e-9 for x in self.quantiles)]
        if missing:
            raise ValueError(f"the forecast quantiles {self.quantiles} must include the reported levels "
                             f"{sorted({0.5, *self.levels})}; missing {sorted(missing)}")
        self.level_index = [min(range(len(self.quantiles)), key=lambda i: abs(self.quantiles[i] - q))
                            for q in self.levels]
        self.median_index = min(range(len(self.quantiles)), key=lambda i: abs(self.quantiles[i] - 0.5))
        n, k = len(SUBSETS), len(self.levels)
        f64 = torch.float64
        self.add_state("loss_sums", default=torch.zeros(n, k, dtype=f64), dist_reduce_fx="sum")
        self.add_state("abs_target_sums", default=torch.zeros(n, dtype=f64), dist_reduce_fx="sum")
        self.add_state("target_sums", default=torch.zeros(n, dtype=f64), dist_reduce_fx="sum")
        self.add_state("median_sums", default=torch.zeros(n, dtype=f64), dist_reduce_fx="sum")
        self.add_state("counts", default=torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, forecasts: Tensor, target: Tensor, peak: Tensor, post_peak: Tensor,
               most_affected: Tensor) -> None:
        if forecasts.dim() != 3 or forecasts.shape[-1] != len(self.quantiles):
            raise ValueError(f"forecasts must be [N, H, Q={len(self.quantiles)}], got {list(forecasts.shape)}")
        if target.shape != forecasts.shape[:2] or peak.shape != target.shape or post_peak.shape != target.shape:
            raise ValueError(f"target, peak and post_peak must be [N, H] = {list(forecasts.shape[:2])}, got "
                             f"{list(target.shape)}, {list(peak.shape)}, {list(post_peak.shape)}")
        masks = subset_masks(peak, post_peak, most_affected)
        y = target.double()
        median = forecasts[..., self.median_index].double()
        for i, name in enumerate(SUBSETS):
            m = masks[name]
            for j, (level, index) in enumerate(zip(self.levels, self.level_index)):
                self.loss_sums[i, j] += quantile_loss_sum(forecasts[..., index], y, level, m)
            self.abs_target_sums[i] += y[m].abs().sum()
            self.target_sums[i] += y[m].sum()
            self.median_sums[i] += median[m].sum()
            self.counts[i] += m.sum()

    def compute(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        nan = torch.tensor(float("nan"), dtype=torch.float64, device=self.counts.device)
        total = self.counts[0].double()
        for i, name in enumerate(SUBSETS):
            empty = self.counts[i] == 0
            for j, level in enumerate(self.levels):
                key = f"wql{round(level * 100):d}_{name}"
                out[key] = nan if empty else self.loss_sums[i, j] / self.abs_target_sums[i]
            out[f"bias50_{name}"] = nan if empty else self.median_sums[i] / self.target_sums[i] - 1.0
            out[f"fraction_{name}"] = self.counts[i].double() / total if total > 0 else nan
        return out
