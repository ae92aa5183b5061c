"""The loss on a regular 1-D or 2-D grid θ* + Σ_k α_k d_k, α_k ∈ linspace(−range, range, resolution).

Parameters are never written: every point is evaluated with ``torch.func.functional_call``. ``batching="vmap"``
evaluates ``chunk_size`` points at once with ``torch.func.vmap`` (8× faster than a loop for a small PINN on CPU,
slower for convolutions — research note §5); ``"auto"`` times the first chunk both ways and keeps the faster route
(falling back to the loop when the loss cannot be vmapped).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from framework.callbacks.landscape.parameter_vectors import ParameterSpace
from framework.callbacks.landscape.probe_loss import ProbeLoss

__all__ = ["BATCHING_MODES", "GridResult", "evaluate_grid", "grid_axes"]

BATCHING_MODES = ("auto", "loop", "vmap")


def grid_axes(resolution: int, span: float, dims: int) -> list[Tensor]:
    """``dims`` axes ``[resolution]`` = linspace(−span, span, resolution); the centre (odd resolution) is θ*."""
    if not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < 3:
        raise ValueError(f"resolution must be an integer >= 3, got {resolution!r}")
    if not isinstance(span, (int, float)) or isinstance(span, bool) or not span > 0 or span == float("inf"):
        raise ValueError(f"range must be a positive finite number, got {span!r}")
    if dims not in (1, 2):
        raise ValueError(f"dims must be 1 or 2, got {dims!r}")
    # (i − (r−1)/2)·step: symmetric, and the centre of an odd grid is exactly 0 (θ* itself, bit for bit).
    steps = torch.arange(resolution, dtype=torch.float64) - (resolution - 1) / 2
    axis = steps * (2.0 * float(span) / (resolution - 1))
    return [axis.clone() for _ in range(dims)]


@dataclass
class GridResult:
    """Losses on the grid.

    Attributes:
        axes: ``dims`` tensors ``[r]`` of coefficients.
        losses: ``[r]`` or ``[r, r]`` (float64; ``losses[i, j]`` at α1 = axes[0][i], α2 = axes[1][j]).
        batching: the route used ("loop" or "vmap").
        seconds_per_point: measured cost per grid point of each route tried.
        nonfinite: number of NaN / inf losses (before any replacement).
    """

    axes: list[Tensor]
    losses: Tensor
    batching: str
    seconds_per_point: dict[str, float] = field(default_factory=dict)
    nonfinite: int = 0


def _points(axes: list[Tensor]) -> Tensor:
    return torch.tensor(list(itertools.product(*[a.tolist() for a in axes])), dtype=torch.float64)


def evaluate_grid(
    loss: ProbeLoss,
    directions: Tensor,
    *,
    resolution: int = 41,
    span: float = 1.0,
    batching: str = "auto",
    chunk_size: int = 64,
    space: ParameterSpace | None = None,
) -> GridResult:
    """Evaluate ``loss`` at θ* + Σ α_k d_k for ``directions`` ``[dims, P]``. Call inside ``isolated_module``."""
    if batching not in BATCHING_MODES:
        raise ValueError(f"batching must be one of {list(BATCHING_MODES)}, got {batching!r}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    space = space if space is not None else ParameterSpace.of(loss.module)
    dims = directions.shape[0]
    axes = grid_axes(resolution, span, dims)
    theta = space.flat_parameters(loss.module)
    directions = directions.to(device=theta.device, dtype=theta.dtype)
    coefficients = _points(axes).to(device=theta.device, dtype=theta.dtype)  # [N, dims]
    values = torch.empty(len(coefficients), dtype=torch.float64)

    def point_loss(flat: Tensor) -> Tensor:
        return loss.functional(space.unflatten(flat))

    def run_loop(start: int, stop: int) -> None:
        # Grad mode stays on: losses such as PINN residuals call torch.autograd.grad w.r.t. their inputs.
        for i in range(start, stop):
            with torch.no_grad():
                flat = theta + coefficients[i] @ directions
            values[i] = float(point_loss(flat).detach())

    batched = torch.func.vmap(point_loss)

    def run_vmap(start: int, stop: int) -> None:
        with torch.no_grad():
            flats = theta + coefficients[start:stop] @ directions  # [c, P]
            values[start:stop] = batched(flats).double().cpu()

    seconds: dict[str, float] = {}
    mode = batching
    position = 0
    total = len(coefficients)
    if batching in ("auto", "vmap"):
        stop = min(chunk_size, total)
        t0 = time.perf_counter()
        try:
            run_vmap(0, stop)
            seconds["vmap"] = (time.perf_counter() - t0) / stop
            position = stop
        except Exception as exc:  # noqa: BLE001 - a loss torch.func cannot transform
            if batching == "vmap":
                raise ValueError(
                    f"batching='vmap' failed: the loss cannot be evaluated under torch.func.vmap "
                    f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); use batching='loop'"
                ) from exc
            mode = "loop"
        if batching == "auto" and position > 0 and position < total:
            probe = min(position + max(2, chunk_size // 8), total)
            t0 = time.perf_counter()
            run_loop(position, probe)
            seconds["loop"] = (time.perf_counter() - t0) / (probe - position)
            # The vmap chunk must agree with the loop on a point (guards against a silently wrong batched rule).
            check = values[0].clone()
            run_loop(0, 1)
            if not torch.allclose(values[0], check, rtol=1e-4, atol=1e-6):
                mode = "loop"
            else:
                mode = "vmap" if seconds["vmap"] < seconds["loop"] else "loop"
            position = probe
        elif batching == "auto" and position > 0:
            mode = "vmap"
    if mode == "vmap":
        for start in range(position, total, chunk_size):
            run_vmap(start, min(start + chunk_size, total))
    else:
        if position == 0 and mode == "loop":
            t0 = time.perf_counter()
            run_loop(0, total)
            seconds["loop"] = (time.perf_counter() - t0) / max(total, 1)
        else:
            run_loop(position, total)
    shape = tuple(len(a) for a in axes)
    losses = values.reshape(shape)
    nonfinite = int((~torch.isfinite(losses)).sum())
    return GridResult(axes=axes, losses=losses, batching=mode, seconds_per_point=seconds, nonfinite=nonfinite)
