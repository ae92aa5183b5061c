"""Physics-informed network for the 1-D convection equation u_t + β u_x = 0 (Krishnapriyan et al. 2021).

Problem: x ∈ [0, 2π), t ∈ [0, 1], u(x, 0) = sin x, periodic boundary u(0, t) = u(2π, t). The exact solution is
u(x, t) = sin(x − βt); the relative L2 error over the full grid is ‖u_θ − u‖₂ / ‖u‖₂. (The LossLens scripts compare
every model with the ν = 1, β = 1 solution — a bug that makes their stored errors meaningless; their landscape and
PyHessian PINN losses also regress u on t instead of the initial condition. Here the loss is the real training loss
and the error uses the solution for the model's own β.)

Loss = mean (u(x, 0) − sin x)² + mean (u(0, t) − u(2π, t))² + mean r², r = u_t + β u_x at the collocation points.
The derivatives u_t, u_x come from ``torch.autograd.grad`` (fast; double backward works through it) or, with
``derivatives="func"`` / :func:`functional_pinn_loss`, from forward-mode ``torch.func.jvp`` w.r.t. the input so that
``torch.func`` can transform the loss (``vmap`` over grid points, ``jvp∘grad`` Hessian-vector products).

Training: the original's one L-BFGS step (lr 1, history 50, tolerances 1e-7, strong Wolfe) with ``lbfgs_max_iter``
inner iterations, unless an optimizer factory is given. Batches come from
:class:`framework.datamodules.convection_collocation.ConvectionCollocation`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor
from torchmetrics import MetricCollection, SumMetric

from framework.base import FrameworkModule
from framework.validation import require_choice, require_non_negative
from framework.models.components.landscape.mlp import MLP

__all__ = ["PINNConvection", "convection_exact_solution", "functional_pinn_loss"]


def convection_exact_solution(points: Tensor, beta: float) -> Tensor:
    """u(x, t) = sin(x − βt) for ``points [N, 2]`` = (x, t); returns ``[N]``."""
    return torch.sin(points[:, 0] - beta * points[:, 1])


def functional_pinn_loss(module: "PINNConvection", batch: dict[str, Tensor]) -> Tensor:
    """The training loss with ``torch.func``-transformable derivatives: pass as a probe's ``loss_fn`` so that grid
    points can be evaluated with ``vmap`` (same value as ``training_step``'s loss up to rounding)."""
    return module.loss(batch, derivatives="func")


class PINNConvection(FrameworkModule):
    """PINN for u_t + β u_x = 0.

    Args:
        beta: convection speed β (≥ 0).
        layers: hidden widths (input 2 and output 1 are added): default 4 × 50 as in the paper.
        activation: hidden activation ("tanh" in the paper).
        residual_weight: weight of the residual term (L_f, 1 in the paper).
        lbfgs_max_iter: L-BFGS iterations per training step when ``optimizer`` is None.
        derivatives: how u_t, u_x are computed: "autograd" (fast) or "func" (``torch.func``-transformable).
        optimizer, scheduler: optional factories (default: the paper's L-BFGS).
    """

    def __init__(
        self,
        *,
        beta: float = 1.0,
        layers: Sequence[int] = (50, 50, 50, 50),
        activation: str = "tanh",
        residual_weight: float = 1.0,
        lbfgs_max_iter: int = 5000,
        derivatives: str = "autograd",
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler)
        require_non_negative("beta", beta)
        require_non_negative("residual_weight", residual_weight)
        if not isinstance(lbfgs_max_iter, int) or lbfgs_max_iter < 1:
            raise ValueError(f"lbfgs_max_iter must be a positive integer, got {lbfgs_max_iter!r}")
        require_choice("derivatives", derivatives, ("autograd", "func"))
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.derivatives = derivatives
        self.beta = float(beta)
        self.residual_weight = float(residual_weight)
        self.lbfgs_max_iter = lbfgs_max_iter
        self.net = MLP([2, *layers, 1], activation=activation)
        # Σ(u_θ − u)² and Σu² over the grid: their ratio is DDP-safe (each is a sum over samples).
        self.register_stage_metrics(MetricCollection({"sq_error": SumMetric(), "sq_exact": SumMetric()}),
                                    stages=("val", "test"))

    def forward(self, points: Tensor) -> Tensor:
        """u_θ at ``points [N, 2]`` = (x, t); returns ``[N]``."""
        return self.net(points).squeeze(-1)

    def residual(self, points: Tensor, *, derivatives: str | None = None) -> Tensor:
        """r = u_t + β u_x at ``points [N, 2]``; returns ``[N]``.

        ``derivatives="autograd"`` (default for training): ``torch.autograd.grad`` with ``create_graph`` — 7× faster
        than ``torch.func.jvp`` on CPU for this network (measured, docs/landscape.md), but ``torch.func`` cannot
        transform through it. ``"func"``: forward-mode ``torch.func.jvp`` w.r.t. the input, which ``vmap`` and
        ``jvp∘grad`` can transform (used for batched landscape evaluation).
        """
        mode = derivatives or self.derivatives
        if mode == "func":
            e_x = torch.zeros_like(points)
            e_x[:, 0] = 1.0
            e_t = torch.zeros_like(points)
            e_t[:, 1] = 1.0
            _, u_x = torch.func.jvp(self.forward, (points,), (e_x,))
            _, u_t = torch.func.jvp(self.forward, (points,), (e_t,))
            return u_t + self.beta * u_x
        with torch.enable_grad():
            inputs = points.detach().requires_grad_(True)
            u = self(inputs)
            (gradient,) = torch.autograd.grad(u.sum(), inputs, create_graph=True)
        return gradient[:, 1] + self.beta * gradient[:, 0]

    def loss_terms(self, batch: dict[str, Tensor], *, derivatives: str | None = None) -> dict[str, Tensor]:
        """The three terms of the PINN loss for a training batch (see module docstring)."""
        initial = ((self(batch["initial"]) - batch["initial_u"]) ** 2).mean()
        boundary = ((self(batch["boundary_left"]) - self(batch["boundary_right"])) ** 2).mean()
        residual = (self.residual(batch["collocation"], derivatives=derivatives) ** 2).mean()
        return {"initial": initial, "boundary": boundary, "residual": residual}

    def loss(self, batch: dict[str, Tensor], *, derivatives: str | None = None) -> Tensor:
        """The training loss (scalar); ``derivatives`` as in :meth:`residual`."""
        terms = self.loss_terms(batch, derivatives=derivatives)
        return terms["initial"] + terms["boundary"] + self.residual_weight * terms["residual"]

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        terms = self.loss_terms(batch)
        loss = terms["initial"] + terms["boundary"] + self.residual_weight * terms["residual"]
        self.log("train/loss", loss, prog_bar=True)
        self.log_dict({f"train/loss_{k}": v for k, v in terms.items()})
        return loss

    def _evaluate(self, batch: Any, stage: str) -> None:
        points = batch[0] if isinstance(batch, (list, tuple)) else batch
        prediction = self(points)
        exact = convection_exact_solution(points, self.beta)
        metrics = self.metrics_for(stage)
        metrics["sq_error"].update(((prediction - exact) ** 2).sum())
        metrics["sq_exact"].update((exact ** 2).sum())

    def _log_relative_error(self, stage: str) -> None:
        metrics = self.metrics_for(stage)
        error = (metrics["sq_error"].compute() / metrics["sq_exact"].compute().clamp_min(1e-30)).sqrt()
        self.log(f"{stage}/rel_l2", error)
        metrics.reset()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_relative_error("val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_relative_error("test")

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self(batch[0] if isinstance(batch, (list, tuple)) else batch)

    @torch.no_grad()
    def relative_l2_error(self, points: Tensor) -> float:
        """‖u_θ − u‖₂ / ‖u‖₂ on ``points [N, 2]`` (e.g. the full grid)."""
        prediction = self(points)
        exact = convection_exact_solution(points, self.beta)
        return float((prediction - exact).norm() / exact.norm())

    def configure_optimizers(self):
        if self.optimizer_factory is not None:
            return super().configure_optimizers()
        return torch.optim.LBFGS(self.parameters(), lr=1.0, max_iter=self.lbfgs_max_iter, history_size=50,
                                 tolerance_grad=1e-7, tolerance_change=1e-7, line_search_fn="strong_wolfe")
