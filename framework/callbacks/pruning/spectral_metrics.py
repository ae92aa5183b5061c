"""Heavy-tailed shape metrics of one weight's ESD, and of every selected layer of a model.

Metric names usable for allocation (all "larger = less well-trained = prune more", as in AlphaPruning, which uses
every metric in this direction):

* ``alpha_peak`` (default), ``alpha`` (x_min scanned over the whole spectrum, WeightWatcher's α), ``alpha_mid``;
* ``alpha_hat`` = α_peak · log10 λ_max;
* ``stable_rank`` = Σλ / λ_max, ``entropy`` (spectral entropy of λ / Σλ, normalised by ln N),
  ``log_spectral_norm`` = log10 λ_max, ``log_norm`` = log10 Σλ (log Frobenius norm squared).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch

from framework.callbacks.pruning.power_law import PowerLawFit, TooFewEigenvaluesError, fit_power_law
from framework.callbacks.pruning.spectrum import weight_eigenvalues

__all__ = ["METRICS", "SpectralMetrics", "weight_spectral_metrics", "layer_spectral_metrics"]

METRICS = (
    "alpha_peak", "alpha", "alpha_mid", "alpha_hat", "stable_rank", "entropy", "log_spectral_norm", "log_norm",
)
_ALPHA_MODES = {"alpha_peak": "peak", "alpha": "all", "alpha_mid": "median"}


@dataclass(frozen=True)
class SpectralMetrics:
    """Shape metrics of one layer's ESD (eigenvalues of WᵀW, no 1/N normalisation).

    ``alpha`` / ``xmin`` / ``n_tail`` / ``ks_distance`` / ``sigma`` come from the fit of the chosen x_min mode;
    ``fit_ok`` is False when the layer was too small to fit (then the α fields are NaN and the caller decides the
    fallback).
    """

    alpha: float
    xmin: float
    n_tail: int
    ks_distance: float
    sigma: float
    alpha_hat: float
    spectral_norm: float
    log_spectral_norm: float
    frobenius_norm_sq: float
    log_norm: float
    stable_rank: float
    entropy: float
    num_eigenvalues: int
    fit_ok: bool
    xmin_mode: str

    def value(self, metric: str) -> float:
        """The metric called ``metric`` (one of :data:`METRICS`; the α variants all read ``alpha``)."""
        if metric in _ALPHA_MODES:
            return self.alpha
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}")
        return float(getattr(self, metric))

    def as_dict(self) -> dict:
        return asdict(self)


def _entropy(eigs: torch.Tensor) -> float:
    positive = eigs[eigs > 0]
    if positive.numel() < 2:
        return 0.0
    p = positive / positive.sum()
    return float(-(p * p.log()).sum() / math.log(positive.numel()))


def weight_spectral_metrics(
    weight: torch.Tensor,
    *,
    xmin_mode: str = "peak",
    eigenvalue_method: str = "gram",
    dtype: torch.dtype = torch.float32,
    conv_norm: float = 0.5,
    faithful_window: bool = True,
    min_eigenvalues: int = 10,
    eigenvalues: torch.Tensor | None = None,
) -> SpectralMetrics:
    """Shape metrics of one weight ``[out, in]`` or ``[out, in, *kernel]`` (computed on its device).

    ``eigenvalues`` (``[N]``) may be passed when already computed. Never raises for small matrices: the fit
    fields become NaN and ``fit_ok`` False.
    """
    eigs = weight_eigenvalues(weight, method=eigenvalue_method, dtype=dtype, conv_norm=conv_norm) \
        if eigenvalues is None else eigenvalues
    eigs64 = eigs.to(torch.float64)
    lam_max = float(eigs64.max()) if eigs64.numel() else 0.0
    total = float(eigs64.sum())
    try:
        fit: PowerLawFit | None = fit_power_law(
            eigs64, xmin_mode=xmin_mode, faithful_window=faithful_window, min_eigenvalues=min_eigenvalues
        )
    except TooFewEigenvaluesError:
        fit = None
    nan = float("nan")
    alpha = fit.alpha if fit else nan
    log_lam_max = math.log10(lam_max) if lam_max > 0 else -math.inf
    return SpectralMetrics(
        alpha=alpha,
        xmin=fit.xmin if fit else nan,
        n_tail=fit.n_tail if fit else 0,
        ks_distance=fit.ks_distance if fit else nan,
        sigma=fit.sigma if fit else nan,
        alpha_hat=alpha * log_lam_max if fit else nan,
        spectral_norm=lam_max,
        log_spectral_norm=log_lam_max,
        frobenius_norm_sq=total,
        log_norm=math.log10(total) if total > 0 else -math.inf,
        stable_rank=total / lam_max if lam_max > 0 else 0.0,
        entropy=_entropy(eigs64),
        num_eigenvalues=int(eigs64.numel()),
        fit_ok=fit is not None,
        xmin_mode=xmin_mode,
    )


def layer_spectral_metrics(
    weights: Mapping[str, torch.Tensor],
    *,
    metric: str = "alpha_peak",
    eigenvalue_method: str = "gram",
    dtype: torch.dtype = torch.float32,
    conv_norm: float = 0.5,
    faithful_window: bool = True,
    min_eigenvalues: int = 10,
    keep_eigenvalues: bool = False,
) -> tuple[dict[str, SpectralMetrics], dict[str, torch.Tensor]]:
    """Metrics of every named weight, keyed by name (the same keys the allocation uses).

    The α fields follow ``metric``'s x_min mode (``alpha_peak`` → peak, ``alpha`` → all, ``alpha_mid`` → median;
    other metrics use the peak fit for their α fields). Layers too small to fit get ``fit_ok=False`` and a warning.

    Returns:
        ``(metrics, eigenvalues)``; ``eigenvalues`` maps name → ``[N]`` CPU tensor when ``keep_eigenvalues``.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}")
    xmin_mode = _ALPHA_MODES.get(metric, "peak")
    results: dict[str, SpectralMetrics] = {}
    spectra: dict[str, torch.Tensor] = {}
    too_small = []
    for name, weight in weights.items():
        eigs = weight_eigenvalues(weight, method=eigenvalue_method, dtype=dtype, conv_norm=conv_norm)
        results[name] = weight_spectral_metrics(
            weight, xmin_mode=xmin_mode, faithful_window=faithful_window, min_eigenvalues=min_eigenvalues,
            eigenvalues=eigs,
        )
        if not results[name].fit_ok:
            too_small.append(name)
        if keep_eigenvalues:
            spectra[name] = eigs.cpu()
    if too_small:
        warnings.warn(
            f"{len(too_small)} layer(s) have fewer than {min_eigenvalues} non-zero eigenvalues, too few for a "
            f"power-law fit: {too_small[:5]}{' ...' if len(too_small) > 5 else ''}; their metric falls back to "
            "the median of the fitted layers",
            stacklevel=2,
        )
    return results, spectra
