"""TR-SQP with random models for stochastic objectives and deterministic equality constraints.

Fang, Na, Mahoney, Kolar, "Trust-region sequential quadratic programming for stochastic optimization with random
models" (arXiv:2409.15734). No public code exists; the iteration below follows the paper's abstract where it is
specific, the authors' predecessor (TR-StoSQP, arXiv:2211.15943) and successor (TR-IP-SSQP, arXiv:2603.10230) codes
for the verified rules, and our own choices where neither is available (listed in ``docs/trsqp.md``).

One call of :meth:`TRSQP.step` is one iteration ``k``:

1. ``c_k, G_k`` (exact) and the SVD of ``G_k`` (rank check, projector ``P``, normal step, LS multipliers);
2. gradient estimate ``ḡ_k`` from a fresh batch of size ``N_g(Δ_k)``; ``λ̄_k = −(GGᵀ)⁻¹Gḡ_k``, ``∇̄L = Pḡ_k``;
3. Lagrangian Hessian model ``B_k`` (identity / SR1 / estimated from a batch of size ``N_h(Δ_k)`` / averaged);
4. second-order mode: ``(τ̄_k, ζ_k)`` = smallest eigenpair of ``Zᵀ B_k Z`` by Lanczos on Hessian-vector products;
5. ``K̄_k = ‖(∇̄L, c, [τ̄_k]⁻)‖``; if ``K̄_k / max(1, ‖B_k‖) < η Δ_k`` the iteration is unsuccessful without a step;
6. parameter-free radius decomposition ``Δ_k = (‖c‖, ‖∇̄L‖, [τ̄]⁻)/K̄_k · Δ_k`` into normal / tangential / eigen
   shares; normal step ``w = γ_k v`` with ``v = −G⁺c`` and ``γ_k = min(1, Δ̆_k/‖v‖)``; tangential step by projected
   Steihaug-CG on ``(ḡ + γ_k B v)ᵀt + ½tᵀBt`` within ``Δ̃_k``; eigen step ``±Δ^e_k ζ_k`` with the sign that makes
   the model's slope along it non-positive;
7. ℓ2 penalty ``μ`` increased (never decreased) until the predicted reduction is sufficient;
8. merit ``f̄ + μ‖c‖`` estimated at ``x_k`` and at the trial point from fresh batches of size ``N_f(Δ_k, ε_k)``;
   if the ratio test fails and the second-order correction is on, the corrected point
   ``x_k + s − G⁺c(x_k + s)`` is tried as well;
9. ratio ``≥ η``: accept, ``Δ ← min(γΔ, Δ_max)``, ``ε ← γε`` if ``−Pred ≥ ε`` else ``ε/γ``; else reject,
   ``Δ ← Δ/γ``, ``ε ← ε/γ``.

All scalars of the state (radius, penalty, reliability, counters) and the quasi-Newton matrices live in
``optimizer.state`` (keyed by the first parameter), so ``state_dict()`` / ``load_state_dict()`` resume exactly.
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
from framework.optim.hessian_models import HESSIAN_OPTIONS, HessianModel, sr1_update
from framework.optim.lanczos import smallest_eigenpair
from framework.optim.merit import increase_penalty, l2_merit, model_reduction
from framework.optim.sample_sizes import function_sample_size, gradient_sample_size, hessian_sample_size
from framework.optim.steihaug_cg import projected_steihaug_cg
from framework.validation import require_choice, require_in_range, require_positive

__all__ = ["TRSQP", "TRSQPStepInfo", "MODES"]

MODES = ("first_order", "second_order")


@dataclass
class TRSQPStepInfo:
    """Diagnostics of one TR-SQP iteration (all plain Python numbers, ready for ``self.log_dict``).

    ``kkt_residual`` is ``‖(∇̄L, c)‖`` from the *estimated* gradient at the iterate where the step started;
    ``relative_kkt`` divides it by ``max(1, first iteration's value)``. ``radius``, ``penalty`` and ``reliability``
    are the values *after* this iteration's updates.
    """

    iteration: int
    accepted: bool
    step_type: str
    kkt_residual: float
    relative_kkt: float
    constraint_violation: float
    reduced_gradient_norm: float
    min_reduced_curvature: float
    radius: float
    penalty: float
    reliability: float
    predicted_reduction: float
    ratio: float
    step_norm: float
    used_correction: bool
    gradient_samples: int
    function_samples: int
    hessian_samples: int
    total_samples: int
    merit_estimate: float
    objective_estimate: float
    cg_iterations: int


class TRSQP(torch.optim.Optimizer):
    """Trust-region SQP for ``min E[F(x; ξ)] s.t. c(x) = 0`` with random models (first- or second-order).

    Needs the problem through ``step(oracle=ConstrainedOracle(...))`` (see
    :mod:`framework.optim.constrained_protocol`); with Lightning use manual optimization and
    :func:`~framework.optim.constrained_protocol.constrained_training_step`. All parameters are treated as one
    vector (float64 recommended).

    Args:
        params: parameters (one parameter group).
        mode: "first_order" (gradient steps; first-order stationary points) or "second_order" (adds the Lanczos eigen
            step along negative curvature of the reduced Lagrangian Hessian; second-order stationary points).
        hessian: Lagrangian Hessian model: "identity", "sr1", "estimated" (Hessian of the sampled Lagrangian) or
            "averaged" (mean of the last ``hessian_window`` estimated Hessians).
        radius: initial trust-region radius ``Δ₀ > 0``.
        max_radius: ``Δ_max ≥ Δ₀``.
        ratio_threshold: ``η ∈ (0, 1)``, acceptance threshold of the ratio test.
        criticality_threshold: ``η₂ > 0`` of the criticality test ``K̄/max(1, ‖B‖) < η₂Δ`` (unsuccessful without a
            step); default ``η`` as in the authors' code. Smaller values let Newton-like steps fit in the trust region
            (faster local convergence with exact Hessians); the random-model theory only needs some ``η₂ > 0``.
        radius_factor: ``γ > 1``, radius / reliability expansion and contraction factor.
        penalty: initial ℓ2 penalty ``μ₀ > 0``.
        penalty_growth: ``ρ > 1``, factor of the penalty increase.
        max_penalty: cap of the penalty.
        reliability: initial reliability parameter ``ε₀ > 0`` (bounds the function-estimate error).
        kappa_grad, kappa_hess, kappa_f: accuracy constants of the gradient / Hessian / function estimates.
        p_grad, p_hess, p_f: failure probabilities of those estimates, in ``(0, 1)``.
        sample_constant: ``C`` of the sample-size rules.
        min_samples, max_samples: bounds of every sample size.
        second_order_correction: try ``x + s − G⁺c(x + s)`` when the plain trial point fails the ratio test.
        hessian_window: window of the "averaged" option.
        cg_tolerance: relative residual tolerance of Steihaug-CG.
        cg_max_iterations: CG iteration cap (default: the number of parameters).
        lanczos_max_iterations: Krylov dimension cap (default: the number of parameters).
        rank_tolerance: relative singular-value threshold below which the Jacobian counts as rank-deficient.
        on_rank_deficient: "raise" (clear error) or "truncate" (truncated-SVD least squares).
        common_random_numbers: evaluate the merit at ``x_k`` and at the trial point on the *same* batch (lower
            variance of the difference; the authors' codes use independent draws, the default).
        dense_hessian_limit: for "estimated", form the ``d × d`` matrix when ``d`` is at most this (otherwise use
            Hessian-vector products); "sr1" and "averaged" need the matrix and refuse larger ``d``.
        seed: seed of the Lanczos start vectors.
    """

    accepts_constrained_oracle = True

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        *,
        mode: str = "first_order",
        hessian: str = "identity",
        radius: float = 1.0,
        max_radius: float = 10.0,
        ratio_threshold: float = 0.6,
        criticality_threshold: float | None = None,
        radius_factor: float = 1.5,
        penalty: float = 1.0,
        penalty_growth: float = 1.5,
        max_penalty: float = 1e8,
        reliability: float = 1.0,
        kappa_grad: float = 0.01,
        kappa_hess: float = 0.01,
        kappa_f: float = 5e-4,
        p_grad: float = 0.05,
        p_hess: float = 0.05,
        p_f: float = 0.05,
        sample_constant: float = 5.0,
        min_samples: int = 1,
        max_samples: int = 100_000,
        second_order_correction: bool = True,
        hessian_window: int = 50,
        cg_tolerance: float = 1e-10,
        cg_max_iterations: int | None = None,
        lanczos_max_iterations: int | None = None,
        rank_tolerance: float = 1e-10,
        on_rank_deficient: str = "raise",
        common_random_numbers: bool = False,
        dense_hessian_limit: int = 2048,
        seed: int = 0,
    ) -> None:
        require_choice("mode", mode, MODES)
        require_choice("hessian", hessian, HESSIAN_OPTIONS)
        require_positive("radius", radius)
        require_positive("max_radius", max_radius)
        if max_radius < radius:
            raise ValueError(f"max_radius must be >= radius, got max_radius={max_radius!r} < radius={radius!r}")
        require_in_range("ratio_threshold", ratio_threshold, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        if criticality_threshold is None:
            criticality_threshold = ratio_threshold
        require_positive("criticality_threshold", criticality_threshold)
        _require_greater_than_one("radius_factor", radius_factor)
        require_positive("penalty", penalty)
        _require_greater_than_one("penalty_growth", penalty_growth)
        require_positive("max_penalty", max_penalty)
        require_positive("reliability", reliability)
        for name, value in (("kappa_grad", kappa_grad), ("kappa_hess", kappa_hess), ("kappa_f", kappa_f),
                            ("sample_constant", sample_constant), ("cg_tolerance", cg_tolerance)):
            require_positive(name, value)
        for name, value in (("p_grad", p_grad), ("p_hess", p_hess), ("p_f", p_f)):
            require_in_range(name, value, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        for name, value in (("min_samples", min_samples), ("max_samples", max_samples),
                            ("hessian_window", hessian_window), ("dense_hessian_limit", dense_hessian_limit)):
            _require_positive_int(name, value)
        if max_samples < min_samples:
            raise ValueError(f"max_samples must be >= min_samples, got {max_samples!r} < {min_samples!r}")
        for name, value in (("cg_max_iterations", cg_max_iterations), ("lanczos_max_iterations", lanczos_max_iterations)):
            if value is not None:
                _require_positive_int(name, value)
        require_in_range("rank_tolerance", rank_tolerance, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        require_choice("on_rank_deficient", on_rank_deficient, RANK_DEFICIENCY_POLICIES)
        defaults = dict(
            mode=mode, hessian=hessian, radius=radius, max_radius=max_radius, ratio_threshold=ratio_threshold,
            criticality_threshold=criticality_threshold, radius_factor=radius_factor, penalty=penalty,
            penalty_growth=penalty_growth, max_penalty=max_penalty,
            reliability=reliability, kappa_grad=kappa_grad, kappa_hess=kappa_hess, kappa_f=kappa_f, p_grad=p_grad,
            p_hess=p_hess, p_f=p_f, sample_constant=sample_constant, min_samples=min_samples,
            max_samples=max_samples, second_order_correction=second_order_correction, hessian_window=hessian_window,
            cg_tolerance=cg_tolerance, cg_max_iterations=cg_max_iterations,
            lanczos_max_iterations=lanczos_max_iterations, rank_tolerance=rank_tolerance,
            on_rank_deficient=on_rank_deficient, common_random_numbers=common_random_numbers,
            dense_hessian_limit=dense_hessian_limit, seed=seed,
        )
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError(
                f"TRSQP treats all parameters as one vector and takes one parameter group, got {len(self.param_groups)}"
            )
        self._flat = FlatParameters(self.param_groups[0]["params"])
        if hessian in ("sr1", "averaged") and self._flat.dim > dense_hessian_limit:
            raise ValueError(
                f"hessian={hessian!r} stores a dense {self._flat.dim}x{self._flat.dim} matrix; the model has more than "
                f"dense_hessian_limit={dense_hessian_limit} parameters: use 'identity' or 'estimated' (Hessian-vector "
                "products), or raise dense_hessian_limit"
            )

    # ------------------------------------------------------------------ state
    @property
    def trsqp_state(self) -> dict[str, Any]:
        """The optimizer's scalar state (radius, penalty, reliability, counters, quasi-Newton data)."""
        state = self.state[self._flat.params[0]]
        if "iteration" not in state:
            group = self.param_groups[0]
            state.update(
                iteration=0, radius=float(group["radius"]), penalty=float(group["penalty"]),
                reliability=float(group["reliability"]), initial_kkt=-1.0, accepted_steps=0,
                gradient_samples=0, function_samples=0, hessian_samples=0,
            )
        return state

    # ------------------------------------------------------------------ step
    def step(self, closure: Callable[[], Any] | None = None, *, oracle: ConstrainedOracle | None = None) -> TRSQPStepInfo:
        """One TR-SQP iteration; see the module docstring. ``closure`` (Lightning's) is called once and ignored."""
        if oracle is None:
            raise TypeError(
                "TRSQP.step needs the problem: step(oracle=ConstrainedOracle(objective=..., constraints=..., "
                "draw_batch=...)); in Lightning use manual optimization and "
                "framework.optim.constrained_protocol.constrained_training_step(self, batch)"
            )
        if not isinstance(oracle, ConstrainedOracle):
            raise TypeError(f"oracle must be a ConstrainedOracle, got {type(oracle).__name__}")
        if closure is not None:
            with torch.enable_grad():
                closure()
        group = self.param_groups[0]
        state = self.trsqp_state
        flat = self._flat
        second_order = group["mode"] == "second_order"
        radius, penalty, reliability = state["radius"], state["penalty"], state["reliability"]
        eta, gamma = group["ratio_threshold"], group["radius_factor"]
        k = state["iteration"]
        x = flat.get()

        # 1. constraints and their Jacobian (deterministic).
        c, jac = flat.value_and_jacobian(oracle.constraints)
        geometry = ConstraintGeometry.from_jacobian(
            c, jac, rank_tolerance=group["rank_tolerance"], on_rank_deficient=group["on_rank_deficient"]
        )
        c_norm = float(torch.linalg.vector_norm(c))

        # 2. gradient estimate from a batch of the size the accuracy condition asks for.
        sizes = dict(min_samples=group["min_samples"], max_samples=group["max_samples"])
        n_g = gradient_sample_size(radius, kappa=group["kappa_grad"], probability=group["p_grad"],
                                   constant=group["sample_constant"], **sizes)
        batch_g, used_g = oracle.batch(n_g)
        _, grad = flat.value_and_gradient(lambda: oracle.objective(batch_g))
        _check_finite(grad, "objective gradient estimate")
        multipliers = geometry.multipliers(grad)
        reduced_grad = geometry.project_null(grad)
        reduced_norm = float(torch.linalg.vector_norm(reduced_grad))
        kkt = math.hypot(reduced_norm, c_norm)
        if state["initial_kkt"] < 0:
            state["initial_kkt"] = kkt

        # 3. Lagrangian Hessian model.
        self._sr1_pending_update(state, x, grad, jac)
        hess, used_h = self._hessian_model(group, state, oracle, multipliers, radius)

        # 4. negative curvature of the reduced Hessian (second-order mode).
        tau, zeta = float("nan"), None
        if second_order:
            tau, zeta = self._min_reduced_curvature(group, hess, geometry, x, k)
        curvature_tol = 1e-12 * max(1.0, hess.norm)
        neg_curv = max(0.0, -tau) if (second_order and math.isfinite(tau) and -tau > curvature_tol) else 0.0

        measure = math.sqrt(kkt**2 + neg_curv**2)
        info_common = dict(
            iteration=k, kkt_residual=kkt, relative_kkt=kkt / max(1.0, state["initial_kkt"]),
            constraint_violation=c_norm, reduced_gradient_norm=reduced_norm, min_reduced_curvature=tau,
            gradient_samples=used_g, hessian_samples=used_h,
        )
        state["gradient_samples"] += used_g
        state["hessian_samples"] += used_h
        self._remember_for_sr1(state, group, x, grad, jac, multipliers)

        # 5. criticality test: no step when the model's measure is small relative to the radius.
        if measure / max(1.0, hess.norm) < group["criticality_threshold"] * radius:
            state["radius"] = radius / gamma
            state["reliability"] = reliability / gamma
            state["iteration"] = k + 1
            return self._info(state, info_common, accepted=False, step_type="none", pred=0.0, ratio=float("nan"),
                              step_norm=0.0, used_correction=False, n_f=0, merit=float("nan"),
                              objective=float("nan"), cg_iterations=0)

        # 6. step: normal + tangential (+ eigen) within the decomposed radius.
        normal_radius = radius * c_norm / measure
        tangential_radius = radius * reduced_norm / measure
        eigen_radius = radius * neg_curv / measure
        v = geometry.normal_step()
        v_norm = float(torch.linalg.vector_norm(v))
        gamma_k = min(1.0, normal_radius / v_norm) if v_norm > 0 else 0.0
        w = gamma_k * v
        bv = hess.matvec(v) if gamma_k > 0 else torch.zeros_like(v)
        cg = projected_steihaug_cg(
            hess.matvec, grad + gamma_k * bv, geometry.project_null, tangential_radius,
            relative_tolerance=group["cg_tolerance"], max_iterations=group["cg_max_iterations"],
        )
        t = cg.step
        step_type = "gradient"
        if neg_curv > 0.0 and zeta is not None and eigen_radius > 0.0:
            slope = float((grad + hess.matvec(w + t)) @ zeta)
            sign = -1.0 if slope > 0 else 1.0
            t = t + sign * eigen_radius * zeta
            step_type = "eigen" if neg_curv >= kkt else "gradient+eigen"
            limit = math.sqrt(max(radius**2 - float(w @ w), 0.0))
            t_norm = float(torch.linalg.vector_norm(t))
            if t_norm > limit > 0:
                t = t * (limit / t_norm)
        s = w + t
        step_norm = float(torch.linalg.vector_norm(s))

        # 7. predicted reduction and the monotone penalty update.
        bs = hess.matvec(s)
        reduction = model_reduction(grad, bs, s, c, jac)
        first_order_radius = radius * kkt / measure
        threshold = -0.5 * kkt * min(first_order_radius, kkt / max(hess.norm, 1e-300)) if kkt > 0 else 0.0
        penalty = increase_penalty(reduction, penalty, threshold=threshold, growth=group["penalty_growth"],
                                   max_penalty=group["max_penalty"])
        pred = reduction.at(penalty)  # negative = predicted decrease
        state["penalty"] = penalty

        # 8. merit estimates (fresh samples) and the ratio test, with the second-order correction as a fallback.
        n_f = function_sample_size(radius, reliability, kappa=group["kappa_f"], probability=group["p_f"],
                                   constant=group["sample_constant"], second_order=second_order, **sizes)
        batch_0, used_0 = oracle.batch(n_f)
        f_0 = float(flat.evaluate_at(x, lambda: oracle.objective(batch_0)))
        merit_0 = l2_merit(f_0, c, penalty)
        used_f = used_0

        def merit_at(point: Tensor) -> tuple[float, Tensor, int]:
            if group["common_random_numbers"]:
                batch, used = batch_0, 0
            else:
                batch, used = oracle.batch(n_f)
            flat.set_(point)
            try:
                with torch.no_grad():
                    f_val = float(oracle.objective(batch))
                    c_val = oracle.constraints().detach().reshape(-1).to(x.dtype)
            finally:
                flat.set_(x)
            return l2_merit(f_val, c_val, penalty), c_val, used

        trial = x + s
        merit_trial, c_trial, used = merit_at(trial)
        used_f += used
        ratio = (merit_0 - merit_trial) / (-pred) if pred < 0 else float("-inf")
        rounding = 64.0 * torch.finfo(x.dtype).eps * max(1.0, abs(merit_0))
        if 0 < -pred <= rounding and merit_trial - merit_0 <= rounding:
            # Predicted and actual changes are both at the rounding level of the merit value: the ratio is noise.
            ratio = 1.0
        used_correction = False
        if not ratio >= eta and group["second_order_correction"] and geometry.num_constraints > 0 and pred < 0:
            correction = geometry.correction_step(c_trial)
            corrected = trial + correction
            merit_corr, _, used = merit_at(corrected)
            used_f += used
            ratio_corr = (merit_0 - merit_corr) / (-pred)
            if ratio_corr >= eta:
                trial, ratio, used_correction = corrected, ratio_corr, True
                step_norm = float(torch.linalg.vector_norm(trial - x))
        state["function_samples"] += used_f

        # 9. acceptance, radius and reliability updates.
        accepted = bool(ratio >= eta)
        if accepted:
            flat.set_(trial)
            state["accepted_steps"] += 1
            state["radius"] = min(group["max_radius"], gamma * radius)
            state["reliability"] = gamma * reliability if -pred >= reliability else reliability / gamma
        else:
            state["radius"] = radius / gamma
            state["reliability"] = reliability / gamma
        state["iteration"] = k + 1
        return self._info(state, info_common, accepted=accepted, step_type=step_type, pred=pred, ratio=ratio,
                          step_norm=step_norm if accepted else 0.0, used_correction=used_correction, n_f=used_f,
                          merit=merit_0, objective=f_0, cg_iterations=cg.iterations)

    # ------------------------------------------------------------------ pieces
    def _info(self, state, common, *, accepted, step_type, pred, ratio, step_norm, used_correction, n_f, merit,
              objective, cg_iterations) -> TRSQPStepInfo:
        return TRSQPStepInfo(
            accepted=accepted, step_type=step_type, radius=state["radius"], penalty=state["penalty"],
            reliability=state["reliability"], predicted_reduction=pred, ratio=ratio, step_norm=step_norm,
            used_correction=used_correction, function_samples=n_f,
            total_samples=state["gradient_samples"] + state["function_samples"] + state["hessian_samples"],
            merit_estimate=merit, objective_estimate=objective, cg_iterations=cg_iterations, **common,
        )

    def _hessian_model(self, group, state, oracle, multipliers, radius) -> tuple[HessianModel, int]:
        option = group["hessian"]
        flat = self._flat
        if option == "identity":
            return HessianModel.identity(), 0
        if option == "sr1":
            if "sr1_matrix" not in state:
                state["sr1_matrix"] = torch.eye(flat.dim, dtype=flat.dtype, device=flat.device)
            return HessianModel.from_dense(state["sr1_matrix"]), 0
        n_h = hessian_sample_size(radius, kappa=group["kappa_hess"], probability=group["p_hess"],
                                  constant=group["sample_constant"], min_samples=group["min_samples"],
                                  max_samples=group["max_samples"])
        batch_h, used = oracle.batch(n_h)

        def lagrangian() -> Tensor:
            value = oracle.objective(batch_h).reshape(())
            if multipliers.numel():
                value = value + multipliers @ oracle.constraints().reshape(-1).to(multipliers.dtype)
            return value

        if option == "estimated":
            if flat.dim <= group["dense_hessian_limit"]:
                return HessianModel.from_dense(flat.dense_hessian(lagrangian)), used
            return HessianModel.from_operator(flat.hessian_vector_operator(lagrangian), flat.dim,
                                              like=multipliers), used
        # averaged: mean of the last `hessian_window` estimated Hessians (the newest included).
        estimate = flat.dense_hessian(lagrangian)
        window = state.get("hessian_window_stack")
        stack = estimate.unsqueeze(0) if window is None else torch.cat([window, estimate.unsqueeze(0)])
        stack = stack[-group["hessian_window"] :]
        state["hessian_window_stack"] = stack
        return HessianModel.from_dense(stack.mean(dim=0)), used

    def _min_reduced_curvature(self, group, hess, geometry, x, k) -> tuple[float, Tensor | None]:
        dim = x.numel()
        if dim - geometry.rank <= 0:
            return float("nan"), None
        generator = torch.Generator().manual_seed(int(group["seed"]) * 1_000_003 + k)
        start = torch.randn(dim, generator=generator, dtype=x.dtype).to(x.device)
        max_it = group["lanczos_max_iterations"] or dim
        result = smallest_eigenpair(hess.matvec, geometry.project_null, start, max_iterations=max_it)
        return result.eigenvalue, result.eigenvector

    def _remember_for_sr1(self, state, group, x, grad, jac, multipliers) -> None:
        if group["hessian"] == "sr1":
            state["sr1_x"] = x.clone()
            state["sr1_grad"] = grad.clone()
            state["sr1_jacobian"] = jac.clone()
            state["sr1_multipliers"] = multipliers.clone()

    def _sr1_pending_update(self, state, x, grad, jac) -> None:
        # SR1 pair from the previous iterate: s = x_k − x_{k−1}, y = ∇̄L(x_k, λ̄_{k−1}) − ∇̄L(x_{k−1}, λ̄_{k−1}).
        if "sr1_x" not in state or "sr1_matrix" not in state:
            return
        s = x - state["sr1_x"]
        if float(torch.linalg.vector_norm(s)) == 0.0:
            return
        lam = state["sr1_multipliers"]
        y = (grad + jac.T @ lam) - (state["sr1_grad"] + state["sr1_jacobian"].T @ lam)
        state["sr1_matrix"] = sr1_update(state["sr1_matrix"], s, y)


def _require_greater_than_one(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 1.0:
        raise ValueError(f"{name} must be a number > 1, got {value!r}")


def _require_positive_int(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_finite(vector: Tensor, what: str) -> None:
    if not torch.isfinite(vector).all():
        raise FloatingPointError(f"the {what} is not finite: {vector.tolist()[:8]} (check the model's loss)")
