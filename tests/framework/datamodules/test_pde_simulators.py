"""PDE simulators: conservation laws, exact solutions on simple initial states, and the PDEBench reader."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from framework.datamodules.pde.diffusion_reaction import (
    integrate_fitzhugh_nagumo,
    neumann_laplacian,
    simulate_diffusion_reaction,
)
from framework.datamodules.pde.kuramoto_sivashinsky import ks_integrate, simulate_kuramoto_sivashinsky
from framework.datamodules.pde.linear_ar1 import ar1_optimal_forecast, simulate_linear_ar1
from framework.datamodules.pde.navier_stokes import NavierStokesSolver, simulate_navier_stokes
from framework.datamodules.pde.pdebench_loader import load_pdebench, pdebench_layout
from framework.datamodules.pde.shallow_water import ShallowWaterSolver, radial_dam, simulate_shallow_water


# ---------------------------------------------------------------- Navier–Stokes
def test_navier_stokes_velocity_is_divergence_free():
    vel = simulate_navier_stokes(num_trajectories=2, num_frames=3, resolution=32, dt=0.01, frame_interval=0.1,
                                 fields="velocity", seed=1).astype(np.float64)
    assert vel.shape == (2, 3, 2, 32, 32)
    k = 2 * np.pi * np.fft.fftfreq(32, d=1 / 32)
    kx, ky = np.meshgrid(k, k, indexing="ij")
    div = np.fft.ifft2(1j * kx * np.fft.fft2(vel[:, :, 0]) + 1j * ky * np.fft.fft2(vel[:, :, 1])).real
    assert np.abs(div).max() < 1e-5 * np.abs(vel).max() * 32  # float32 storage round-off only


def test_navier_stokes_laplacian_eigenmode_decays_exactly():
    # ω = sin(2πx) sin(2πy) is a Laplacian eigenfunction: u·∇ω = 0, so ω(t) = ω(0) exp(−8π² ν t) without forcing.
    n, nu, dt = 32, 1e-2, 1e-3
    x = np.arange(n) / n
    xx, yy = np.meshgrid(x, x, indexing="ij")
    w0 = (np.sin(2 * np.pi * xx) * np.sin(2 * np.pi * yy))[None]
    solver = NavierStokesSolver(n=n, viscosity=nu, forcing_amplitude=0.0, dt=dt)
    frames = solver.run(w0, num_frames=3, frame_interval=0.5)
    for i, t in enumerate((0.0, 0.5, 1.0)):
        np.testing.assert_allclose(frames[0, i], w0[0] * math.exp(-8 * math.pi**2 * nu * t), atol=1e-6)


def test_navier_stokes_bad_input():
    with pytest.raises(ValueError, match="viscosity must be a positive number"):
        NavierStokesSolver(n=16, viscosity=0.0)
    with pytest.raises(ValueError, match="fields must be one of"):
        simulate_navier_stokes(num_trajectories=1, num_frames=2, resolution=8, fields="pressure")
    with pytest.raises(ValueError, match="multiple of dt"):
        NavierStokesSolver(n=8, dt=0.3).run(np.zeros((1, 8, 8)), num_frames=2, frame_interval=0.5)


# ---------------------------------------------------------------- diffusion–reaction
def test_neumann_laplacian_conserves_mass_and_kills_constants():
    field = np.random.default_rng(0).standard_normal((3, 10, 10))
    assert np.abs(neumann_laplacian(field, 0.1).sum(axis=(-2, -1))).max() < 1e-9
    assert np.abs(neumann_laplacian(np.full((5, 5), 2.0), 0.1)).max() == 0


def test_pure_diffusion_conserves_each_species():
    state0 = np.random.default_rng(1).standard_normal((1, 2, 16, 16))
    frames = integrate_fitzhugh_nagumo(state0, num_frames=3, frame_interval=0.5, dt=0.01, dx=2 / 16, reaction=False)
    totals = frames.sum(axis=(-2, -1))
    np.testing.assert_allclose(totals, np.broadcast_to(totals[:, :1], totals.shape), atol=1e-9)
    assert frames[0, -1].std() < frames[0, 0].std()  # and it smooths


def test_uniform_state_follows_the_reaction_ode():
    u0, v0, k = 0.7, -0.2, 5e-3
    state0 = np.stack([np.full((8, 8), u0), np.full((8, 8), v0)])[None]
    frames = integrate_fitzhugh_nagumo(state0, num_frames=5, frame_interval=0.25, dt=0.005, dx=0.25, k=k)
    ref = solve_ivp(lambda t, y: [y[0] - y[0] ** 3 - k - y[1], y[0] - y[1]], (0, 1), [u0, v0],
                    t_eval=np.linspace(0, 1, 5), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(frames[0, :, 0, 3, 3], ref.y[0], atol=1e-7)
    np.testing.assert_allclose(frames[0, :, 1, 5, 2], ref.y[1], atol=1e-7)


def test_diffusion_reaction_shapes_and_finiteness():
    out = simulate_diffusion_reaction(num_trajectories=2, num_frames=6, resolution=16, t_final=1.0)
    assert out.shape == (2, 6, 2, 16, 16) and out.dtype == np.float32 and np.isfinite(out).all()
    assert not np.allclose(out[0], out[1])  # independent initial states


# ---------------------------------------------------------------- shallow water
def test_shallow_water_wall_conserves_mass():
    solver = ShallowWaterSolver(n=32, boundary="wall")
    state0 = radial_dam(32, length=5.0, centres=np.array([[0.3, -0.2]]), radii=np.array([0.8]))
    frames = solver.run(state0, num_frames=6, t_final=2.0)  # long enough for waves to reach the walls
    mass = frames[:, :, 0].sum(axis=(-2, -1))
    np.testing.assert_allclose(mass, np.broadcast_to(mass[:, :1], mass.shape), rtol=1e-12)
    assert (frames[:, :, 0] > 0).all()


def test_shallow_water_lake_at_rest_and_symmetry():
    solver = ShallowWaterSolver(n=16)
    still = np.zeros((1, 3, 16, 16))
    still[:, 0] = 1.5
    frames = solver.run(still, num_frames=3, t_final=0.5)
    np.testing.assert_allclose(frames[0, -1], still[0], atol=1e-13)
    centred = radial_dam(32, length=5.0, centres=np.zeros((1, 2)), radii=np.array([0.6]))
    out = ShallowWaterSolver(n=32).run(centred, num_frames=3, t_final=0.5)
    h = out[0, -1, 0]
    np.testing.assert_allclose(h, h.T, atol=1e-12)
    np.testing.assert_allclose(h, h[::-1], atol=1e-12)
    assert h.max() < 2.0 and h.min() >= 1.0 - 1e-9  # the dam has started to collapse, no undershoot below rest
    sim = simulate_shallow_water(num_trajectories=2, num_frames=4, resolution=16)
    assert sim.shape == (2, 4, 1, 16, 16)


# ---------------------------------------------------------------- Kuramoto–Sivashinsky
def test_ks_linear_modes_grow_at_the_dispersion_rate():
    length, n = 22.0, 64
    x = np.arange(n) * length / n
    k = 2 * np.pi / length * np.array([1, 3])
    u0 = 1e-3 * (np.cos(k[0] * x) + np.sin(k[1] * x))[None]
    frames = ks_integrate(u0, length=length, dt=0.1, num_frames=2, frame_interval=2.0, nonlinear=False)
    exact = 1e-3 * (np.exp((k[0] ** 2 - k[0] ** 4) * 2) * np.cos(k[0] * x) + np.exp((k[1] ** 2 - k[1] ** 4) * 2)
                    * np.sin(k[1] * x))
    np.testing.assert_allclose(frames[0, 1], exact, atol=1e-12)


def test_ks_conserves_mean_and_stays_bounded():
    out = simulate_kuramoto_sivashinsky(num_trajectories=2, num_frames=40, resolution=64, burn_in=50.0,
                                        frame_interval=5.0)
    assert out.shape == (2, 40, 1, 1, 64)
    assert np.abs(out.mean(axis=-1)).max() < 1e-5
    assert np.isfinite(out).all() and 0.5 < out.std() < 3.0  # on the attractor, not blown up


# ---------------------------------------------------------------- AR(1)
def test_ar1_statistics():
    a, q = 0.9, 0.1
    x = simulate_linear_ar1(num_trajectories=200, num_frames=60, coefficient=a, noise_std=q).astype(np.float64)
    prev, nxt = x[:, :-1].ravel(), x[:, 1:].ravel()
    slope = (prev * nxt).sum() / (prev * prev).sum()
    assert slope == pytest.approx(a, abs=0.01)
    assert (nxt - a * prev).std() == pytest.approx(q, rel=0.02)
    assert x.std() == pytest.approx(q / math.sqrt(1 - a * a), rel=0.05)
    mean, std = ar1_optimal_forecast(np.ones(2), lead=2, coefficient=a, noise_std=q)
    np.testing.assert_allclose(mean, a * a)
    assert std == pytest.approx(q * math.sqrt(1 + a * a))
    with pytest.raises(ValueError, match="coefficient must lie in"):
        simulate_linear_ar1(num_trajectories=1, num_frames=2, coefficient=1.0)


# ---------------------------------------------------------------- PDEBench reader
def _write_seed_groups(path, n=3, t=5, h=8, c=2):
    import h5py

    rng = np.random.default_rng(0)
    data = rng.standard_normal((n, t, h, h, c)).astype(np.float32)
    with h5py.File(path, "w") as f:
        for i in range(n):
            g = f.create_group(f"{i:04d}")
            g.create_dataset("data", data=data[i])
            g.create_dataset("grid/x", data=np.linspace(-1, 1, h))
            g.create_dataset("grid/t", data=np.linspace(0, 5, t))
    return data


def test_pdebench_seed_group_layout(tmp_path):
    path = tmp_path / "2D_diff-react_NA_NA.h5"
    data = _write_seed_groups(path)
    assert pdebench_layout(path) == {"layout": "seed_groups", "keys": ["0000", "0001", "0002"]}
    out = load_pdebench(path)
    assert out.shape == (3, 5, 2, 8, 8)
    np.testing.assert_array_equal(out, np.moveaxis(data, -1, 2))
    strided = load_pdebench(path, max_trajectories=2, frame_stride=2, spatial_stride=2)
    np.testing.assert_array_equal(strided, np.moveaxis(data[:2, ::2, ::2, ::2], -1, 2))


def test_pdebench_stacked_layout(tmp_path):
    import h5py

    rng = np.random.default_rng(1)
    velocity = rng.standard_normal((2, 4, 8, 8, 2)).astype(np.float32)
    density = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    path = tmp_path / "ns_incom_inhom_2d_512-0.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("velocity", data=velocity)
        f.create_dataset("density", data=density)
        f.create_dataset("t", data=np.linspace(0, 1, 4))
    out = load_pdebench(path, fields=["velocity", "density"])
    assert out.shape == (2, 4, 3, 8, 8)
    np.testing.assert_array_equal(out[:, :, :2], np.moveaxis(velocity, -1, 2))
    np.testing.assert_array_equal(out[:, :, 2], density)
    with pytest.raises(ValueError, match=r"fields \['pressure'\] not in"):
        load_pdebench(path, fields=["pressure"])


def test_pdebench_bad_files(tmp_path):
    import h5py

    with pytest.raises(FileNotFoundError, match="pdebench_path must be an existing file"):
        load_pdebench(tmp_path / "missing.h5")
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(ValueError, match="is not a PDEBench 2-D file"):
        load_pdebench(path)
