"""``HessianProbe``: top-k Hessian eigenvalues, Hutchinson trace and the eigenvalue spectral density of the loss.

Attach it to any ``lightning.pytorch`` model::

    trainer = Trainer(callbacks=[HessianProbe(top_k=2, probe_batches=4, epochs=[0, 10])])

The Hessian is that of the probed loss (``training_step``'s, or ``loss_fn(module, batch)``) averaged over fixed
probe batches (batch-size weighted), w.r.t. every parameter with ``requires_grad``. Estimators (PyHessian's
definitions, re-implemented with the fixes listed in docs/landscape.md): power iteration with deflation
(``eigen_method="power"``, max 100 iterations, relative tolerance 1e-3) or Lanczos Ritz pairs
(``"lanczos"``); Rademacher Hutchinson trace with a reported standard error; SLQ density (m = 100 steps, full
re-orthogonalisation, weights = squared first Ritz-vector components, Gaussian broadening
σ² = 1e-5·max(1, spread), 10 000 bins). The model is probed in eval mode (batch norm uses its running statistics)
and nothing of the run changes: parameters, buffers, optimizer state, metric states and RNG state are untouched or
restored. Hessian-vector products use double backward or ``torch.func`` (``hvp_method="auto"`` times both on the
first probe and keeps the faster one; both timings are logged).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from framework.callbacks.landscape.figures import spectral_density_figure
from framework.callbacks.landscape.hessian_vector_product import HVP_METHODS, HessianVectorProduct, HvpTiming, choose_hvp_method
from framework.callbacks.landscape.hutchinson import TraceEstimate, hutchinson_trace
from framework.callbacks.landscape.lanczos import lanczos_top_eigenpairs
from framework.callbacks.landscape.power_iteration import EigenPairs, power_iteration
from framework.callbacks.landscape.probe_callback import ProbeCallback
from framework.callbacks.landscape.probe_loss import LossFunction, ProbeLoss, isolated_module
from framework.callbacks.landscape.spectral_density import (QuadratureNodes, SpectralDensity, density_on_grid,
                                                  stochastic_lanczos_quadrature)
from framework.loggers import log_figure
from framework.validation import require_choice, require_positive

__all__ = ["EIGEN_METHODS", "HessianProbe", "HessianReport", "hessian_report"]

EIGEN_METHODS = ("power", "lanczos")


@dataclass
class HessianReport:
    """One Hessian probe.

    Attributes:
        num_parameters: P.
        num_samples: probe samples (sum of batch sizes).
        loss: probed loss at θ.
        eigenpairs: top-k eigenpairs (``values [k]``, ``vectors [k, P]``).
        trace: Hutchinson estimate (None when disabled).
        quadrature: SLQ nodes (None when disabled).
        density: the smoothed ESD (None when disabled).
        hvp_method: route used for the products; ``hvp_timing`` the measurement behind an "auto" choice.
        hvp_calls: number of Hessian-vector products spent.
    """

    num_parameters: int
    num_samples: int
    loss: float
    eigenpairs: EigenPairs
    trace: TraceEstimate | None
    quadrature: QuadratureNodes | None
    density: SpectralDensity | None
    hvp_method: str
    hvp_calls: int
    hvp_timing: HvpTiming | None = None
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def top_eigenvalue(self) -> float:
        return float(self.eigenpairs.values[0])

    def scalars(self) -> dict[str, float]:
        out = {"loss": self.loss, "num_parameters": self.num_parameters, "num_samples": self.num_samples,
               "hvp_calls": self.hvp_calls}
        for i, value in enumerate(self.eigenpairs.values.tolist(), start=1):
            out[f"eigenvalue_{i}"] = value
            out[f"eigenvalue_{i}_iterations"] = self.eigenpairs.iterations[i - 1]
        if self.trace is not None:
            out["trace"] = self.trace.mean
            out["trace_standard_error"] = self.trace.standard_error
            out["trace_samples"] = self.trace.num_samples
        if self.density is not None:
            grid, density = self.density.grid, self.density.density
            negative = grid < 0
            out["density_negative_mass"] = float(torch.trapezoid(density[negative], grid[negative])) \
                if int(negative.sum()) > 1 else 0.0
            weights = self.quadrature.weights.double()
            values = self.quadrature.values.double()
            out["density_ritz_min"] = float(values.min())
            out["density_ritz_max"] = float(values.max())
            out["density_weighted_mean"] = float((weights * values).sum(dim=1).mean())
        if self.hvp_timing is not None:
            for method, seconds in self.hvp_timing.seconds.items():
                out[f"hvp_ms_{method}"] = 1000.0 * seconds
            out["hvp_func_vs_double_backward_rel_diff"] = self.hvp_timing.relative_difference
        out["hvp_uses_func"] = float(self.hvp_method == "func")
        out.update(self.extra)
        return out


def hessian_report(
    module: torch.nn.Module,
    batches: Sequence[Any],
    *,
    loss_fn: LossFunction | None = None,
    top_k: int = 2,
    eigen_method: str = "power",
    max_iter: int = 100,
    tol: float = 1e-3,
    trace_samples: int | None = 100,
    trace_min_samples: int = 10,
    trace_rel_se: float | None = None,
    density_steps: int | None = 100,
    density_runs: int = 1,
    density_bins: int = 10_000,
    density_sigma_squared: float = 1e-5,
    hvp_method: str = "auto",
    eval_mode: bool = True,
    seed: int = 0,
) -> HessianReport:
    """Functional entry point (no Trainer needed): the whole Hessian probe of ``module`` on ``batches``."""
    require_choice("hvp_method", hvp_method, HVP_METHODS)
    require_choice("eigen_method", eigen_method, EIGEN_METHODS)
    with isolated_module(module, eval_mode=eval_mode):
        loss = ProbeLoss(module, batches, loss_fn=loss_fn)
        loss.check()
        value = float(loss.value().detach())
        timing = None
        method = hvp_method
        if hvp_method == "auto":
            timing = choose_hvp_method(loss, seed=seed)
            method = timing.method
        hvp = HessianVectorProduct(loss, method=method)
        generator = torch.Generator().manual_seed(seed)
        kwargs = dict(generator=generator, dtype=hvp.dtype, device=hvp.device)
        if top_k > hvp.dim:
            raise ValueError(f"top_k={top_k} exceeds the number of probed parameters ({hvp.dim})")
        if eigen_method == "power":
            pairs = power_iteration(hvp, hvp.dim, top_k=top_k, max_iter=max_iter, tol=tol, **kwargs)
        else:
            pairs = lanczos_top_eigenpairs(hvp, hvp.dim, top_k=top_k, steps=max_iter, **kwargs)
        trace = None
        if trace_samples:
            trace = hutchinson_trace(hvp, hvp.dim, max_samples=trace_samples,
                                     min_samples=min(trace_min_samples, trace_samples), rel_se_tol=trace_rel_se,
                                     **kwargs)
        nodes = density = None
        if density_steps:
            nodes = stochastic_lanczos_quadrature(hvp, hvp.dim, steps=density_steps, runs=density_runs, **kwargs)
            density = density_on_grid(nodes, num_bins=density_bins, sigma_squared=density_sigma_squared)
        return HessianReport(
            num_parameters=hvp.dim, num_samples=loss.num_samples, loss=value, eigenpairs=pairs, trace=trace,
            quadrature=nodes, density=density, hvp_method=method, hvp_calls=hvp.calls, hvp_timing=timing,
        )


class HessianProbe(ProbeCallback):
    """Callback: Hessian eigenvalues, trace and spectral density at chosen epochs and/or at fit end.

    Args:
        top_k: number of top eigenpairs (largest magnitude).
        eigen_method: ``"power"`` (power iteration with deflation, PyHessian) or ``"lanczos"`` (Ritz pairs).
        max_iter: power iterations per eigenpair (Lanczos: steps).
        tol: relative change of the eigenvalue that stops power iteration.
        trace_samples: Hutchinson probes (0 disables the trace).
        trace_min_samples: minimum probes before ``trace_rel_se`` may stop early.
        trace_rel_se: stop once SE ≤ trace_rel_se·|trace| (None: always ``trace_samples`` probes).
        density_steps: SLQ Lanczos steps m (0 disables the density).
        density_runs: SLQ runs n_v.
        density_bins: points of the density grid.
        density_sigma_squared: kernel variance factor (× max(1, spread)).
        hvp_method: ``"auto"``, ``"double_backward"`` or ``"func"``.
        probe_batches, dataloader, probe_data, loss_fn, epochs, every_n_epochs, at_fit_end, eval_mode,
        log_figures, output_dir, seed: see :class:`~framework.callbacks.landscape.probe_callback.ProbeCallback`.

    Logged under ``hessian/``: ``eigenvalue_i``, ``trace``, ``trace_standard_error``, ``density_negative_mass``,
    ``hvp_ms_double_backward`` / ``hvp_ms_func`` (first probe), ``seconds``; figure ``hessian/esd``; a JSON per probe
    with the eigenvalues, trace samples and SLQ nodes. ``reports`` keeps every :class:`HessianReport`.
    """

    prefix = "hessian"

    def __init__(
        self,
        *,
        top_k: int = 2,
        eigen_method: str = "power",
        max_iter: int = 100,
        tol: float = 1e-3,
        trace_samples: int = 100,
        trace_min_samples: int = 10,
        trace_rel_se: float | None = None,
        density_steps: int = 100,
        density_runs: int = 1,
        density_bins: int = 10_000,
        density_sigma_squared: float = 1e-5,
        hvp_method: str = "auto",
        **kwargs: Any,
    ) -> None:
        # The probing schedule and data options are ProbeCallback's (LightningCLI follows **kwargs into it).
        super().__init__(**kwargs)
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        require_choice("eigen_method", eigen_method, EIGEN_METHODS)
        if not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
        require_positive("tol", tol)
        for name, value in (("trace_samples", trace_samples), ("density_steps", density_steps)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer (0 disables it), got {value!r}")
        if not isinstance(trace_min_samples, int) or trace_min_samples < 1:
            raise ValueError(f"trace_min_samples must be a positive integer, got {trace_min_samples!r}")
        if trace_rel_se is not None:
            require_positive("trace_rel_se", trace_rel_se)
        if not isinstance(density_runs, int) or density_runs < 1:
            raise ValueError(f"density_runs must be a positive integer, got {density_runs!r}")
        if not isinstance(density_bins, int) or density_bins < 2:
            raise ValueError(f"density_bins must be an integer >= 2, got {density_bins!r}")
        require_positive("density_sigma_squared", density_sigma_squared)
        require_choice("hvp_method", hvp_method, HVP_METHODS)
        self.top_k = top_k
        self.eigen_method = eigen_method
        self.max_iter = max_iter
        self.tol = tol
        self.trace_samples = trace_samples
        self.trace_min_samples = trace_min_samples
        self.trace_rel_se = trace_rel_se
        self.density_steps = density_steps
        self.density_runs = density_runs
        self.density_bins = density_bins
        self.density_sigma_squared = density_sigma_squared
        self.hvp_method = hvp_method
        self._chosen_hvp: str | None = None

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "top_k": self.top_k, "eigen_method": self.eigen_method,
                "max_iter": self.max_iter, "tol": self.tol, "trace_samples": self.trace_samples,
                "trace_rel_se": self.trace_rel_se, "density_steps": self.density_steps,
                "density_runs": self.density_runs, "hvp_method": self.hvp_method}

    def probe(self, pl_module: torch.nn.Module, batches: list[Any]) -> HessianReport:
        # "auto" is measured on the first probe only; later probes reuse the faster route.
        method = self._chosen_hvp or self.hvp_method
        report = hessian_report(
            pl_module, batches, loss_fn=self.loss_fn, top_k=self.top_k, eigen_method=self.eigen_method,
            max_iter=self.max_iter, tol=self.tol, trace_samples=self.trace_samples,
            trace_min_samples=self.trace_min_samples, trace_rel_se=self.trace_rel_se,
            density_steps=self.density_steps, density_runs=self.density_runs, density_bins=self.density_bins,
            density_sigma_squared=self.density_sigma_squared, hvp_method=method, eval_mode=self.eval_mode,
            seed=self.seed,
        )
        self._chosen_hvp = report.hvp_method
        return report

    def log_report_figures(self, trainer, report: HessianReport, step: int) -> None:
        if report.density is not None:
            fig = spectral_density_figure(report.density.grid.numpy(), report.density.density.numpy(),
                                          eigenvalues=report.eigenpairs.values.numpy(),
                                          title=f"Hessian ESD (step {step})")
            log_figure(trainer, f"{self.prefix}/esd", fig, step=step)

    def report_payload(self, report: HessianReport) -> dict[str, Any]:
        payload: dict[str, Any] = {"scalars": report.scalars(), "eigenvalues": report.eigenpairs.values,
                                   "eigen_iterations": report.eigenpairs.iterations,
                                   "eigen_converged": report.eigenpairs.converged}
        if report.trace is not None:
            payload["trace_samples"] = report.trace.samples
        if report.quadrature is not None:
            payload["slq_ritz_values"] = report.quadrature.values
            payload["slq_weights"] = report.quadrature.weights
            payload["density_sigma_squared"] = report.density.sigma_squared
        return payload

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._chosen_hvp = state_dict.get("hvp_method_chosen")

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "hvp_method_chosen": self._chosen_hvp}

