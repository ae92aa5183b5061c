"""The CUTEst and strict-saddle test problems as LightningModules (one parameter vector ``x``, float64).

The objective is stochastic through the simulated oracle of the authors' experiments
(:mod:`framework.models.components.trsqp.noise_model`); with ``noise_variance=0`` the oracle is exact. The constraints are
deterministic. Each training step is one optimizer iteration; besides the optimizer's diagnostics the module logs the
*exact* relative KKT residual ``problem/relative_kkt`` (true gradient, least-squares multipliers), the objective and
the distance to the known solution.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

from framework.models.components.trsqp.noise_model import GaussianOracleNoise, SampleMeanNoise
from framework.models.components.trsqp.test_problems import get_problem
from framework.models.constrained_problem import ConstrainedProblemModule

__all__ = ["ConstrainedTestProblemModule", "exact_kkt_residual"]


def exact_kkt_residual(problem, x: Tensor) -> float:
    """``‖(∇f + Gᵀλ, c)‖`` with least-squares multipliers ``λ`` at ``x`` (shape ``(d,)``)."""
    x = x.detach().clone().requires_grad_(True)
    grad = torch.autograd.grad(problem.objective(x), x)[0]
    jac = torch.autograd.functional.jacobian(problem.constraints, x.detach())
    c = problem.constraints(x.detach())
    lam = torch.linalg.lstsq(jac.T, -grad.unsqueeze(1)).solution.squeeze(1)
    return float(torch.linalg.vector_norm(torch.cat([grad + jac.T @ lam, c])))


class ConstrainedTestProblemModule(ConstrainedProblemModule):
    """One named test problem with a simulated stochastic oracle.

    Args:
        problem: "BT4", "BT5", "BT8", "BT9", "MARATOS", "HS39", "HS40", "HS42", "HS78", "HS79", "SADDLE_SPHERE" or
            "SADDLE_QUARTIC".
        noise_variance: ``σ ≥ 0`` of the oracle (per-sample gradient covariance ``σ(I + 11ᵀ)``).
        hessian_noise: also perturb Hessian estimates.
        noise_seed: seed of the oracle's generator (its state is saved in checkpoints).
        start: starting point (default: the problem's standard start).
        optimizer: SQP optimizer factory.
        stop_at_relative_kkt: see :class:`~framework.models.constrained_problem.ConstrainedProblemModule`.
    """

    def __init__(
        self,
        *,
        problem: str = "HS42",
        noise_variance: float = 0.0,
        hessian_noise: bool = True,
        noise_seed: int = 0,
        start: list[float] | None = None,
        optimizer: OptimizerCallable | None = None,
        stop_at_relative_kkt: float | None = None,
    ) -> None:
        super().__init__(optimizer=optimizer, stop_at_relative_kkt=stop_at_relative_kkt)
        self.save_hyperparameters(ignore=["optimizer"])
        self.problem = get_problem(problem)
        start = list(self.problem.start) if start is None else list(start)
        if len(start) != self.problem.dim:
            raise ValueError(f"start must have {self.problem.dim} entries for {self.problem.name}, got {len(start)}")
        self.x = nn.Parameter(torch.tensor(start, dtype=torch.float64))
        self.noise = GaussianOracleNoise(self.problem.dim, noise_variance, hessian_noise=hessian_noise,
                                         seed=noise_seed)
        self._initial_kkt: float | None = None

    # ------------------------------------------------------------------ protocol
    def constraints(self) -> Tensor:
        return self.problem.constraints(self.x)

    def objective(self, batch: SampleMeanNoise | None = None) -> Tensor:
        return GaussianOracleNoise.perturb(self.problem.objective(self.x), self.x, batch)

    def draw_batch(self, size: int) -> SampleMeanNoise | None:
        return self.noise.draw(size) if self.noise.variance > 0 else None

    # ------------------------------------------------------------------ diagnostics
    def exact_kkt(self) -> float:
        return exact_kkt_residual(self.problem, self.x)

    def log_problem_metrics(self, info: Any) -> None:
        kkt = self.exact_kkt()
        if self._initial_kkt is None:
            self._initial_kkt = max(1.0, kkt)
        metrics = {"problem/kkt": kkt, "problem/relative_kkt": kkt / self._initial_kkt,
                   "problem/objective": float(self.problem.objective(self.x.detach()))}
        if self.problem.solution is not None:
            solution = torch.tensor(self.problem.solution, dtype=self.x.dtype, device=self.x.device)
            metrics["problem/distance_to_solution"] = float(torch.linalg.vector_norm(self.x.detach() - solution))
        self.log_dict(metrics, on_step=True, on_epoch=False, batch_size=1)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["oracle_noise_generator"] = self.noise.get_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "oracle_noise_generator" in checkpoint:
            self.noise.set_state(checkpoint["oracle_noise_generator"])
