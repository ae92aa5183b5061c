"""2-D FitzHugh–Nagumo diffusion–reaction, PDEBench's "2D diff-react" set-up, with many random initial states.

    ∂_t u = D_u Δu + u − u³ − k − v,    ∂_t v = D_v Δv + u − v

on ``[−1, 1]²`` with no-flux (homogeneous Neumann) boundaries, a cell-centred finite-volume Laplacian, and
``u, v ~ N(0, 1)`` i.i.d. per cell at t = 0 (PDEBench: D_u = 1e-3, D_v = 5e-3, k = 5e-3, t ∈ [0, 5], 101 frames,
128² cells). Time stepping: classical RK4 with a fixed step, batched over trajectories (PDEBench uses scipy's RK45;
the fixed step keeps the batch vectorised). The no-flux Laplacian sums to zero over the grid, so without the
reaction terms the total of each species is conserved exactly.

Output ``[N, T, 2, n, n]`` (channels u, v), float32.
"""

from __future__ import annotations

import numpy as np

from framework.validation import require_positive

__all__ = ["simulate_diffusion_reaction", "neumann_laplacian", "fitzhugh_nagumo_rhs"]


def neumann_laplacian(field: np.ndarray, dx: float) -> np.ndarray:
    """Five-point finite-volume Laplacian of ``[..., n, n]`` with zero flux through the boundary."""
    padded = np.pad(field, [(0, 0)] * (field.ndim - 2) + [(1, 1), (1, 1)], mode="edge")
    return (padded[..., 2:, 1:-1] + padded[..., :-2, 1:-1] + padded[..., 1:-1, 2:] + padded[..., 1:-1, :-2]
            - 4 * field) / dx**2


def fitzhugh_nagumo_rhs(state: np.ndarray, *, dx: float, du: float, dv: float, k: float,
                        reaction: bool = True) -> np.ndarray:
    """Right-hand side for ``state [..., 2, n, n]``; ``reaction=False`` keeps only diffusion."""
    u, v = state[..., 0, :, :], state[..., 1, :, :]
    ru = du * neumann_laplacian(u, dx)
    rv = dv * neumann_laplacian(v, dx)
    if reaction:
        ru = ru + u - u**3 - k - v
        rv = rv + u - v
    return np.stack([ru, rv], axis=-3)


def integrate_fitzhugh_nagumo(state0: np.ndarray, *, num_frames: int, frame_interval: float, dt: float, dx: float,
                              du: float = 1e-3, dv: float = 5e-3, k: float = 5e-3, reaction: bool = True) -> np.ndarray:
    """RK4 from ``state0 [B, 2, n, n]``; frames ``[B, num_frames, 2, n, n]`` every ``frame_interval``."""
    steps = max(1, round(frame_interval / dt))
    h = frame_interval / steps

    def rhs(s):
        return fitzhugh_nagumo_rhs(s, dx=dx, du=du, dv=dv, k=k, reaction=reaction)

    state, frames = state0.astype(np.float64), [state0.astype(np.float64)]
    for _ in range(num_frames - 1):
        for _ in range(steps):
            k1 = rhs(state)
            k2 = rhs(state + 0.5 * h * k1)
            k3 = rhs(state + 0.5 * h * k2)
            k4 = rhs(state + h * k3)
            state = state + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        frames.append(state)
    return np.stack(frames, axis=1)


def simulate_diffusion_reaction(*, num_trajectories: int, num_frames: int = 101, resolution: int = 64,
                                t_final: float = 5.0, du: float = 1e-3, dv: float = 5e-3, k: float = 5e-3,
                                dt: float = 5e-3, seed: int = 0) -> np.ndarray:
    """Trajectories ``[N, num_frames, 2, n, n]`` on ``t ∈ [0, t_final]`` from i.i.d. N(0, 1) initial cells."""
    require_positive("t_final", t_final)
    require_positive("dt", dt)
    if not isinstance(num_frames, int) or num_frames < 2:
        raise ValueError(f"num_frames must be an integer >= 2, got {num_frames!r}")
    rng = np.random.default_rng(seed)
    state0 = rng.standard_normal((num_trajectories, 2, resolution, resolution))
    dx = 2.0 / resolution
    frames = integrate_fitzhugh_nagumo(state0, num_frames=num_frames, frame_interval=t_final / (num_frames - 1),
                                       dt=dt, dx=dx, du=du, dv=dv, k=k)
    return frames.astype(np.float32)
