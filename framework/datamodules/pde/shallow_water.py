"""2-D shallow-water radial dam break (PDEBench "2D rdb" set-up), first-order Rusanov finite volumes.

    ∂_t h + ∇·(h u) = 0,    ∂_t (h u) + ∇·(h u ⊗ u + ½ g h² I) = 0

on ``[−2.5, 2.5]²`` with g = 1: water at rest, ``h = 2`` inside a disc of radius r, ``h = 1`` outside (PDEBench:
r = 0.5, 128² cells, t ∈ [0, 1], 101 frames, PyClaw's Roe solver). Here each trajectory draws its radius from
``radius_range`` and its centre from ``centre_range`` so there are many distinct trajectories. Time steps follow
the CFL condition and are shortened to land exactly on every frame time. Boundaries: ``"outflow"`` (zero-gradient
ghost cells, PDEBench's choice) or ``"wall"`` (reflecting; total mass is then conserved to round-off).

Output ``[N, T, C, n, n]``: the depth h (C = 1, as the paper uses) or ``(h, hu, hv)`` (C = 3), float32.
"""

from __future__ import annotations

import numpy as np

from framework.validation import require_choice, require_in_range, require_positive

__all__ = ["simulate_shallow_water", "ShallowWaterSolver"]


class ShallowWaterSolver:
    """Rusanov (local Lax–Friedrichs) finite volumes for ``state [B, 3, n, n]`` = (h, hu, hv), axis −2 = x.

    Args:
        n: cells per side; length: side of the square domain; gravity: g; cfl: Courant number (<= 0.5);
        boundary: ``"outflow"`` or ``"wall"``.
    """

    def __init__(self, *, n: int, length: float = 5.0, gravity: float = 1.0, cfl: float = 0.4,
                 boundary: str = "outflow") -> None:
        if not isinstance(n, int) or n < 4:
            raise ValueError(f"n must be an integer >= 4, got {n!r}")
        require_positive("length", length)
        require_positive("gravity", gravity)
        require_in_range("cfl", cfl, 0.0, 0.5, low_inclusive=False)
        require_choice("boundary", boundary, ("outflow", "wall"))
        self.n, self.dx, self.g, self.cfl, self.boundary = n, length / n, gravity, cfl, boundary

    def _pad(self, state: np.ndarray, axis: int) -> np.ndarray:
        pad = [(0, 0)] * state.ndim
        pad[axis] = (1, 1)
        padded = np.pad(state, pad, mode="edge")
        if self.boundary == "wall":  # mirror the normal momentum in the ghost cells
            component = 1 if axis % state.ndim == state.ndim - 2 else 2
            index = [slice(None)] * state.ndim
            index[-3] = component
            for ghost in (0, -1):
                index[axis] = ghost
                padded[tuple(index)] *= -1
        return padded

    def _flux(self, state: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
        h, hu, hv = state[:, 0], state[:, 1], state[:, 2]
        u, v = hu / h, hv / h
        pressure = 0.5 * self.g * h**2
        if axis == -2:
            flux = np.stack([hu, hu * u + pressure, hu * v], axis=1)
            speed = np.abs(u) + np.sqrt(self.g * h)
        else:
            flux = np.stack([hv, hv * u, hv * v + pressure], axis=1)
            speed = np.abs(v) + np.sqrt(self.g * h)
        return flux, speed

    def _divergence(self, state: np.ndarray, axis: int) -> np.ndarray:
        padded = self._pad(state, axis)
        flux, speed = self._flux(padded, axis)
        n = padded.shape[axis]
        left = [slice(None)] * padded.ndim
        right = [slice(None)] * padded.ndim
        left[axis], right[axis] = slice(0, n - 1), slice(1, n)
        left_s, right_s = tuple(left), tuple(right)
        a = np.maximum(speed[(left_s[0], *left_s[2:])], speed[(right_s[0], *right_s[2:])])[:, None]
        face = 0.5 * (flux[left_s] + flux[right_s]) - 0.5 * a * (padded[right_s] - padded[left_s])
        hi = [slice(None)] * padded.ndim
        lo = [slice(None)] * padded.ndim
        hi[axis], lo[axis] = slice(1, None), slice(0, -1)
        return (face[tuple(hi)] - face[tuple(lo)]) / self.dx

    def max_dt(self, state: np.ndarray) -> float:
        h = state[:, 0]
        speed = np.maximum(np.abs(state[:, 1] / h), np.abs(state[:, 2] / h)) + np.sqrt(self.g * h)
        return self.cfl * self.dx / float(speed.max())

    def step(self, state: np.ndarray, dt: float) -> np.ndarray:
        return state - dt * (self._divergence(state, -2) + self._divergence(state, -1))

    def run(self, state0: np.ndarray, *, num_frames: int, t_final: float) -> np.ndarray:
        """Frames ``[B, num_frames, 3, n, n]`` on ``t ∈ [0, t_final]``."""
        times = np.linspace(0.0, t_final, num_frames)
        state, t, frames = state0.astype(np.float64), 0.0, [state0.astype(np.float64)]
        for target in times[1:]:
            while t < target - 1e-12:
                dt = min(self.max_dt(state), target - t)
                state = self.step(state, dt)
                t += dt
            frames.append(state)
        return np.stack(frames, axis=1)


def radial_dam(n: int, *, length: float, centres: np.ndarray, radii: np.ndarray, inner: float = 2.0,
               outer: float = 1.0) -> np.ndarray:
    """Initial states ``[B, 3, n, n]``: depth ``inner`` within each disc, ``outer`` elsewhere, at rest."""
    x = (np.arange(n) + 0.5) * (length / n) - length / 2
    xx, yy = np.meshgrid(x, x, indexing="ij")
    r2 = (xx[None] - centres[:, 0, None, None]) ** 2 + (yy[None] - centres[:, 1, None, None]) ** 2
    h = np.where(r2 <= radii[:, None, None] ** 2, inner, outer)
    return np.stack([h, np.zeros_like(h), np.zeros_like(h)], axis=1)


def simulate_shallow_water(*, num_trajectories: int, num_frames: int = 101, resolution: int = 64,
                           t_final: float = 1.0, length: float = 5.0, gravity: float = 1.0,
                           radius_range: tuple[float, float] = (0.3, 0.7), centre_range: float = 0.5,
                           boundary: str = "outflow", fields: str = "depth", seed: int = 0) -> np.ndarray:
    """Trajectories ``[N, T, C, n, n]``; radius ~ U(radius_range), centre ~ U[−centre_range, centre_range]²."""
    require_choice("fields", fields, ("depth", "all"))
    require_positive("t_final", t_final)
    lo, hi = radius_range
    if not 0 < lo <= hi:
        raise ValueError(f"radius_range must satisfy 0 < low <= high, got {radius_range!r}")
    rng = np.random.default_rng(seed)
    radii = rng.uniform(lo, hi, num_trajectories)
    centres = rng.uniform(-centre_range, centre_range, (num_trajectories, 2))
    solver = ShallowWaterSolver(n=resolution, length=length, gravity=gravity, boundary=boundary)
    frames = solver.run(radial_dam(resolution, length=length, centres=centres, radii=radii),
                        num_frames=num_frames, t_final=t_final)
    out = frames[:, :, :1] if fields == "depth" else frames
    return out.astype(np.float32)
