"""``LossLandscapeProbe``: the loss on a 1-D / 2-D plane through the weights, and its topology.

Attach it to any ``lightning.pytorch`` model::

    trainer = Trainer(callbacks=[LossLandscapeProbe(resolution=41, grid_range=1.0, neighbour_rule="freudenthal")])

The plane is θ* + α1 d1 (+ α2 d2), α ∈ linspace(−grid_range, grid_range, resolution) (odd resolution: θ* is the
centre point), along seeded Gaussian directions normalised per filter (Li et al.; biases zeroed by default) or the
top Hessian eigenvectors (unit vectors, raw parameter units). The probed loss is ``training_step``'s (or
``loss_fn(module, batch)``) averaged over fixed probe batches, in eval mode. Points are evaluated with
``torch.func.functional_call`` (the module's parameters are never written), in ``vmap`` chunks when that is faster.

Topology: the sublevel-set merge tree and 0-dim persistence of the grid by the project's union-find, with the
neighbour rule an explicit, logged setting; summaries (minima, saddles, total/average/max persistence, raw and
divided by the loss range, counts above 1 % / 5 % of the range, SMAD) are logged for the chosen rule, and the JSON of
each probe holds the raw grid plus the summaries under all three rules, so a study can be redone without retraining.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from framework.callbacks.landscape.directions import BIAS_POLICIES, NORMALIZATIONS, random_directions
from framework.callbacks.landscape.figures import (landscape_figure, merge_tree_figure, persistence_diagram_figure,
                                         surface_figure)
from framework.callbacks.landscape.grid_evaluation import BATCHING_MODES, GridResult, evaluate_grid, grid_axes
from framework.callbacks.landscape.hessian_vector_product import HVP_METHODS, HessianVectorProduct, choose_hvp_method
from framework.callbacks.landscape.merge_tree import NEIGHBOUR_RULES, SublevelPersistence, sublevel_persistence
from framework.callbacks.landscape.parameter_vectors import ParameterSpace
from framework.callbacks.landscape.power_iteration import power_iteration
from framework.callbacks.landscape.probe_callback import ProbeCallback
from framework.callbacks.landscape.probe_loss import LossFunction, ProbeLoss, isolated_module
from framework.callbacks.landscape.topology_summary import TopologySummary, finite_values, summarize
from framework.loggers import log_figure
from framework.validation import require_choice, require_positive

__all__ = ["DIRECTION_KINDS", "LandscapeReport", "LossLandscapeProbe", "landscape_report"]

DIRECTION_KINDS = ("random", "hessian")


@dataclass
class LandscapeReport:
    """One landscape probe.

    Attributes:
        grid: the evaluated grid (axes, losses ``[r]`` or ``[r, r]``, batching route, timings).
        center_loss: loss at θ* (the grid's centre point when the resolution is odd).
        directions: ``[dims, P]`` directions used.
        direction_kind: "random" or "hessian"; ``eigenvalues`` the Hessian eigenvalues of "hessian" directions.
        neighbour_rule: the rule of ``summary`` and ``diagram``.
        diagram: persistence and merge tree under ``neighbour_rule``.
        summary: its scalar summaries; ``summaries`` the summaries under every rule.
        nonfinite: number of NaN / inf losses replaced before the topology (see ``finite_values``).
    """

    grid: GridResult
    center_loss: float
    directions: torch.Tensor
    direction_kind: str
    neighbour_rule: str
    diagram: SublevelPersistence
    summary: TopologySummary
    summaries: dict[str, TopologySummary]
    nonfinite: int
    eigenvalues: list[float] = field(default_factory=list)

    def scalars(self) -> dict[str, float]:
        out = {k: float(v) for k, v in self.summary.as_dict().items() if k != "neighbour_rule"}
        out["center_loss"] = self.center_loss
        out["nonfinite_points"] = self.nonfinite
        out["uses_vmap"] = float(self.grid.batching == "vmap")
        for route, seconds in self.grid.seconds_per_point.items():
            out[f"ms_per_point_{route}"] = 1000.0 * seconds
        for i, value in enumerate(self.eigenvalues, start=1):
            out[f"direction_eigenvalue_{i}"] = value
        return out


def landscape_report(
    module: torch.nn.Module,
    batches: Sequence[Any],
    *,
    loss_fn: LossFunction | None = None,
    dims: int = 2,
    resolution: int = 41,
    grid_range: float = 1.0,
    directions: str = "random",
    normalization: str = "filter",
    bias_policy: str = "zero",
    neighbour_rule: str = "freudenthal",
    batching: str = "auto",
    chunk_size: int = 64,
    hessian_max_iter: int = 100,
    hessian_tol: float = 1e-3,
    hvp_method: str = "auto",
    eval_mode: bool = True,
    seed: int = 0,
) -> LandscapeReport:
    """Functional entry point (no Trainer needed): sample the plane and compute its topology."""
    require_choice("directions", directions, DIRECTION_KINDS)
    require_choice("neighbour_rule", neighbour_rule, NEIGHBOUR_RULES)
    grid_axes(resolution, grid_range, dims)  # validates resolution / range / dims before any work
    with isolated_module(module, eval_mode=eval_mode):
        loss = ProbeLoss(module, batches, loss_fn=loss_fn)
        center = float(loss.check()) if len(loss.batches) == 1 else None
        space = ParameterSpace.of(module)
        theta = space.flat_parameters(module)
        eigenvalues: list[float] = []
        if directions == "random":
            plane = random_directions(theta, space, count=dims, seed=seed, normalization=normalization,
                                      bias_policy=bias_policy)
        else:
            method = hvp_method if hvp_method != "auto" else choose_hvp_method(loss, seed=seed).method
            hvp = HessianVectorProduct(loss, method=method, space=space)
            generator = torch.Generator().manual_seed(seed)
            pairs = power_iteration(hvp, hvp.dim, top_k=dims, max_iter=hessian_max_iter, tol=hessian_tol,
                                    generator=generator, dtype=theta.dtype, device=theta.device)
            plane = pairs.vectors
            eigenvalues = pairs.values.tolist()
        grid = evaluate_grid(loss, plane, resolution=resolution, span=grid_range, batching=batching,
                             chunk_size=chunk_size, space=space)
        if center is None:
            with torch.no_grad():
                center = float(loss.value())
    values, nonfinite = finite_values(grid.losses.numpy())
    summaries = {}
    diagrams = {}
    for rule in NEIGHBOUR_RULES:
        diagrams[rule] = sublevel_persistence(values, neighbour_rule=rule)
        summaries[rule] = summarize(diagrams[rule])
    return LandscapeReport(
        grid=grid, center_loss=center, directions=plane.detach().cpu(), direction_kind=directions,
        neighbour_rule=neighbour_rule, diagram=diagrams[neighbour_rule], summary=summaries[neighbour_rule],
        summaries=summaries, nonfinite=nonfinite, eigenvalues=eigenvalues,
    )


class LossLandscapeProbe(ProbeCallback):
    """Callback: loss landscape on a plane, merge tree and persistence summaries, at chosen epochs / fit end.

    Args:
        dims: 1 (a line) or 2 (a plane).
        resolution: points per axis (odd ≥ 3; default 41, so θ* is the centre).
        grid_range: the axes span [−grid_range, grid_range] (> 0); in filter-normalised units for random
            directions, in raw parameter units for Hessian eigenvectors.
        directions: ``"random"`` (seeded Gaussian, normalised) or ``"hessian"`` (top-``dims`` eigenvectors).
        normalization: ``"filter"``, ``"layer"`` or ``"none"`` (random directions only).
        bias_policy: ``"zero"``, ``"copy"`` or ``"normalize"`` for 1-D tensors (random directions only).
        neighbour_rule: ``"axis"``, ``"freudenthal"`` (default, TTK's) or ``"full"`` grid connectivity.
        batching: ``"auto"``, ``"loop"`` or ``"vmap"``; ``chunk_size`` points per ``vmap`` call.
        hessian_max_iter, hessian_tol, hvp_method: power iteration for ``directions="hessian"``.
        surface: also log a 3-D surface figure of 2-D landscapes.
        probe_batches, dataloader, probe_data, loss_fn, epochs, every_n_epochs, at_fit_end, eval_mode,
        log_figures, output_dir, seed: see :class:`~framework.callbacks.landscape.probe_callback.ProbeCallback`.

    Logged under ``landscape/``: ``n_minima``, ``n_saddles``, ``total/average/max_persistence`` and their
    ``_normalized`` versions, ``loss_min/max/range``, ``center_loss``, ``seconds``; the neighbour rule and every
    other setting in the run config; figures ``landscape/contour`` (or ``landscape/line``), ``landscape/surface``,
    ``landscape/persistence_diagram``, ``landscape/merge_tree``; a JSON per probe with the raw grid.
    """

    prefix = "landscape"

    def __init__(
        self,
        *,
        dims: int = 2,
        resolution: int = 41,
        grid_range: float = 1.0,
        directions: str = "random",
        normalization: str = "filter",
        bias_policy: str = "zero",
        neighbour_rule: str = "freudenthal",
        batching: str = "auto",
        chunk_size: int = 64,
        hessian_max_iter: int = 100,
        hessian_tol: float = 1e-3,
        hvp_method: str = "auto",
        surface: bool = True,
        **kwargs: Any,
    ) -> None:
        # The probing schedule and data options are ProbeCallback's (LightningCLI follows **kwargs into it).
        super().__init__(**kwargs)
        if dims not in (1, 2):
            raise ValueError(f"dims must be 1 or 2, got {dims!r}")
        if not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < 3:
            raise ValueError(f"resolution must be an odd integer >= 3 (so θ* is a grid point), got {resolution!r}")
        if resolution % 2 == 0:
            raise ValueError(f"resolution must be odd so the trained point is the grid centre, got {resolution}")
        if not isinstance(grid_range, (int, float)) or isinstance(grid_range, bool) or not 0 < grid_range < float("inf"):
            raise ValueError(f"grid_range must be a positive finite number, got {grid_range!r}")
        require_choice("directions", directions, DIRECTION_KINDS)
        require_choice("normalization", normalization, NORMALIZATIONS)
        require_choice("bias_policy", bias_policy, BIAS_POLICIES)
        require_choice("neighbour_rule", neighbour_rule, NEIGHBOUR_RULES)
        require_choice("batching", batching, BATCHING_MODES)
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        if not isinstance(hessian_max_iter, int) or hessian_max_iter < 1:
            raise ValueError(f"hessian_max_iter must be a positive integer, got {hessian_max_iter!r}")
        require_positive("hessian_tol", hessian_tol)
        require_choice("hvp_method", hvp_method, HVP_METHODS)
        self.dims = dims
        self.resolution = resolution
        self.grid_range = float(grid_range)
        self.directions = directions
        self.normalization = normalization
        self.bias_policy = bias_policy
        self.neighbour_rule = neighbour_rule
        self.batching = batching
        self.chunk_size = chunk_size
        self.hessian_max_iter = hessian_max_iter
        self.hessian_tol = hessian_tol
        self.hvp_method = hvp_method
        self.surface = surface

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "dims": self.dims, "resolution": self.resolution,
                "grid_range": self.grid_range, "directions": self.directions, "normalization": self.normalization,
                "bias_policy": self.bias_policy, "neighbour_rule": self.neighbour_rule, "batching": self.batching}

    def probe(self, pl_module: torch.nn.Module, batches: list[Any]) -> LandscapeReport:
        return landscape_report(
            pl_module, batches, loss_fn=self.loss_fn, dims=self.dims, resolution=self.resolution,
            grid_range=self.grid_range, directions=self.directions, normalization=self.normalization,
            bias_policy=self.bias_policy, neighbour_rule=self.neighbour_rule, batching=self.batching,
            chunk_size=self.chunk_size, hessian_max_iter=self.hessian_max_iter, hessian_tol=self.hessian_tol,
            hvp_method=self.hvp_method, eval_mode=self.eval_mode, seed=self.seed,
        )

    def log_report_figures(self, trainer, report: LandscapeReport, step: int) -> None:
        axes = [a.numpy() for a in report.grid.axes]
        losses = finite_values(report.grid.losses.numpy())[0]
        title = f"{self.directions} {'plane' if self.dims == 2 else 'line'}, step {step}"
        key = "contour" if self.dims == 2 else "line"
        log_figure(trainer, f"{self.prefix}/{key}", landscape_figure(axes, losses, title=title), step=step)
        if self.dims == 2 and self.surface:
            log_figure(trainer, f"{self.prefix}/surface", surface_figure(axes, losses, title=title), step=step)
        rule = f"{self.neighbour_rule} neighbours"
        log_figure(trainer, f"{self.prefix}/persistence_diagram",
                   persistence_diagram_figure(report.diagram, title=f"H0 persistence ({rule})"), step=step)
        log_figure(trainer, f"{self.prefix}/merge_tree",
                   merge_tree_figure(report.diagram, title=f"merge tree ({rule})"), step=step)

    def report_payload(self, report: LandscapeReport) -> dict[str, Any]:
        return {
            "axes": report.grid.axes,
            "losses": report.grid.losses,
            "center_loss": report.center_loss,
            "batching": report.grid.batching,
            "seconds_per_point": report.grid.seconds_per_point,
            "nonfinite_points": report.nonfinite,
            "direction_kind": report.direction_kind,
            "direction_eigenvalues": report.eigenvalues,
            "neighbour_rule": report.neighbour_rule,
            "summaries": {rule: s.as_dict() for rule, s in report.summaries.items()},
            "pairs": report.diagram.pairs,
            "essential": [report.diagram.essential_birth, report.diagram.maximum],
        }

