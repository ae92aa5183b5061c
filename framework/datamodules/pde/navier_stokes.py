"""2-D incompressible Navier–Stokes in vorticity form on the periodic unit square, pseudo-spectral (FNO-style set-up).

    ∂_t ω + u·∇ω = ν Δω + f,    u = (∂_y ψ, −∂_x ψ),    −Δψ = ω

with forcing ``f = forcing_amplitude (sin 2π(x+y) + cos 2π(x+y))`` (0.1 in Li et al. 2021). Time stepping:
Crank–Nicolson for the viscous term, second-order Heun (explicit trapezoid) for advection + forcing, 2/3-rule
dealiasing. Initial vorticity: a Gaussian random field with covariance ``7^{3/2} (−Δ + 49)^{−2.5}`` (as in the FNO
data) scaled by ``init_scale``. The velocity is divergence-free by construction (it comes from a stream function),
exactly in the discrete spectral sense.

Output frames ``[N, T, C, n, n]``: vorticity (C = 1) or velocity ``(u, v)`` (C = 2). Batched over trajectories in
numpy; measured ≈ 0.4 ms per step per 64² trajectory on one core.
"""

from __future__ import annotations

import math

import numpy as np

from framework.validation import require_choice, require_non_negative, require_positive

__all__ = ["simulate_navier_stokes", "NavierStokesSolver", "gaussian_random_field"]


def _wavenumbers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Angular wavenumbers ``(kx [n, n//2+1], ky [n, n//2+1])`` of ``rfft2`` on [0, 1)² (axis 0 = x, axis 1 = y)."""
    k = 2 * np.pi * np.fft.fftfreq(n, d=1.0 / n)
    kr = 2 * np.pi * np.fft.rfftfreq(n, d=1.0 / n)
    return np.meshgrid(k, kr, indexing="ij")


def gaussian_random_field(rng: np.random.Generator, batch: int, n: int, *, alpha: float = 2.5,
                          tau: float = 7.0) -> np.ndarray:
    """Zero-mean periodic field ``[batch, n, n]`` with covariance ``τ^{2α−2}·… (−Δ + τ²)^{−α}`` (FNO's sampler)."""
    kx, ky = _wavenumbers(n)
    k2 = kx**2 + ky**2
    k2_unit = k2 / (2 * np.pi) ** 2  # FNO uses integer wavenumbers with 4π² in the Laplacian
    sqrt_eig = n**2 * math.sqrt(2.0) * tau ** (alpha - 1) * (4 * np.pi**2 * k2_unit + tau**2) ** (-alpha / 2)
    sqrt_eig[0, 0] = 0.0
    noise = rng.standard_normal((batch, n, n // 2 + 1)) + 1j * rng.standard_normal((batch, n, n // 2 + 1))
    return np.fft.irfft2(sqrt_eig * noise / math.sqrt(2.0), s=(n, n))


class NavierStokesSolver:
    """Pseudo-spectral vorticity solver on an ``n × n`` periodic grid of the unit square.

    Args:
        n: grid points per side.
        viscosity: ν > 0.
        forcing_amplitude: amplitude of the FNO forcing (0: unforced).
        dt: time step.
    """

    def __init__(self, *, n: int, viscosity: float = 1e-3, forcing_amplitude: float = 0.1, dt: float = 1e-2) -> None:
        if not isinstance(n, int) or n < 4 or n % 2:
            raise ValueError(f"n must be an even integer >= 4, got {n!r}")
        require_positive("viscosity", viscosity)
        require_non_negative("forcing_amplitude", forcing_amplitude)
        require_positive("dt", dt)
        self.n, self.nu, self.dt = n, viscosity, dt
        self.kx, self.ky = _wavenumbers(n)
        self.k2 = self.kx**2 + self.ky**2
        self.inv_k2 = np.where(self.k2 > 0, 1.0 / np.where(self.k2 > 0, self.k2, 1.0), 0.0)
        cutoff = (2.0 / 3.0) * np.pi * n  # 2/3 rule on |k| / (2π) <= n/3
        self.dealias = (np.abs(self.kx) <= cutoff) & (np.abs(self.ky) <= cutoff)
        # The Nyquist modes' derivatives are not representable by a real field (irfft drops their imaginary part),
        # so derivatives skip them; without this the velocity is not exactly divergence-free.
        self.derivable = np.ones_like(self.k2, dtype=bool)
        self.derivable[n // 2, :] = False
        self.derivable[:, -1] = False
        x = np.arange(n) / n
        xx, yy = np.meshgrid(x, x, indexing="ij")
        forcing = forcing_amplitude * (np.sin(2 * np.pi * (xx + yy)) + np.cos(2 * np.pi * (xx + yy)))
        self.forcing_hat = np.fft.rfft2(forcing)

    def velocity_hat(self, w_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Spectral velocity ``(u, v) = (∂_y ψ, −∂_x ψ)`` with ``ψ̂ = ω̂ / |k|²``."""
        psi_hat = w_hat * self.inv_k2 * self.derivable
        return 1j * self.ky * psi_hat, -1j * self.kx * psi_hat

    def velocity(self, w: np.ndarray) -> np.ndarray:
        """Velocity ``[..., 2, n, n]`` of vorticity ``[..., n, n]``."""
        u_hat, v_hat = self.velocity_hat(np.fft.rfft2(w))
        s = (self.n, self.n)
        return np.stack([np.fft.irfft2(u_hat, s=s), np.fft.irfft2(v_hat, s=s)], axis=-3)

    def _explicit(self, w_hat: np.ndarray) -> np.ndarray:
        """Spectral ``−u·∇ω + f`` (dealiased)."""
        s = (self.n, self.n)
        u_hat, v_hat = self.velocity_hat(w_hat)
        u, v = np.fft.irfft2(u_hat, s=s), np.fft.irfft2(v_hat, s=s)
        w_d = w_hat * self.derivable
        wx, wy = np.fft.irfft2(1j * self.kx * w_d, s=s), np.fft.irfft2(1j * self.ky * w_d, s=s)
        return -np.fft.rfft2(u * wx + v * wy) * self.dealias + self.forcing_hat

    def step(self, w_hat: np.ndarray) -> np.ndarray:
        """One step: Heun for the explicit part, Crank–Nicolson for ν Δ."""
        dt, visc = self.dt, self.nu * self.k2
        denom = 1 + 0.5 * dt * visc
        n1 = self._explicit(w_hat)
        w_star = ((1 - 0.5 * dt * visc) * w_hat + dt * n1) / denom
        n2 = self._explicit(w_star)
        return ((1 - 0.5 * dt * visc) * w_hat + 0.5 * dt * (n1 + n2)) / denom

    def run(self, w0: np.ndarray, *, num_frames: int, frame_interval: float, burn_in: float = 0.0) -> np.ndarray:
        """Vorticity frames ``[B, num_frames, n, n]`` every ``frame_interval`` time units after ``burn_in``."""
        steps_per_frame = max(1, round(frame_interval / self.dt))
        if abs(steps_per_frame * self.dt - frame_interval) > 1e-9 * max(1.0, frame_interval):
            raise ValueError(f"frame_interval={frame_interval!r} must be a multiple of dt={self.dt!r}")
        w_hat = np.fft.rfft2(w0)
        for _ in range(round(burn_in / self.dt)):
            w_hat = self.step(w_hat)
        frames = [np.fft.irfft2(w_hat, s=(self.n, self.n))]
        for _ in range(num_frames - 1):
            for _ in range(steps_per_frame):
                w_hat = self.step(w_hat)
            frames.append(np.fft.irfft2(w_hat, s=(self.n, self.n)))
        return np.stack(frames, axis=1)


def simulate_navier_stokes(*, num_trajectories: int, num_frames: int, resolution: int = 64, viscosity: float = 1e-3,
                           forcing_amplitude: float = 0.1, dt: float = 1e-2, frame_interval: float = 0.5,
                           burn_in: float = 0.0, init_scale: float = 1.0, fields: str = "vorticity",
                           seed: int = 0) -> np.ndarray:
    """Trajectories ``[N, T, C, n, n]`` float32 (C = 1 vorticity, C = 2 velocity), one GRF initial state each."""
    require_choice("fields", fields, ("vorticity", "velocity"))
    rng = np.random.default_rng(seed)
    solver = NavierStokesSolver(n=resolution, viscosity=viscosity, forcing_amplitude=forcing_amplitude, dt=dt)
    w0 = init_scale * gaussian_random_field(rng, num_trajectories, resolution)
    w = solver.run(w0, num_frames=num_frames, frame_interval=frame_interval, burn_in=burn_in)
    out = w[:, :, None] if fields == "vorticity" else solver.velocity(w)
    return out.astype(np.float32)
