"""Hill / MLE power-law fit: recovers known exponents, matches WeightWatcher's fitter and a brute-force loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from framework.callbacks.pruning.power_law import TooFewEigenvaluesError, fit_power_law, hill_alpha


def _pareto(alpha: float, n: int, xmin: float = 1.0, seed: int = 0) -> torch.Tensor:
    u = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return xmin * u ** (-1.0 / (alpha - 1.0))


def _brute_force(eigs: np.ndarray, candidates) -> tuple[float, float]:
    """The reference loop: α(i), D(i) for each candidate, keep the first minimal D."""
    eigs = np.sort(eigs)
    n_total = len(eigs)
    best = (math.inf, None)
    for i in candidates:
        n = n_total - i
        alpha = 1 + n / (np.sum(np.log(eigs[i:])) - n * np.log(eigs[i]))
        d = np.max(np.abs(1 - (eigs[i:] / eigs[i]) ** (1 - alpha) - np.arange(n) / n)) if alpha > 1 else 1.0
        if d < best[0]:
            best = (d, alpha)
    return best[1], best[0]


@pytest.mark.parametrize("alpha", [1.8, 2.5, 4.0])
def test_hill_recovers_power_law_exponent(alpha):
    samples = _pareto(alpha, 20000, xmin=2.0, seed=1)
    assert abs(hill_alpha(samples) - alpha) < 0.05  # x_min known: the MLE's std is (α - 1) / sqrt(n) ≈ 0.02
    fit = fit_power_law(samples[:2500], xmin_mode="all")  # x_min searched (O(N²) scan: keep N small)
    assert abs(fit.alpha - alpha) < 0.15
    assert fit.sigma == pytest.approx((fit.alpha - 1) / math.sqrt(fit.n_tail))


def test_fit_finds_tail_above_a_bulk():
    # A uniform bulk below 1 and a power-law tail (α = 2.2) above 1: the KS scan must place x_min near 1.
    g = torch.Generator().manual_seed(3)
    bulk = torch.rand(1500, generator=g, dtype=torch.float64) * 0.9 + 0.05
    tail = _pareto(2.2, 1500, xmin=1.0, seed=4)
    fit = fit_power_law(torch.cat([bulk, tail]), xmin_mode="all")
    assert 0.9 <= fit.xmin <= 3.0  # above the bulk (any x_min inside a pure power-law tail is consistent)
    assert abs(fit.alpha - 2.2) < 0.15


@pytest.mark.parametrize("mode", ["all", "median"])
def test_vectorised_scan_equals_brute_force(mode):
    eigs = (torch.randn(300, 120, generator=torch.Generator().manual_seed(5)).double()).pow(2).sum(0)
    eigs = eigs * torch.linspace(1, 30, 120, dtype=torch.float64) ** 2
    fit = fit_power_law(eigs, xmin_mode=mode)
    sorted_eigs = np.sort(eigs.numpy())
    candidates = range(len(sorted_eigs) - 1) if mode == "all" else [len(sorted_eigs) // 2]
    alpha, d = _brute_force(sorted_eigs, candidates)
    assert fit.alpha == pytest.approx(alpha, rel=1e-10)
    assert fit.ks_distance == pytest.approx(d, rel=1e-8)


def test_peak_window_candidates_match_reference_loop():
    # The public code's alpha_peak: histogram peak, candidates λ ≤ 1.5 · peak (faithful lower bound in log units).
    eigs = torch.linalg.svdvals(torch.randn(400, 200, generator=torch.Generator().manual_seed(6)).double()).square()
    sorted_eigs = np.sort(eigs.numpy())
    log10 = np.log10(sorted_eigs)
    counts, edges = np.histogram(log10, bins=100, range=(log10.min(), log10.max()))
    peak = 10 ** edges[np.argmax(counts)]
    candidates = [i for i, x in enumerate(sorted_eigs[:-1]) if np.log10(0.95 * peak) <= x <= 1.5 * peak]
    alpha, _ = _brute_force(sorted_eigs, candidates)
    assert fit_power_law(eigs, xmin_mode="peak").alpha == pytest.approx(alpha, rel=1e-8)


def test_too_few_eigenvalues_raise():
    with pytest.raises(TooFewEigenvaluesError, match="at least 10"):
        fit_power_law(torch.tensor([1.0, 2.0, 3.0, 0.0]))
    with pytest.raises(ValueError, match="xmin_mode"):
        fit_power_law(_pareto(2.0, 100), xmin_mode="middle")


def test_zero_eigenvalues_are_dropped():
    eigs = torch.cat([torch.zeros(50, dtype=torch.float64), _pareto(3.0, 500, seed=7)])
    fit = fit_power_law(eigs, xmin_mode="all")
    assert fit.num_eigenvalues == 500 and math.isfinite(fit.alpha)
