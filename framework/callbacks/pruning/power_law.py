"""Power-law fit of an ESD tail: the Hill / continuous-MLE exponent α with a Kolmogorov–Smirnov choice of x_min.

For ascending eigenvalues λ_0 ≤ … ≤ λ_{N-1} and a candidate x_min = λ_i with tail size n = N − i::

    α(i) = 1 + n / (Σ_{j≥i} ln λ_j − n ln λ_i)
    D(i) = max_{k=0..n-1} | 1 − (λ_{i+k} / λ_i)^{1−α(i)} − k / n |        (only when α(i) > 1, else D = 1)

and the fit keeps the candidate of smallest D. Candidates (``xmin_mode``):

* ``"peak"`` — AlphaPruning's default ``alpha_peak``: histogram of log10 λ (100 bins), peak = 10^(left edge of the
  fullest bin); candidates in ``[low, 1.5 · peak]``. With ``faithful_window=True`` ``low = log10(0.95 · peak)``, the
  units mix-up of the public code (and WeightWatcher's), which in practice means "every candidate ≤ 1.5 · peak";
  ``False`` uses ``0.95 · peak``. If the window holds no eigenvalue (the public code then returns α = 0), the first
  eigenvalue ≥ peak is used.
* ``"all"`` — every eigenvalue but the largest (Clauset et al.; WeightWatcher's default ``WWFit``).
* ``"median"`` — ``alpha_mid``: x_min = λ_{⌊N/2⌋}, no search.

The scan is vectorised: suffix sums of ln λ give every α(i) at once, and D is evaluated on chunks of a
``[candidates, N]`` matrix, on the eigenvalues' device, in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["XMIN_MODES", "PowerLawFit", "TooFewEigenvaluesError", "fit_power_law", "hill_alpha"]

XMIN_MODES = ("peak", "all", "median")
#: Eigenvalues at or below this are treated as zeros (WeightWatcher's EVALS_THRESH).
ZERO_THRESHOLD = 1e-5


class TooFewEigenvaluesError(ValueError):
    """The ESD has fewer non-zero eigenvalues than a power-law fit needs."""


@dataclass(frozen=True)
class PowerLawFit:
    """Result of :func:`fit_power_law`.

    Attributes:
        alpha: fitted exponent α of p(λ) ∝ λ^{−α} for λ ≥ x_min.
        xmin: the chosen x_min (an eigenvalue).
        n_tail: number of eigenvalues ≥ x_min used in the fit.
        ks_distance: Kolmogorov–Smirnov distance D of the fit.
        sigma: standard error (α − 1) / sqrt(n_tail).
        num_eigenvalues: eigenvalues left after dropping (near-)zeros.
    """

    alpha: float
    xmin: float
    n_tail: int
    ks_distance: float
    sigma: float
    num_eigenvalues: int


def hill_alpha(tail: torch.Tensor) -> float:
    """α = 1 + n / Σ ln(λ_j / λ_min) of a tail ``[n]`` whose smallest value is x_min."""
    tail = tail.to(torch.float64)
    log_ratio = torch.log(tail / tail.min())
    return float(1.0 + tail.numel() / log_ratio.sum())


def _alphas(log_eigs: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    n_total = log_eigs.numel()
    suffix = torch.flip(torch.cumsum(torch.flip(log_eigs, [0]), 0), [0])  # suffix[i] = Σ_{j≥i} ln λ_j
    n = (n_total - candidates).to(log_eigs.dtype)
    denominator = suffix[candidates] - n * log_eigs[candidates]
    safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    return torch.where(denominator > 0, 1.0 + n / safe, torch.full_like(n, math.inf))


def _ks_distances(log_eigs: torch.Tensor, candidates: torch.Tensor, alphas: torch.Tensor, chunk_elements: int) -> torch.Tensor:
    n_total = log_eigs.numel()
    distances = torch.ones_like(alphas)
    chunk = max(1, chunk_elements // n_total)
    for start in range(0, candidates.numel(), chunk):
        idx = candidates[start : start + chunk]  # [C], ascending
        first = int(idx.min())
        columns = log_eigs[first:]  # only the tails of this chunk's candidates: j >= first
        alpha = alphas[start : start + chunk]
        valid = torch.isfinite(alpha) & (alpha > 1)
        n = (n_total - idx).to(log_eigs.dtype)
        offset = torch.arange(first, n_total, device=log_eigs.device)[None, :] - idx[:, None]  # [C, N'] : k = j - i
        in_tail = offset >= 0
        log_ratio = (columns[None, :] - log_eigs[idx][:, None]).clamp_min(0.0)
        exponent = torch.where(valid, 1.0 - alpha, torch.zeros_like(alpha))
        model_cdf = 1.0 - torch.exp(exponent[:, None] * log_ratio)
        empirical_cdf = offset.to(log_eigs.dtype) / n[:, None]
        gap = torch.where(in_tail, (model_cdf - empirical_cdf).abs(), torch.zeros_like(model_cdf))
        distances[start : start + chunk] = torch.where(valid, gap.amax(dim=1), torch.ones_like(alpha))
    return distances


def _peak_candidates(eigs: torch.Tensor, bins: int, faithful_window: bool) -> torch.Tensor:
    log10 = torch.log10(eigs)
    low, high = float(log10.min()), float(log10.max())
    if high <= low:
        return torch.zeros(1, dtype=torch.long, device=eigs.device)
    counts = torch.histc(log10, bins=bins, min=low, max=high)
    edges = torch.linspace(low, high, bins + 1, dtype=eigs.dtype, device=eigs.device)
    peak = 10.0 ** edges[int(torch.argmax(counts))]
    window_low = torch.log10(0.95 * peak) if faithful_window else 0.95 * peak
    window_high = 1.5 * peak
    head = eigs[:-1]
    inside = torch.nonzero((head >= window_low) & (head <= window_high)).flatten()
    if inside.numel() == 0:
        inside = torch.nonzero(head >= peak).flatten()[:1]
        if inside.numel() == 0:
            inside = torch.tensor([eigs.numel() - 2], device=eigs.device)
    return inside


def fit_power_law(
    eigenvalues: torch.Tensor,
    *,
    xmin_mode: str = "peak",
    bins: int = 100,
    faithful_window: bool = True,
    min_eigenvalues: int = 10,
    zero_threshold: float = ZERO_THRESHOLD,
    chunk_elements: int = 1 << 22,
) -> PowerLawFit:
    """Fit a power law to the tail of an ESD.

    Args:
        eigenvalues: ``[N]`` eigenvalues (any order, any device); values ≤ ``zero_threshold`` are dropped.
        xmin_mode: ``"peak"``, ``"all"`` or ``"median"`` (see the module docstring).
        bins: histogram bins of the ``"peak"`` mode.
        faithful_window: reproduce the public code's lower window bound in ``"peak"`` mode.
        min_eigenvalues: fewer non-zero eigenvalues than this raise :class:`TooFewEigenvaluesError`.
        zero_threshold: eigenvalues at or below it count as zeros.
        chunk_elements: size of the KS work matrix per chunk (memory knob).

    Returns:
        A :class:`PowerLawFit`.
    """
    if xmin_mode not in XMIN_MODES:
        raise ValueError(f"xmin_mode must be one of {list(XMIN_MODES)}, got {xmin_mode!r}")
    if min_eigenvalues < 3:
        raise ValueError(f"min_eigenvalues must be >= 3, got {min_eigenvalues}")
    eigs = eigenvalues.detach().flatten().to(torch.float64)
    eigs = eigs[eigs > zero_threshold].sort().values
    if eigs.numel() < min_eigenvalues:
        raise TooFewEigenvaluesError(
            f"a power-law fit needs at least {min_eigenvalues} eigenvalues above {zero_threshold:g}, "
            f"got {eigs.numel()} (of {eigenvalues.numel()})"
        )
    log_eigs = torch.log(eigs)
    n_total = eigs.numel()
    if xmin_mode == "median":
        candidates = torch.tensor([n_total // 2], device=eigs.device)
    elif xmin_mode == "peak":
        candidates = _peak_candidates(eigs, bins, faithful_window)
    else:
        candidates = torch.arange(n_total - 1, device=eigs.device)
    alphas = _alphas(log_eigs, candidates)
    distances = _ks_distances(log_eigs, candidates, alphas, chunk_elements)
    if xmin_mode == "median":
        best = 0
    else:
        # First candidate of minimal D (as np.argmin / the reference loops pick it).
        best = int(torch.nonzero(distances == distances.min()).flatten()[0])
    index = int(candidates[best])
    alpha = float(alphas[best])
    n_tail = n_total - index
    return PowerLawFit(
        alpha=alpha,
        xmin=float(eigs[index]),
        n_tail=n_tail,
        ks_distance=float(distances[best]),
        sigma=(alpha - 1.0) / math.sqrt(n_tail),
        num_eigenvalues=n_total,
    )
