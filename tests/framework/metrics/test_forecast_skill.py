"""Forecast-skill metrics against references: numpy, brute-force CRPS, skimage SSIM/PSNR, hand-computed spread-skill;
and the DDP sync is exact."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from framework.metrics.forecast_skill import (
    ForecastSkill,
    ensemble_crps,
    forecast_skill,
    frame_psnr,
    frame_ssim,
    relative_frobenius_error,
)


@pytest.fixture(autouse=True)
def _one_thread():
    # small tensors: one intra-op thread is much faster than two on a shared 2-core machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _data(b=3, m=4, lead=2, c=2, h=12, w=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(b, lead, c, h, w, generator=g, dtype=torch.float64)
    preds = target.unsqueeze(1) + 0.5 * torch.randn(b, m, lead, c, h, w, generator=g, dtype=torch.float64)
    return preds, target


def test_crps_matches_brute_force():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    pair = (x[:, None] - x[None]).abs().sum((0, 1))
    skill = (x - y).abs().mean(0)
    assert torch.allclose(ensemble_crps(x, y), skill - pair / (2 * 36))
    assert torch.allclose(ensemble_crps(x, y, fair=True), skill - pair / (2 * 6 * 5))
    assert torch.allclose(ensemble_crps(x[:1], y), (x[0] - y).abs())  # one member: MAE


def test_crps_of_gaussian_ensemble_approaches_closed_form():
    # CRPS(N(0, 1), y) = y(2Φ(y) − 1) + 2φ(y) − 1/√π
    y = torch.tensor([0.3], dtype=torch.float64)
    members = torch.randn(40000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    phi = math.exp(-0.3**2 / 2) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + math.erf(0.3 / math.sqrt(2)))
    exact = 0.3 * (2 * cdf - 1) + 2 * phi - 1 / math.sqrt(math.pi)
    assert float(ensemble_crps(members, y, fair=True)) == pytest.approx(exact, abs=5e-3)


def test_deterministic_metrics_against_numpy_and_skimage():
    preds, target = _data()
    out = forecast_skill(preds, target)
    p, t = preds.numpy(), target.numpy()
    mse = ((p - t[:, None]) ** 2).mean(axis=(0, 1, 3, 4, 5))
    np.testing.assert_allclose(out["mse"].numpy(), mse, rtol=1e-5)
    rfne = (np.linalg.norm((p - t[:, None]).reshape(3, 4, 2, -1), axis=-1)
            / np.linalg.norm(t.reshape(3, 1, 2, -1), axis=-1)).mean(axis=(0, 1))
    np.testing.assert_allclose(out["rfne"].numpy(), rfne, rtol=1e-5)
    corr = np.array([[[np.corrcoef(p[i, j, k].ravel(), t[i, k].ravel())[0, 1] for k in range(2)] for j in range(4)]
                     for i in range(3)]).mean(axis=(0, 1))
    np.testing.assert_allclose(out["correlation"].numpy(), corr, rtol=1e-5)
    ssim, psnr = np.zeros(2), np.zeros(2)
    for i in range(3):
        for j in range(4):
            for k in range(2):
                r = t[i, k].max() - t[i, k].min()
                ssim[k] += structural_similarity(t[i, k], p[i, j, k], data_range=r, channel_axis=0,
                                                 gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
                psnr[k] += peak_signal_noise_ratio(t[i, k], p[i, j, k], data_range=r)
    np.testing.assert_allclose(out["ssim"].numpy(), ssim / 12, rtol=1e-5)
    np.testing.assert_allclose(out["psnr"].numpy(), psnr / 12, rtol=1e-5)
    ens_mean = p.mean(1)
    np.testing.assert_allclose(out["ensemble_mean_rmse"].numpy(),
                               np.sqrt(((ens_mean - t) ** 2).mean(axis=(0, 2, 3, 4))), rtol=1e-5)


def test_spread_skill_by_hand_and_calibration():
    preds, target = _data(m=5)
    out = forecast_skill(preds, target)
    p, t = preds.numpy(), target.numpy()
    spread = np.sqrt(p.var(axis=1, ddof=1).mean(axis=(0, 2, 3, 4)))
    rmse = np.sqrt(((p.mean(1) - t) ** 2).mean(axis=(0, 2, 3, 4)))
    np.testing.assert_allclose(out["spread"].numpy(), spread, rtol=1e-5)
    np.testing.assert_allclose(out["spread_skill"].numpy(), math.sqrt(6 / 5) * spread / rmse, rtol=1e-5)
    # a calibrated ensemble (truth exchangeable with the members) has spread-skill ≈ 1
    g = torch.Generator().manual_seed(3)
    centre = torch.randn(400, 1, 1, 1, 4, 4, generator=g)
    draws = centre + torch.randn(400, 9, 1, 1, 4, 4, generator=g)
    ratio = forecast_skill(draws[:, 1:], draws[:, 0], image_metrics=False)["spread_skill"]
    assert float(ratio) == pytest.approx(1.0, abs=0.05)
    # one member: spread undefined
    assert torch.isnan(forecast_skill(preds[:, :1], target)["spread_skill"]).all()


def test_helpers_and_per_frame_range():
    x = torch.ones(2, 1, 3, 3)
    assert torch.allclose(relative_frobenius_error(2 * x, x), torch.ones(2))
    t = torch.rand(2, 1, 16, 16, dtype=torch.float64)
    # per-frame range is invariant to rescaling both images
    assert torch.allclose(frame_ssim(3 * (t + 0.1), 3 * t), frame_ssim(t + 0.1, t))
    assert torch.allclose(frame_psnr(3 * (t + 0.1), 3 * t), frame_psnr(t + 0.1, t))


def test_small_frames_give_nan_ssim_and_bad_input():
    preds, target = _data(h=4, w=4)
    out = forecast_skill(preds, target)
    assert torch.isnan(out["ssim"]).all() and torch.isfinite(out["psnr"]).all()
    with pytest.raises(ValueError, match="horizon must be a positive integer"):
        ForecastSkill(horizon=0)
    with pytest.raises(ValueError, match=r"preds must be \[B, M, L, C, H, W\]"):
        ForecastSkill(horizon=2).update(target, target)
    with pytest.raises(ValueError, match="expected 3 lead times, got 2"):
        ForecastSkill(horizon=3).update(preds, target)


def test_accumulation_equals_one_batch():
    preds, target = _data(b=4)
    metric = ForecastSkill(horizon=2)
    metric.update(preds[:1], target[:1])
    metric.update(preds[1:], target[1:])
    whole = forecast_skill(preds, target)
    for key, value in metric.compute().items():
        assert torch.allclose(value, whole[key], equal_nan=True), key


@pytest.mark.ddp
def test_ddp_matches_single_process():
    from tests.helpers.metric_ddp import assert_ddp_matches_single_process

    preds, target = _data(b=4, seed=5)
    batches = [(preds[i:i + 1].float(), target[i:i + 1].float()) for i in range(4)]
    assert_ddp_matches_single_process(functools.partial(ForecastSkill, horizon=2), batches)
