"""Seismological metrics of CGM-GM against direct references (numpy / loops), and under 2-process DDP."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

from framework.metrics.ground_motion import (
    ERGODIC_SFBA_GMM,
    FASResiduals,
    PeakMotionMedians,
    discriminative_score,
    ergodic_gmm_ln_fas,
    fourier_amplitude_spectrum,
    konno_ohmachi_smooth,
    peak_ground_motion,
    scaling_slopes,
)
from tests.helpers.metric_ddp import assert_ddp_matches_single_process


def _ko_direct(freqs: np.ndarray, fas: np.ndarray, fc: float, b: float) -> float:
    num = den = 0.0
    for f, a in zip(freqs, fas):
        if f <= 0:
            continue
        if f == fc:
            w = 1.0
        else:
            x = b * math.log10(f / fc)
            w = (math.sin(x) / x) ** 4
        num += w * a
        den += w
    return num / den


def test_konno_ohmachi_matches_direct_implementation():
    rng = np.random.default_rng(0)
    freqs = np.fft.rfftfreq(6000, 0.01)
    fas = rng.lognormal(size=freqs.size)
    got = konno_ohmachi_smooth(torch.as_tensor(fas)[None], torch.as_tensor(freqs), (2.0, 5.0, 10.0, 15.0), 20.0)
    expected = [_ko_direct(freqs, fas, fc, 20.0) for fc in (2.0, 5.0, 10.0, 15.0)]
    np.testing.assert_allclose(got[0].numpy(), expected, rtol=1e-10)
    # Smoothing a constant spectrum leaves it unchanged.
    flat = konno_ohmachi_smooth(torch.ones(1, freqs.size, dtype=torch.float64), torch.as_tensor(freqs), (3.3,))
    assert flat.item() == pytest.approx(1.0)


def test_fas_of_a_sinusoid():
    dt, n, f0, amp = 0.01, 6000, 5.0, 2.0
    t = np.arange(n) * dt
    freqs, fas = fourier_amplitude_spectrum(torch.as_tensor(amp * np.sin(2 * np.pi * f0 * t)), dt)
    k = int(np.argmin(np.abs(freqs.numpy() - f0)))
    assert fas[k].item() == pytest.approx(amp * n * dt / 2, rel=1e-9)  # |∫ A sin| at f0 over T = A T / 2


def test_gmm_values():
    m, r, z = torch.tensor([3.0]), torch.tensor([20.0]), torch.tensor([10.0])
    got = ergodic_gmm_ln_fas(m, r, z)
    for k, f in enumerate((2.0, 5.0, 10.0, 15.0)):
        c0, c1, c2, c3, _ = ERGODIC_SFBA_GMM[f]
        assert got[0, k].item() == pytest.approx(c0 + 3 * c1 + c2 * math.log(20.0) + 10 * c3)
    with pytest.raises(ValueError, match="coefficients at"):
        ergodic_gmm_ln_fas(m, r, z, (3.0,))


def test_peak_ground_motion_matches_numpy():
    rng = np.random.default_rng(1)
    v = rng.standard_normal((3, 500))
    pga, pgv = peak_ground_motion(torch.as_tensor(v), 0.01)
    np.testing.assert_allclose(pgv.numpy(), np.abs(v).max(1))
    np.testing.assert_allclose(pga.numpy(), np.abs(np.gradient(v, 0.01, axis=1)).max(1))


def test_scaling_slopes_recover_coefficients():
    rng = np.random.default_rng(2)
    m, r, z = rng.uniform(2, 4, 200), rng.uniform(5, 80, 200), rng.uniform(2, 15, 200)
    y = np.stack([1.0 + 2.5 * m - 1.7 * np.log(r) + 0.02 * z, -3.0 + 3.0 * m - 1.2 * np.log(r)], -1)
    coef = scaling_slopes(*(torch.as_tensor(a) for a in (y, m, r, z)))
    np.testing.assert_allclose(coef[0].numpy(), [1.0, 2.5, -1.7, 0.02], atol=1e-9)
    np.testing.assert_allclose(coef[1, 1:3].numpy(), [3.0, -1.2], atol=1e-9)


def test_peak_motion_medians_per_bin():
    rng = np.random.default_rng(3)
    v = torch.as_tensor(rng.standard_normal((40, 300)))
    m = torch.as_tensor(rng.uniform(2, 4, 40))
    r = torch.as_tensor(rng.uniform(1, 79, 40))
    metric = PeakMotionMedians(dt=0.01)
    metric.update(v[:25], m[:25], r[:25])
    metric.update(v[25:], m[25:], r[25:])
    out = metric.compute()
    pgv = np.abs(v.numpy()).max(1)
    mask = (m.numpy() >= 3.0) & (m.numpy() < 3.5) & (r.numpy() >= 40) & (r.numpy() < 80)
    assert out["count_M3-3.5_R40-80"].item() == mask.sum()
    if mask.any():
        assert out["pgv_median_M3-3.5_R40-80"].item() == pytest.approx(np.median(pgv[mask]))
    assert sum(v.item() for k, v in out.items() if k.startswith("count_")) == 40


def test_fas_residuals_against_direct_computation():
    rng = np.random.default_rng(4)
    w = torch.as_tensor(rng.standard_normal((30, 6000)) * 1e-5)
    m, r, z = (torch.as_tensor(rng.uniform(lo, hi, 30)) for lo, hi in ((2, 4), (5, 80), (2, 15)))
    metric = FASResiduals(dt=0.01)
    metric.update(w, m, r, z)
    out = metric.compute()
    freqs = np.fft.rfftfreq(6000, 0.01)
    fas = np.abs(np.fft.rfft(w.numpy(), axis=1)) * 0.01
    ln5 = np.log([_ko_direct(freqs, row, 5.0, 20.0) for row in fas])
    c0, c1, c2, c3, _ = ERGODIC_SFBA_GMM[5.0]
    res = ln5 - (c0 + c1 * m.numpy() + c2 * np.log(r.numpy()) + c3 * z.numpy())
    assert out["residual_mean_5hz"].item() == pytest.approx(res.mean(), rel=1e-9)
    assert out["residual_std_5hz"].item() == pytest.approx(res.std(ddof=1), rel=1e-9)


@pytest.mark.ddp
def test_fas_residuals_ddp_matches_single_process():
    rng = np.random.default_rng(5)
    batches = []
    for _ in range(4):
        batches.append((torch.as_tensor(rng.standard_normal((6, 600)) * 1e-5),
                        torch.as_tensor(rng.uniform(2, 4, 6)), torch.as_tensor(rng.uniform(5, 80, 6)),
                        torch.as_tensor(rng.uniform(2, 15, 6))))
    assert_ddp_matches_single_process(functools.partial(FASResiduals, dt=0.01), batches)


def test_discriminative_score_separates_distributions():
    torch.manual_seed(0)
    real = torch.randn(200, 8, 5)
    same = torch.randn(200, 8, 5)
    different = torch.randn(200, 8, 5) + 1.5
    low, _ = discriminative_score(real, same, iterations=60, repeats=2, batch_size=64)
    high, _ = discriminative_score(real, different, iterations=60, repeats=2, batch_size=64)
    assert low < 0.15 and high > 0.4, (low, high)
    with pytest.raises(ValueError, match="equal T, F"):
        discriminative_score(real, torch.randn(10, 8, 4))
