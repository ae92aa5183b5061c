"""Base LightningModule for equality-constrained stochastic problems trained by the SQP optimizers.

Subclasses implement the protocol of :mod:`framework.optim.constrained_protocol` — ``constraints()``,
``objective(batch)`` and optionally ``draw_batch(size)`` — and get manual optimization (one training step = one
optimizer iteration), W&B logging of the optimizer's diagnostics (``trsqp/kkt``, ``trsqp/radius``,
``trsqp/penalty``, ``trsqp/gradient_samples``, ``trsqp/accepted`` ...), and optional early stopping on the estimated
relative KKT residual. The optimizer is chosen in YAML like any other::

    model:
      class_path: framework.models.constrained_test_problem.ConstrainedTestProblemModule
      init_args:
        problem: HS42
        optimizer: {class_path: framework.optim.trsqp.TRSQP, init_args: {hessian: estimated}}
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.cli import OptimizerCallable

from framework.base import FrameworkModule
from framework.optim.constrained_protocol import constrained_training_step

__all__ = ["ConstrainedProblemModule"]


class ConstrainedProblemModule(FrameworkModule):
    """Manual-optimization base for the protocol's models.

    Args:
        optimizer: factory of an SQP optimizer (``framework.optim.trsqp.TRSQP`` or
            ``framework.optim.line_search_sqp.AdaptiveL1SQP``).
        stop_at_relative_kkt: stop training once the optimizer's *estimated* relative KKT residual is at most this
            (None: run for ``max_steps``).
    """

    def __init__(self, *, optimizer: OptimizerCallable | None = None, stop_at_relative_kkt: float | None = None) -> None:
        super().__init__(optimizer=optimizer)
        if stop_at_relative_kkt is not None and not (
            isinstance(stop_at_relative_kkt, (int, float)) and stop_at_relative_kkt > 0
        ):
            raise ValueError(f"stop_at_relative_kkt must be a positive number or None, got {stop_at_relative_kkt!r}")
        self.automatic_optimization = False
        self.stop_at_relative_kkt = stop_at_relative_kkt
        if optimizer is not None:
            # Optimizers are built lazily in configure_optimizers; build a throw-away one now so that bad optimizer
            # settings (e.g. a non-positive radius) fail at construction, where the CLI reports them in one line.
            optimizer([torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))])

    def training_step(self, batch: Any, batch_idx: int) -> None:
        info = constrained_training_step(self, batch)
        self.log_problem_metrics(info)
        if self.stop_at_relative_kkt is not None and info.relative_kkt <= self.stop_at_relative_kkt:
            self.trainer.should_stop = True

    def log_problem_metrics(self, info: Any) -> None:
        """Hook: log problem-specific quantities after each iteration (e.g. the exact KKT residual)."""
