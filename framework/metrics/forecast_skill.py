"""Skill of spatio-temporal (ensemble) forecasts per lead time, as a torchmetrics ``Metric`` exact under DDP.

Inputs: an ensemble forecast ``preds [B, M, L, C, H, W]`` (M members, L lead times; M = 1 is a deterministic
forecast) and the truth ``target [B, L, C, H, W]``. Only forecast frames go in: conditioning frames are never scored.

Per lead time ℓ (each a ``[L]`` tensor):

- ``mse``: mean squared error, averaged over members, samples and grid points.
- ``rfne``: relative Frobenius-norm error ``‖pred − target‖_F / ‖target‖_F`` of each frame (all channels), averaged
  over members and samples.
- ``psnr``, ``ssim``: torchmetrics' PSNR and SSIM (11×11 Gaussian window, σ = 1.5) of each frame, with the data range
  ``data_range`` if given, else the frame's own target range ``max − min``, averaged over members and samples. The
  SSIM map is averaged away from the 5-pixel border, as skimage does (equal to skimage's
  ``structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`` per channel,
  averaged over channels); frames smaller than 11 pixels get NaN.
- ``correlation``: Pearson correlation of each frame with its target (all channels), averaged.
- ``ensemble_mean_rmse``: RMSE of the ensemble mean.
- ``crps``: the ensemble CRPS estimator per grid point, averaged:
  ``CRPS = (1/M) Σ_i |X_i − y| − 1/(2 M²) Σ_{i,j} |X_i − X_j|``, or with ``fair=True`` the unbiased ("fair")
  version with ``1/(2 M (M−1))`` (Ferro 2014), which does not reward small ensembles. With M = 1 it is the MAE.
- ``spread``: ``√(mean unbiased ensemble variance)``; ``spread_skill``: ``√((M+1)/M) · spread / ensemble_mean_rmse``
  (Fortin et al. 2014; 1 for a calibrated ensemble, < 1 under-dispersed). NaN when M = 1.

Every state is a per-lead sum reduced with ``dist_reduce_fx="sum"``, and the per-frame quantities are averaged as
sums over frames divided by a count, so a DDP run gives exactly the single-process values.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

__all__ = ["ForecastSkill", "ensemble_crps", "relative_frobenius_error", "frame_correlation", "frame_psnr",
           "frame_ssim", "forecast_skill", "SKILL_KEYS"]

_SSIM_PAD = 5  # (11 - 1) // 2 for the σ = 1.5 Gaussian window (radius int(3.5 σ + 0.5))
SKILL_KEYS = ("mse", "rfne", "psnr", "ssim", "correlation", "ensemble_mean_rmse", "crps", "spread", "spread_skill")


def _check(preds: Tensor, target: Tensor) -> None:
    if target.dim() != 5:
        raise ValueError(f"target must be [B, L, C, H, W], got shape {tuple(target.shape)}")
    if preds.dim() != 6 or preds.shape[0] != target.shape[0] or tuple(preds.shape[2:]) != tuple(target.shape[1:]):
        raise ValueError(f"preds must be [B, M, L, C, H, W] matching target {tuple(target.shape)}, "
                         f"got {tuple(preds.shape)}")


def relative_frobenius_error(pred: Tensor, target: Tensor) -> Tensor:
    """``‖pred − target‖_F / ‖target‖_F`` over the last three dims ``[..., C, H, W] -> [...]``."""
    num = (pred - target).flatten(-3).norm(dim=-1)
    return num / target.flatten(-3).norm(dim=-1).clamp_min(torch.finfo(target.dtype).tiny)


def frame_correlation(pred: Tensor, target: Tensor) -> Tensor:
    """Pearson correlation over the last three dims ``[..., C, H, W] -> [...]``."""
    p = pred.flatten(-3) - pred.flatten(-3).mean(-1, keepdim=True)
    t = target.flatten(-3) - target.flatten(-3).mean(-1, keepdim=True)
    return (p * t).sum(-1) / (p.norm(dim=-1) * t.norm(dim=-1)).clamp_min(torch.finfo(target.dtype).tiny)


def _ranges(target: Tensor, data_range: float | None) -> Tensor:
    """Data range per frame ``[N]`` for frames ``[N, C, H, W]``."""
    if data_range is not None:
        return torch.full((target.shape[0],), float(data_range), dtype=target.dtype, device=target.device)
    flat = target.flatten(1)
    return (flat.max(1).values - flat.min(1).values).clamp_min(torch.finfo(target.dtype).eps)


def frame_psnr(pred: Tensor, target: Tensor, data_range: float | None = None) -> Tensor:
    """PSNR of each frame ``[N, C, H, W] -> [N]`` (torchmetrics), range ``data_range`` or the target's own."""
    r = _ranges(target, data_range)[:, None, None, None]
    return peak_signal_noise_ratio(pred / r, target / r, data_range=1.0, reduction="none", dim=(1, 2, 3))


def frame_ssim(pred: Tensor, target: Tensor, data_range: float | None = None) -> Tensor:
    """SSIM of each frame ``[N, C, H, W] -> [N]`` (torchmetrics, Gaussian 11×11, σ = 1.5).

    Dividing both images by the range r and using data range 1 is exactly SSIM with data range r (its constants
    scale with r²), which lets every frame have its own range in one batched call.
    """
    r = _ranges(target, data_range)[:, None, None, None]
    _, ssim_map = structural_similarity_index_measure(pred / r, target / r, data_range=1.0, reduction="none",
                                                      return_full_image=True)
    # Average the SSIM map over the positions whose window lies inside the image (the 5-pixel border of the 11×11
    # window is dropped), which is skimage's convention (the paper's metric); torchmetrics' own reduction keeps the
    # reflect-padded border.
    return ssim_map[..., _SSIM_PAD:-_SSIM_PAD, _SSIM_PAD:-_SSIM_PAD].mean(dim=(1, 2, 3))


def ensemble_crps(preds: Tensor, target: Tensor, *, fair: bool = False) -> Tensor:
    """Ensemble CRPS per point: ``preds [M, ...]``, ``target [...]`` -> ``[...]``.

    Uses the sorted-member identity ``Σ_{i,j} |X_i − X_j| = 2 Σ_k (2k − M + 1) X_(k)`` (k = 0..M−1), O(M log M).
    """
    m = preds.shape[0]
    skill = (preds - target.unsqueeze(0)).abs().mean(0)
    if m == 1:
        return skill
    sorted_members = preds.sort(dim=0).values
    weights = (2 * torch.arange(m, device=preds.device, dtype=preds.dtype) - m + 1).reshape(m, *([1] * target.dim()))
    pair_sum = 2 * (weights * sorted_members).sum(0)
    denom = 2 * m * (m - 1) if fair else 2 * m * m
    return skill - pair_sum / denom


class ForecastSkill(Metric):
    """Per-lead-time skill of ensemble forecasts; ``compute()`` returns ``{key: [L] tensor}`` for ``SKILL_KEYS``.

    Args:
        horizon: L, the number of lead times.
        data_range: PSNR/SSIM data range (``None``: each target frame's own ``max − min``).
        fair: the fair (unbiased) CRPS estimator.
        image_metrics: compute PSNR and SSIM (needs H, W >= 11 for SSIM's window; NaN otherwise).
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    def __init__(self, *, horizon: int, data_range: float | None = None, fair: bool = False,
                 image_metrics: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(horizon, int) or isinstance(horizon, bool) or horizon < 1:
            raise ValueError(f"horizon must be a positive integer, got {horizon!r}")
        if data_range is not None and (not math.isfinite(data_range) or data_range <= 0):
            raise ValueError(f"data_range must be a positive number or None, got {data_range!r}")
        self.horizon, self.data_range, self.fair, self.image_metrics = horizon, data_range, fair, image_metrics
        for name in ("sq_error", "rfne", "psnr", "ssim", "correlation", "mean_sq_error", "crps", "variance"):
            self.add_state(name, torch.zeros(horizon, dtype=torch.float64), dist_reduce_fx="sum")
        # frames scored per lead (members × samples), points per lead (samples × C·H·W), member count sums
        self.add_state("frames", torch.zeros(horizon, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("points", torch.zeros(horizon, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("members_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("batches", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("spread_points", torch.zeros(horizon, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """``preds [B, M, L, C, H, W]``, ``target [B, L, C, H, W]`` with L = ``horizon``."""
        _check(preds, target)
        if target.shape[1] != self.horizon:
            raise ValueError(f"expected {self.horizon} lead times, got {target.shape[1]}")
        preds, target = preds.detach().double(), target.detach().double()
        b, m, lead = preds.shape[:3]
        frame_shape = preds.shape[3:]
        expanded = target.unsqueeze(1).expand_as(preds)
        err = preds - expanded
        self.sq_error += err.pow(2).sum(dim=(0, 1, 3, 4, 5)) / frame_shape.numel()
        self.rfne += relative_frobenius_error(preds, expanded).sum(dim=(0, 1))
        self.correlation += frame_correlation(preds, expanded).sum(dim=(0, 1))
        if self.image_metrics:
            flat_p = preds.reshape(-1, *frame_shape)
            flat_t = expanded.reshape(-1, *frame_shape)
            self.psnr += frame_psnr(flat_p, flat_t, self.data_range).reshape(b, m, lead).sum(dim=(0, 1))
            if min(frame_shape[-2:]) >= 11:
                self.ssim += frame_ssim(flat_p, flat_t, self.data_range).reshape(b, m, lead).sum(dim=(0, 1))
            else:
                self.ssim += float("nan")
        else:
            self.psnr += float("nan")
            self.ssim += float("nan")
        self.frames += b * m
        self.points += b * frame_shape.numel()
        mean = preds.mean(1)
        self.mean_sq_error += (mean - target).pow(2).sum(dim=(0, 2, 3, 4))
        members = preds.transpose(0, 1)  # [M, B, L, C, H, W]
        self.crps += ensemble_crps(members, target, fair=self.fair).sum(dim=(0, 2, 3, 4))
        if m > 1:
            self.variance += preds.var(dim=1, unbiased=True).sum(dim=(0, 2, 3, 4))
            self.spread_points += b * frame_shape.numel()
        self.members_sum += m * b
        self.batches += b

    def compute(self) -> dict[str, Tensor]:
        frames = self.frames.clamp_min(1)
        points = self.points.clamp_min(1)
        mean_rmse = (self.mean_sq_error / points).sqrt()
        out = {
            "mse": self.sq_error / frames,
            "rfne": self.rfne / frames,
            "psnr": self.psnr / frames,
            "ssim": self.ssim / frames,
            "correlation": self.correlation / frames,
            "ensemble_mean_rmse": mean_rmse,
            "crps": self.crps / points,
        }
        nan = torch.full_like(mean_rmse, float("nan"))
        if bool((self.spread_points > 0).all()):
            spread = (self.variance / self.spread_points).sqrt()
            m = self.members_sum / self.batches.clamp_min(1)  # mean ensemble size
            out["spread"] = spread
            out["spread_skill"] = torch.sqrt((m + 1) / m) * spread / mean_rmse
        else:
            out["spread"], out["spread_skill"] = nan, nan.clone()
        return {k: v.float() for k, v in out.items()}


def forecast_skill(preds: Tensor, target: Tensor, *, data_range: float | None = None, fair: bool = False,
                   image_metrics: bool = True) -> dict[str, Tensor]:
    """Functional form of :class:`ForecastSkill` on one batch."""
    _check(preds, target)
    metric = ForecastSkill(horizon=target.shape[1], data_range=data_range, fair=fair, image_metrics=image_metrics)
    metric.update(preds, target)
    return metric.compute()
