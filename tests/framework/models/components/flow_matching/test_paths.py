"""Probability paths: endpoint marginals, u_t = d x_t / dt along a fixed ε, exact fields transport z_k to z_{k+1}."""

from __future__ import annotations

import math

import pytest
import torch

from framework.models.components.flow_matching import PATHS, BridgePath, integrate, make_path



@pytest.fixture(autouse=True)
def _float64():
    # finite differences and endpoint laws are checked in double precision
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def _pair(batch=3, shape=(2, 4, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *shape, generator=g), torch.randn(batch, *shape, generator=g)


# (mean at t = t_min, std at t_min, mean at t_max, std at t_max) as functions of (z_ref, z_next) and the path
def _stated_marginals(path, z_ref, z_next):
    name = path.name
    if name == "bridge":
        return z_ref, path.sigma_min, z_next, path.sigma_min
    if name == "lipman_ot":
        return torch.zeros_like(z_ref), 1.0, z_next, path.sigma_min
    if name == "ve_diffusion":
        s0 = path.sigma_min * math.sqrt((path.sigma_max / path.sigma_min) ** 2 - 1)
        return z_next, s0, z_next, 0.0
    if name == "vp_diffusion":
        big_t = path.beta_min + (path.beta_max - path.beta_min) / 2
        return math.exp(-big_t / 2) * z_next, math.sqrt(1 - math.exp(-big_t)), z_next, 0.0
    if name.startswith("stochastic_interpolant"):
        return z_ref, 0.0, z_next, 0.0
    raise AssertionError(name)


@pytest.mark.parametrize("name", PATHS)
def test_endpoint_marginals(name):
    path = make_path(name)
    z_ref, z_next = _pair(batch=1, shape=(1, 4, 4))
    n = 20000
    zr, zn = z_ref.expand(n, -1, -1, -1), z_next.expand(n, -1, -1, -1)
    mean0, std0, mean1, std1 = _stated_marginals(path, zr[:1], zn[:1])
    for t_value, mean, std in ((0.0, mean0, std0), (1.0, mean1, std1)):
        t = torch.full((n,), t_value)
        x = path.point(t, zr, zn, torch.randn(zr.shape, generator=torch.Generator().manual_seed(1)))
        assert float(path.sigma(t[:1])) == pytest.approx(std, abs=1e-12)
        tol = 5 * std / math.sqrt(n) + 1e-12
        assert torch.allclose(x.mean(0), mean[0], atol=tol)
        assert float(x.std(0).mean()) == pytest.approx(std, rel=0.02, abs=1e-12)


@pytest.mark.parametrize("name", PATHS)
def test_target_is_time_derivative_of_path(name):
    path = make_path(name)
    z_ref, z_next = _pair()
    noise = torch.randn(z_ref.shape, generator=torch.Generator().manual_seed(2))
    eps = 1e-6
    lo, hi = path.t_min + 0.01, path.t_max - 0.01
    t = torch.tensor([lo, 0.5 * (lo + hi), hi])
    x = path.point(t, z_ref, z_next, noise)
    fd = (path.point(t + eps, z_ref, z_next, noise) - path.point(t - eps, z_ref, z_next, noise)) / (2 * eps)
    u = path.target(t, x, z_ref, z_next)
    assert torch.allclose(u, fd, rtol=1e-5, atol=1e-5 * (1 + fd.abs().max()))


@pytest.mark.parametrize("name", PATHS)
def test_sample_is_consistent(name):
    path = make_path(name)
    z_ref, z_next = _pair()
    s = path.sample(z_ref, z_next, generator=torch.Generator().manual_seed(0))
    assert ((s.t >= path.t_min) & (s.t <= path.t_max)).all()
    assert torch.allclose(s.u_t, path.target(s.t, s.x_t, z_ref, z_next))
    assert torch.allclose(s.mean, path.mean(s.t, z_ref, z_next))


def test_bridge_analytic_values():
    path = BridgePath(sigma=0.01, sigma_min=0.001)
    half = torch.tensor([0.5])
    assert float(path.sigma(half)) == pytest.approx(math.sqrt(0.01**2 / 4 + 0.001**2))  # ≈ 5.10e-3
    z_ref, z_next = _pair()
    t = torch.full((3,), 0.3)
    mu = path.mean(t, z_ref, z_next)
    assert torch.allclose(path.target(t, mu, z_ref, z_next), z_next - z_ref)  # u_t(μ_t) = z_{k+1} − z_k
    ratio = path.sigma_ratio(t)
    expected = 0.01**2 * (1 - 2 * 0.3) / (2 * (0.01**2 * 0.3 * 0.7 + 0.001**2))
    assert torch.allclose(ratio, torch.full((3,), expected))


STIFF = ("ve_diffusion", "vp_diffusion", "stochastic_interpolant", "stochastic_interpolant_linear")


@pytest.mark.parametrize("name", PATHS)
@pytest.mark.parametrize("method,intervals", [("euler", 400), ("heun", 50), ("rk4", 20)])
def test_exact_field_transports_source_to_target(name, method, intervals):
    """Integrating the conditional field along a fixed ε carries x_{t_min} to x_{t_max} ≈ z_{k+1} (+ σ_end ε).

    σ'/σ grows like −1/(2(1 − t)) near t = 1 for the diffusion paths and the interpolants, so a fixed-step solver
    cannot be accurate up to t_max there; those are integrated to t = 0.9 (and their t_max point is checked against
    z_{k+1} directly).
    """
    path = make_path(name)
    z_ref, z_next = _pair()
    noise = torch.randn(z_ref.shape, generator=torch.Generator().manual_seed(3))
    t0, t1 = path.t_min, (0.9 if name in STIFF else path.t_max)
    x0 = path.point(torch.full((3,), t0), z_ref, z_next, noise)

    def field(x, t):
        return path.target(t, x, z_ref, z_next)

    x1 = integrate(field, x0, method=method, intervals=intervals, t0=t0, t1=t1)
    end = path.point(torch.full((3,), t1), z_ref, z_next, noise)
    tol = {"euler": 2e-2, "heun": 2e-3, "rk4": 2e-4}[method]
    if name in STIFF:
        tol = max(tol, 1e-2)  # σ'/σ is still large at t_min for the interpolants
    assert torch.allclose(x1, end, atol=tol * (1 + end.abs().max()))
    t_end = torch.full((3,), path.t_max)
    final = path.point(t_end, z_ref, z_next, noise)
    sigma_end = float(path.sigma(t_end[:1]))
    scale = float(path.mean(t_end, z_ref, z_next).sub(z_next).abs().max())
    assert torch.allclose(final, z_next, atol=5 * sigma_end * float(noise.abs().max()) + scale + 1e-9)
    if name == "bridge":  # the whole transport, to within the σ_min floor
        assert torch.allclose(x1, z_next, atol=1e-3 * float(noise.abs().max()) + tol)


def test_source_rules():
    z_ref, _ = _pair()
    bridge = make_path("bridge")
    assert torch.equal(bridge.source(z_ref), z_ref)
    noisy = bridge.source(z_ref, sigma_sam=0.5, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(noisy, z_ref)
    ot = make_path("lipman_ot")
    src = ot.source(torch.zeros(2000, 4), generator=torch.Generator().manual_seed(0))
    assert float(src.std()) == pytest.approx(1.0, rel=0.05)
    with pytest.raises(ValueError, match="sigma_sam"):
        bridge.source(z_ref, sigma_sam=-1.0)


def test_bad_input():
    with pytest.raises(ValueError, match=r"unknown probability path 'nope'.*bridge.*lipman_ot"):
        make_path("nope")
    with pytest.raises(ValueError, match="sigma must be a positive number, got 0"):
        make_path("bridge", sigma=0)
    with pytest.raises(ValueError, match="sigma_min must be a positive number, got -0.1"):
        make_path("bridge", sigma_min=-0.1)
    with pytest.raises(ValueError, match="sigma must be a positive number"):
        make_path("stochastic_interpolant", sigma=-1.0)
    with pytest.raises(ValueError, match="bad options for path 'lipman_ot'"):
        make_path("lipman_ot", sigma=0.1)
    with pytest.raises(ValueError, match="sigma_max must exceed sigma_min"):
        make_path("ve_diffusion", sigma_min=0.1, sigma_max=0.05)
    with pytest.raises(ValueError, match="same shape"):
        make_path("bridge").sample(torch.zeros(2, 3), torch.zeros(2, 4))
