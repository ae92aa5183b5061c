"""ℓ2 exact-penalty merit ``φ_μ(x) = f(x) + μ‖c(x)‖₂``, its model reduction and the monotone penalty update.

The predicted change of the merit along ``s`` (negative = decrease) is
``Pred(μ) = ḡᵀs + ½ sᵀBs + μ(‖c + Gs‖ − ‖c‖)`` (both authors' TR codes). The penalty is increased by a factor until
``Pred ≤ threshold`` (TR-IP-SSQP: ``threshold = −½‖Q̄‖·min(Δ, ‖Q̄‖/‖B‖)``); it never decreases.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["l2_merit", "ModelReduction", "model_reduction", "increase_penalty"]


def l2_merit(objective: float, constraint_values: Tensor, penalty: float) -> float:
    """``f + μ‖c‖₂`` (``constraint_values`` shape ``(m,)``)."""
    return float(objective) + penalty * float(torch.linalg.vector_norm(constraint_values))


@dataclass
class ModelReduction:
    """The two parts of ``Pred(μ) = quadratic + μ·feasibility_change``."""

    quadratic: float
    feasibility_change: float

    def at(self, penalty: float) -> float:
        return self.quadratic + penalty * self.feasibility_change


def model_reduction(gradient: Tensor, hessian_step: Tensor, step: Tensor, constraint_values: Tensor,
                    jacobian: Tensor) -> ModelReduction:
    """Shapes: ``gradient, hessian_step (= B s), step (d,)``; ``constraint_values (m,)``; ``jacobian (m, d)``."""
    quadratic = float(gradient @ step) + 0.5 * float(step @ hessian_step)
    linearised = constraint_values + jacobian @ step
    change = float(torch.linalg.vector_norm(linearised)) - float(torch.linalg.vector_norm(constraint_values))
    return ModelReduction(quadratic, change)


def increase_penalty(reduction: ModelReduction, penalty: float, *, threshold: float, growth: float,
                     max_penalty: float) -> float:
    """Multiply ``penalty`` by ``growth`` until ``Pred(penalty) ≤ threshold`` (or the cap; or when a larger penalty
    cannot lower ``Pred`` because the step does not reduce the linearised infeasibility). Never decreases it."""
    while reduction.at(penalty) > threshold and reduction.feasibility_change < 0.0 and penalty < max_penalty:
        penalty = min(penalty * growth, max_penalty)
    return penalty
