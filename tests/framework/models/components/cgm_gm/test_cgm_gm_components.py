"""CGM-GM components: parameter count, KL against Monte Carlo, reparameterisation, causality, Griffin–Lim."""

from __future__ import annotations

import math

import pytest
import torch

from framework.datamodules.ground_motion import SpectrogramTransform
from framework.models.components.cgm_gm import (
    GroundMotionDVAE,
    SequentialPrior,
    gaussian_kl,
    griffin_lim,
    reparameterize,
    spectral_convergence,
)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def test_best_configuration_has_the_notes_parameter_count():
    net = GroundMotionDVAE(num_conditions=6, num_frequencies=81, embedding_dim=16, z_dim=32, z_rnn_dim=32)
    assert _count(net) == 173_009
    # Layer-by-layer, as in the research note: embedding 1,808; posterior GRU 104,976 + BN 288 + heads 22,720;
    # prior 7,872 + 2,112; decoder 33,233.
    assert _count(net.embedding) == 1_808
    assert _count(net.posterior) == 104_976 + 288 + 22_720
    assert _count(net.prior) == 7_872 + 2_112
    assert _count(net.decoder) == 33_233


def test_kl_matches_monte_carlo():
    torch.manual_seed(0)
    mq, lq = torch.tensor([0.3, -1.0]), torch.tensor([-0.5, 0.4])
    mp, lp = torch.tensor([0.0, 0.5]), torch.tensor([0.2, -0.3])
    closed = gaussian_kl(mq, lq, mp, lp)
    z = mq + torch.exp(0.5 * lq) * torch.randn(400_000, 2, dtype=torch.float64)
    log_q = torch.distributions.Normal(mq.double(), torch.exp(0.5 * lq).double()).log_prob(z)
    log_p = torch.distributions.Normal(mp.double(), torch.exp(0.5 * lp).double()).log_prob(z)
    mc = (log_q - log_p).mean(0)
    torch.testing.assert_close(closed.double(), mc, atol=0.01, rtol=0.0)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mq, torch.exp(0.5 * lq)),
                                            torch.distributions.Normal(mp, torch.exp(0.5 * lp)))
    torch.testing.assert_close(closed, ref)


def test_reparameterization_correct_and_faithful():
    mean, logvar = torch.zeros(200_000), torch.full((200_000,), math.log(4.0))
    g = torch.Generator().manual_seed(0)
    assert reparameterize(mean, logvar, generator=g).std().item() == pytest.approx(2.0, rel=0.01)
    # The released code's sigma = 0.5 * exp(logvar): 0.5 at logvar = 0 (the correct sigma is 1).
    zeros = torch.zeros(200_000)
    assert reparameterize(mean, zeros, generator=g).std().item() == pytest.approx(1.0, rel=0.01)
    assert reparameterize(mean, zeros, faithful=True, generator=g).std().item() == pytest.approx(0.5, rel=0.01)


def test_posterior_is_causal_and_shapes():
    torch.manual_seed(0)
    net = GroundMotionDVAE().eval()
    x, c = torch.rand(2, 131, 81), torch.rand(2, 6)
    out = net(x, c)
    assert out.reconstruction.shape == (2, 131, 81) and out.kl.shape == (2, 131, 32)
    x2 = x.clone()
    x2[:, 60:] = torch.rand(2, 71, 81)
    out2 = net(x2, c)
    torch.testing.assert_close(out.mean_q[:, :60], out2.mean_q[:, :60])
    assert not torch.allclose(out.mean_q[:, 60:], out2.mean_q[:, 60:])
    with pytest.raises(ValueError, match=r"x must be \[B, T, 81\]"):
        net(torch.rand(2, 131, 80), c)
    with pytest.raises(ValueError, match=r"condition must be \[B, 6\]"):
        net(x, torch.rand(2, 5))


def test_prior_unrolls_on_its_own_samples():
    torch.manual_seed(0)
    prior = SequentialPrior(z_dim=4, embedding_dim=3, rnn_dim=8)
    cond = torch.rand(2, 5, 3)
    z, mean, _ = prior(cond, generator=torch.Generator().manual_seed(1))
    z2, _, _ = prior(cond, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(z, z2)
    # Replay step 2 by hand from the step-1 sample: the prior of frame t depends on z_{t-1}.
    h_true = torch.zeros(2, 8)
    g = torch.Generator().manual_seed(1)
    z0 = torch.randn(6, 2, 4, generator=g)[0]  # the noise of all T + 1 = 6 draws comes from one call, z_0's first
    h_true = prior.cell(torch.cat([z0, cond[:, 0]], -1), h_true)
    torch.testing.assert_close(prior.mean(h_true), mean[:, 0])
    h_true = prior.cell(torch.cat([z[:, 0], cond[:, 1]], -1), h_true)
    torch.testing.assert_close(prior.mean(h_true), mean[:, 1])
    gen = GroundMotionDVAE().generate(torch.rand(3, 6), 131, generator=torch.Generator().manual_seed(0))
    assert gen.shape == (3, 131, 81)


def test_griffin_lim_error_decreases_with_iterations():
    torch.manual_seed(0)
    transform = SpectrogramTransform()
    t = torch.arange(6000) * 0.01
    w = torch.sin(2 * math.pi * 3.0 * t) * torch.exp(-((t - 20) / 5) ** 2) + 0.3 * torch.randn(6000) * (t > 15)
    amplitude = transform(w[None]).abs()
    errors = []
    for n_iter in (0, 5, 50):
        rebuilt = griffin_lim(amplitude, transform, n_iter=n_iter, generator=torch.Generator().manual_seed(0))
        errors.append(spectral_convergence(rebuilt, amplitude, transform).item())
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.5 * errors[0]
    hann = SpectrogramTransform(window="hann")
    assert griffin_lim(hann(w[None]).abs(), hann, n_iter=3).shape == (1, 6000)
    with pytest.raises(ValueError, match="momentum"):
        griffin_lim(amplitude, transform, momentum=1.5)
