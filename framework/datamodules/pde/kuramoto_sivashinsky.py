"""1-D Kuramoto–Sivashinsky ``u_t = −u u_x − u_xx − u_xxxx`` on a periodic domain, ETDRK4 (Kassam & Trefethen 2005).

Real FFTs throughout: with a full complex FFT, round-off imaginary parts grow in the unstable band |k| < 1 and the
solution blows up after a few hundred time units. Initial states: small random Fourier modes, then a burn-in onto
the attractor. The spatial mean (the k = 0 mode) is conserved exactly.

Output ``[N, T, 1, 1, n]`` float32 (a 1 × n "image", so it shares the frame layout of the 2-D systems; use patch
size ``(1, p)`` and pixel mode — the 2-D autoencoder does not apply to a height of 1).
"""

from __future__ import annotations

import numpy as np

from framework.validation import require_non_negative, require_positive

__all__ = ["simulate_kuramoto_sivashinsky", "etdrk4_coefficients", "ks_integrate"]


def etdrk4_coefficients(linear: np.ndarray, h: float, *, contour_points: int = 32):
    """``(E, E2, Q, f1, f2, f3)`` for diagonal linear operator ``linear`` and step ``h`` (contour-integral means)."""
    e = np.exp(h * linear)
    e2 = np.exp(h * linear / 2)
    roots = np.exp(1j * np.pi * (np.arange(1, contour_points + 1) - 0.5) / contour_points)
    lr = h * linear[:, None] + roots[None, :]
    q = h * np.real(np.mean((np.exp(lr / 2) - 1) / lr, axis=1))
    f1 = h * np.real(np.mean((-4 - lr + np.exp(lr) * (4 - 3 * lr + lr**2)) / lr**3, axis=1))
    f2 = h * np.real(np.mean((2 + lr + np.exp(lr) * (-2 + lr)) / lr**3, axis=1))
    f3 = h * np.real(np.mean((-4 - 3 * lr - lr**2 + np.exp(lr) * (4 - lr)) / lr**3, axis=1))
    return e, e2, q, f1, f2, f3


def ks_integrate(u0: np.ndarray, *, length: float, dt: float, num_frames: int, frame_interval: float,
                 burn_in: float = 0.0, nonlinear: bool = True) -> np.ndarray:
    """Integrate ``u0 [B, n]``; frames ``[B, num_frames, n]`` every ``frame_interval`` after ``burn_in``."""
    n = u0.shape[-1]
    k = 2 * np.pi * np.fft.rfftfreq(n, d=length / n)
    linear = k**2 - k**4
    e, e2, q, f1, f2, f3 = etdrk4_coefficients(linear, dt)
    g = -0.5j * k if nonlinear else np.zeros_like(k, dtype=complex)  # −½ ∂_x (u²)
    if n % 2 == 0:
        g[-1] = 0.0  # the Nyquist mode of a derivative is not representable

    def nl(v):
        return g * np.fft.rfft(np.fft.irfft(v, n=n) ** 2)

    v = np.fft.rfft(u0)
    steps = max(1, round(frame_interval / dt))
    if abs(steps * dt - frame_interval) > 1e-9 * max(1.0, frame_interval):
        raise ValueError(f"frame_interval={frame_interval!r} must be a multiple of dt={dt!r}")

    def step(v):
        nv = nl(v)
        a = e2 * v + q * nv
        na = nl(a)
        b = e2 * v + q * na
        nb = nl(b)
        c = e2 * a + q * (2 * nb - nv)
        nc = nl(c)
        return e * v + nv * f1 + 2 * (na + nb) * f2 + nc * f3

    for _ in range(round(burn_in / dt)):
        v = step(v)
    frames = [np.fft.irfft(v, n=n)]
    for _ in range(num_frames - 1):
        for _ in range(steps):
            v = step(v)
        frames.append(np.fft.irfft(v, n=n))
    return np.stack(frames, axis=1)


def simulate_kuramoto_sivashinsky(*, num_trajectories: int, num_frames: int, resolution: int = 64,
                                  length: float = 22.0, dt: float = 0.25, frame_interval: float = 1.0,
                                  burn_in: float = 100.0, init_amplitude: float = 0.1, seed: int = 0) -> np.ndarray:
    """Trajectories ``[N, T, 1, 1, n]`` from random low-mode, zero-mean initial states after ``burn_in``."""
    require_positive("length", length)
    require_non_negative("burn_in", burn_in)
    rng = np.random.default_rng(seed)
    x = np.arange(resolution) * length / resolution
    modes = np.arange(1, 5)
    coef = rng.standard_normal((num_trajectories, len(modes), 2)) * init_amplitude
    phase = 2 * np.pi * modes[None, :, None] * x[None, None, :] / length
    u0 = (coef[..., 0:1] * np.cos(phase) + coef[..., 1:2] * np.sin(phase)).sum(axis=1)
    frames = ks_integrate(u0, length=length, dt=dt, num_frames=num_frames, frame_interval=frame_interval,
                          burn_in=burn_in)
    return frames[:, :, None, None, :].astype(np.float32)
