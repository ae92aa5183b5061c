"""Line-search stochastic SQP baseline with random models and an adaptive ℓ1 merit (``AdapL1SQP``).

Na, Anitescu & Kolar's adaptive StoSQP family; this is the ℓ1-merit variant the TR-StoSQP papers compare against
(code: ``senna1128/Constrained-Stochastic-Optimization/AdapL1SQP``). One :meth:`AdaptiveL1SQP.step` is one iteration:

1. gradient estimate with a sample size that grows (×ρ, redrawing) until
   ``N ≥ C·log(4d/p_g) / min(κ_g²·α²·‖(∇̄L, c)‖², 1)`` (sizes never decrease across iterations);
2. Newton–KKT direction with ``B = I``: ``[I Gᵀ; G 0][Δx; Δλ] = −[ḡ + Gᵀλ; c]`` (solved through the SVD of ``G``);
3. ℓ1 penalty ``μ ← max(μ, ḡᵀΔx / ((ρ − 1)‖c‖₁))`` (skipped when ``c = 0``; the code divides by zero there);
4. function sample size ``N_f = C·log(8d/p_f) / min((κ_f α² Q)², ε², 1)``, ``Q = ḡᵀΔx − μ‖c‖₁``; the merit
   ``f̄ + μ‖c‖₁`` is estimated at ``x`` and ``x + αΔx`` from independent batches;
5. Armijo test ``φ̄(x + αΔx) ≤ φ̄(x) + αβQ``: accept (``x += αΔx``, ``λ += αΔλ``, ``α ← min(α_max, ρα)``,
   ``ε ← ρε`` if ``−αβQ ≥ ε`` else ``ε/ρ``) or reject (``α ← α/ρ``, ``ε ← ε/ρ``).

Defaults are the code's: ``β = 0.3, ρ = 1.2, α_max = 1.5, κ_g = 1, κ_f = 0.05, p_g = p_f = 0.1, μ₀ = ε₀ = 1``,
``C = 5`` (the code sweeps ``C ∈ {1, 5, 10, 50}``), sample sizes capped at ``1e5``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from framework.optim.constrained_protocol import ConstrainedOracle
from framework.optim.constraint_geometry import RANK_DEFICIENCY_POLICIES, ConstraintGeometry
from framework.optim.flat_parameters import FlatParameters
from framework.optim.sample_sizes import clip_sample_size
from framework.validation import require_choice, require_in_range, require_positive

__all__ = ["AdaptiveL1SQP", "LineSearchStepInfo"]


@dataclass
class LineSearchStepInfo:
    """Diagnostics of one line-search iteration (field names shared with TR-SQP where they mean the same)."""

    iteration: int
    accepted: bool
    kkt_residual: float
    relative_kkt: float
    constraint_violation: float
    step_size: float
    penalty: float
    reliability: float
    predicted_reduction: float
    step_norm: float
    gradient_samples: int
    function_samples: int
    total_samples: int
    merit_estimate: float
    objective_estimate: float


class AdaptiveL1SQP(torch.optim.Optimizer):
    """Adaptive line-search StoSQP on the ℓ1 merit (baseline of the TR-SQP papers).

    Args:
        params: parameters (one group; flattened).
        step_size_max: ``α_max > 0`` (also the initial step size).
        armijo: ``β ∈ (0, 1)``.
        factor: ``ρ > 1`` (step-size, reliability, sample-size and penalty factor).
        penalty: initial ``μ₀ > 0``.
        reliability: initial ``ε₀ > 0``.
        kappa_grad, kappa_f: accuracy constants (> 0).
        p_grad, p_f: probabilities in ``(0, 1)``.
        sample_constant: ``C > 0``.
        max_samples: cap of every sample size.
        rank_tolerance, on_rank_deficient: as in :class:`~framework.optim.trsqp.TRSQP`.
    """

    accepts_constrained_oracle = True

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        *,
        step_size_max: float = 1.5,
        armijo: float = 0.3,
        factor: float = 1.2,
        penalty: float = 1.0,
        reliability: float = 1.0,
        kappa_grad: float = 1.0,
        kappa_f: float = 0.05,
        p_grad: float = 0.1,
        p_f: float = 0.1,
        sample_constant: float = 5.0,
        max_samples: int = 100_000,
        rank_tolerance: float = 1e-10,
        on_rank_deficient: str = "raise",
    ) -> None:
        require_positive("step_size_max", step_size_max)
        require_in_range("armijo", armijo, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        if not isinstance(factor, (int, float)) or not math.isfinite(factor) or factor <= 1.0:
            raise ValueError(f"factor must be a number > 1, got {factor!r}")
        for name, value in (("penalty", penalty), ("reliability", reliability), ("kappa_grad", kappa_grad),
                            ("kappa_f", kappa_f), ("sample_constant", sample_constant)):
            require_positive(name, value)
        for name, value in (("p_grad", p_grad), ("p_f", p_f)):
            require_in_range(name, value, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        if not isinstance(max_samples, int) or isinstance(max_samples, bool) or max_samples < 1:
            raise ValueError(f"max_samples must be a positive integer, got {max_samples!r}")
        require_in_range("rank_tolerance", rank_tolerance, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        require_choice("on_rank_deficient", on_rank_deficient, RANK_DEFICIENCY_POLICIES)
        defaults = dict(step_size_max=step_size_max, armijo=armijo, factor=factor, penalty=penalty,
                        reliability=reliability, kappa_grad=kappa_grad, kappa_f=kappa_f, p_grad=p_grad, p_f=p_f,
                        sample_constant=sample_constant, max_samples=max_samples, rank_tolerance=rank_tolerance,
                        on_rank_deficient=on_rank_deficient)
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError(f"AdaptiveL1SQP takes one parameter group, got {len(self.param_groups)}")
        self._flat = FlatParameters(self.param_groups[0]["params"])

    @property
    def sqp_state(self) -> dict[str, Any]:
        state = self.state[self._flat.params[0]]
        if "iteration" not in state:
            group = self.param_groups[0]
            state.update(iteration=0, step_size=float(group["step_size_max"]), penalty=float(group["penalty"]),
                         reliability=float(group["reliability"]), gradient_sample_size=1, initial_kkt=-1.0,
                         gradient_samples=0, function_samples=0)
        return state

    def step(self, closure: Callable[[], Any] | None = None, *,
             oracle: ConstrainedOracle | None = None) -> LineSearchStepInfo:
        """One iteration; see the module docstring."""
        if oracle is None or not isinstance(oracle, ConstrainedOracle):
            raise TypeError(
                "AdaptiveL1SQP.step needs step(oracle=ConstrainedOracle(...)); in Lightning use manual optimization "
                "and framework.optim.constrained_protocol.constrained_training_step(self, batch)"
            )
        if closure is not None:
            with torch.enable_grad():
                closure()
        group, state, flat = self.param_groups[0], self.sqp_state, self._flat
        alpha, mu, eps, rho = state["step_size"], state["penalty"], state["reliability"], group["factor"]
        x = flat.get()
        d = x.numel()
        c, jac = flat.value_and_jacobian(oracle.constraints)
        geometry = ConstraintGeometry.from_jacobian(c, jac, rank_tolerance=group["rank_tolerance"],
                                                    on_rank_deficient=group["on_rank_deficient"])
        if "multipliers" not in state or state["multipliers"].numel() != c.numel():
            state["multipliers"] = torch.zeros_like(c)
        lam = state["multipliers"]
        c1 = float(c.abs().sum())
        c_norm = float(torch.linalg.vector_norm(c))

        # 1. gradient with the growing sample-size loop of Estgradf.jl.
        n = state["gradient_sample_size"]
        used_g = 0
        while True:
            batch, used = oracle.batch(n)
            used_g += used
            _, grad = flat.value_and_gradient(lambda: oracle.objective(batch))
            lagrangian_grad = grad + jac.T @ lam
            kkt_est = math.hypot(float(torch.linalg.vector_norm(lagrangian_grad)), c_norm)
            if n >= group["max_samples"] or not oracle.adaptive:
                break
            accuracy = min(group["kappa_grad"] ** 2 * alpha**2 * kkt_est**2, 1.0)
            needed = group["sample_constant"] * math.log(4 * d / group["p_grad"]) / accuracy if accuracy > 0 else math.inf
            if n >= needed:
                break
            n = clip_sample_size(n * rho, 1, group["max_samples"])
        state["gradient_sample_size"] = n
        state["gradient_samples"] += used_g
        if state["initial_kkt"] < 0:
            state["initial_kkt"] = kkt_est

        # 2. KKT direction with B = I: Δx = v − P ḡ, λ + Δλ = −(GGᵀ)⁻¹G(ḡ + Δx).
        direction = geometry.normal_step() - geometry.project_null(grad)
        new_multipliers = geometry.multipliers(grad + direction)
        delta_lam = new_multipliers - lam

        # 3. penalty.
        slope = float(grad @ direction)
        if c1 > 0:
            candidate = slope / ((rho - 1.0) * c1)
            if math.isfinite(candidate):
                mu = max(mu, candidate)
        quant = slope - mu * c1

        # 4. merit estimates with N_f samples each.
        accuracy_f = min((group["kappa_f"] * alpha**2 * quant) ** 2, eps**2, 1.0)
        n_f = clip_sample_size(group["sample_constant"] * math.log(8 * d / group["p_f"]) / accuracy_f
                               if accuracy_f > 0 else math.inf, 1, group["max_samples"])
        batch_0, used_0 = oracle.batch(n_f)
        f_0 = float(flat.evaluate_at(x, lambda: oracle.objective(batch_0)))
        merit_0 = f_0 + mu * c1
        trial = x + alpha * direction
        batch_1, used_1 = oracle.batch(n_f)
        flat.set_(trial)
        with torch.no_grad():
            f_1 = float(oracle.objective(batch_1))
            c_trial = oracle.constraints().detach().reshape(-1)
        merit_1 = f_1 + mu * float(c_trial.abs().sum())
        flat.set_(x)
        state["function_samples"] += used_0 + used_1

        # 5. Armijo test.
        accepted = merit_1 <= merit_0 + alpha * group["armijo"] * quant
        step_norm = 0.0
        if accepted:
            flat.set_(trial)
            state["multipliers"] = lam + alpha * delta_lam
            step_norm = alpha * float(torch.linalg.vector_norm(direction))
            eps = eps * rho if -alpha * group["armijo"] * quant >= eps else eps / rho
            alpha = min(group["step_size_max"], rho * alpha)
        else:
            alpha, eps = alpha / rho, eps / rho
        k = state["iteration"]
        state.update(iteration=k + 1, step_size=alpha, penalty=mu, reliability=eps)
        return LineSearchStepInfo(
            iteration=k, accepted=bool(accepted), kkt_residual=kkt_est,
            relative_kkt=kkt_est / max(1.0, state["initial_kkt"]), constraint_violation=c_norm, step_size=alpha,
            penalty=mu, reliability=eps, predicted_reduction=quant, step_norm=step_norm, gradient_samples=used_g,
            function_samples=used_0 + used_1,
            total_samples=state["gradient_samples"] + state["function_samples"],
            merit_estimate=merit_0, objective_estimate=f_0,
        )
