"""Hessian-vector products of a :class:`ProbeLoss` w.r.t. the probed parameters.

Two routes, chosen per model (``method="auto"`` times both, see :func:`choose_hvp_method`):

* ``"double_backward"`` (Pearlmutter): g = ∂L/∂θ with ``create_graph=True``, then Hv = ∂(g·v)/∂θ. With one probe batch
  the gradient graph is built once and reused for every product (PyHessian's single-batch mode).
* ``"func"``: forward-over-reverse ``torch.func.jvp(torch.func.grad(L), (θ,), (v,))`` on a functional copy of the
  parameters. Needs a loss that ``torch.func`` can transform (no ``torch.autograd.grad`` inside, no ``.item()``).

Neither route writes the parameters or their ``.grad``. Both run under
:func:`~framework.callbacks.landscape.second_order_support.second_order_context` (math SDPA backend: the fused
attention kernels have no double backward); an op without a second derivative raises
:class:`~framework.callbacks.landscape.second_order_support.SecondOrderUnsupportedError` naming the op and the remedies.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from framework.callbacks.landscape.parameter_vectors import ParameterSpace
from framework.callbacks.landscape.probe_loss import ProbeLoss
from framework.callbacks.landscape.second_order_support import (SecondOrderUnsupportedError,
                                                                once_differentiable_functions, second_order_context,
                                                                unsupported_op_error)

__all__ = ["HVP_METHODS", "HessianVectorProduct", "HvpTiming", "choose_hvp_method"]

HVP_METHODS = ("auto", "double_backward", "func")


class HessianVectorProduct:
    """``hvp(v)``: H v for ``v`` of shape ``[P]`` (P = ``space.dim``); returns ``[P]``.

    Args:
        loss: the probed loss (call inside :func:`~framework.callbacks.landscape.probe_loss.isolated_module`).
        method: ``"double_backward"`` or ``"func"``.
        space: the probed parameters (default: all trainable parameters of ``loss.module``).

    Attributes:
        calls: number of products computed so far.
    """

    def __init__(self, loss: ProbeLoss, *, method: str = "double_backward", space: ParameterSpace | None = None):
        if method not in ("double_backward", "func"):
            raise ValueError(f"hvp method must be 'double_backward' or 'func', got {method!r}")
        self.loss = loss
        self.method = method
        self.space = space if space is not None else ParameterSpace.of(loss.module)
        self.params = self.space.parameters(loss.module)
        self.theta = self.space.flat_parameters(loss.module)
        self.calls = 0
        self._cached_grads: list[tuple[float, tuple[Tensor, ...]]] | None = None
        self._grad_fn = None

    @property
    def dim(self) -> int:
        return self.space.dim

    @property
    def device(self) -> torch.device:
        return self.theta.device

    @property
    def dtype(self) -> torch.dtype:
        return self.theta.dtype

    def _gradients(self) -> list[tuple[float, tuple[Tensor, ...]]]:
        out = []
        for weight, batch in zip(self.loss.weights, self.loss.batches):
            value = self.loss.loss_fn(self.loss.module, batch).reshape(())
            if not out:
                once = once_differentiable_functions(value)
                if once:
                    raise SecondOrderUnsupportedError(
                        f"the Hessian probe needs Hessian-vector products, but the model's loss uses "
                        f"{', '.join(once)} (a torch.autograd.Function marked @once_differentiable): its backward "
                        "carries no graph, so its second derivative would silently read as zero; remedies: implement a "
                        "differentiable backward without @once_differentiable, or pass loss_fn=callable(module, "
                        "batch) computing the loss with differentiable ops", op=once[0])
            grads = torch.autograd.grad(value, self.params, create_graph=True, allow_unused=True)
            grads = tuple(torch.zeros_like(p) if g is None else g for g, p in zip(grads, self.params))
            out.append((weight, grads))
        return out

    def _double_backward(self, v: Tensor) -> Tensor:
        single = len(self.loss.batches) == 1
        if single and self._cached_grads is None:
            self._cached_grads = self._gradients()
        grads_per_batch = self._cached_grads if single else self._gradients()
        pieces = list(self.space.unflatten(v).values())
        total = torch.zeros_like(v)
        for weight, grads in grads_per_batch:
            dot = sum((g * p).sum() for g, p in zip(grads, pieces) if g.requires_grad)
            if not isinstance(dot, Tensor) or not dot.requires_grad:
                continue  # the loss is linear in the parameters here: H = 0
            hv = torch.autograd.grad(dot, self.params, retain_graph=single, allow_unused=True)
            total += weight * self.space.flatten([torch.zeros_like(p) if h is None else h.detach()
                                                  for h, p in zip(hv, self.params)])
        return total

    def _func(self, v: Tensor) -> Tensor:
        if self._grad_fn is None:
            space, loss = self.space, self.loss

            def flat_loss(theta: Tensor) -> Tensor:
                return loss.functional(space.unflatten(theta))

            self._grad_fn = torch.func.grad(flat_loss)
        _, hv = torch.func.jvp(self._grad_fn, (self.theta,), (v,))
        return hv.detach()

    def __call__(self, v: Tensor) -> Tensor:
        if v.shape != (self.dim,):
            raise ValueError(f"v must have shape ({self.dim},), got {tuple(v.shape)}")
        self.calls += 1
        v = v.to(device=self.device, dtype=self.dtype)
        try:
            with second_order_context():
                return self._double_backward(v) if self.method == "double_backward" else self._func(v)
        except (RuntimeError, NotImplementedError) as error:
            if isinstance(error, SecondOrderUnsupportedError):
                raise
            clear = unsupported_op_error(error, method=self.method)
            if clear is None:
                raise
            raise clear from error


@dataclass
class HvpTiming:
    """Outcome of :func:`choose_hvp_method`.

    Attributes:
        method: the chosen route.
        seconds: mean seconds per product for each route that ran (``nan`` for one that failed).
        relative_difference: ‖Hv_db − Hv_func‖ / ‖Hv_db‖ on the same vector (``nan`` if one route failed).
        func_error: why the ``func`` route could not run (empty when it ran).
    """

    method: str
    seconds: dict[str, float]
    relative_difference: float
    func_error: str = ""


def choose_hvp_method(loss: ProbeLoss, *, repeats: int = 2, seed: int = 0) -> HvpTiming:
    """Time both routes on the same random vector (after one warm-up product each) and pick the faster one.

    The ``func`` route is skipped when ``torch.func`` cannot transform the loss (its error is reported); when double
    backward hits an op without a second derivative, ``func`` is used alone (warned); when both fail, one
    :class:`SecondOrderUnsupportedError` names the op(s). The two routes must agree to 1e-3 relative, otherwise
    double backward is used.
    """
    space = ParameterSpace.of(loss.module)
    theta = space.flat_parameters(loss.module)
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(space.dim, generator=generator, dtype=theta.dtype).to(theta.device)
    seconds: dict[str, float] = {}
    results: dict[str, Tensor] = {}
    error = ""
    failures: dict[str, SecondOrderUnsupportedError] = {}
    for method in ("double_backward", "func"):
        hvp = HessianVectorProduct(loss, method=method, space=space)
        try:
            results[method] = hvp(v)  # warm-up (builds and caches the gradient graph for double backward)
        except SecondOrderUnsupportedError as exc:
            seconds[method] = float("nan")
            failures[method] = exc
            error = f"{method}: {exc.op}"
            continue
        except Exception as exc:  # noqa: BLE001 - any torch.func failure means "not transformable"
            if method == "double_backward":
                raise
            seconds[method] = float("nan")
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            continue
        start = time.perf_counter()
        for _ in range(repeats):
            hvp(v)
        seconds[method] = (time.perf_counter() - start) / repeats
    if not results:
        ops = " and ".join(sorted({f.op for f in failures.values()}))
        raise SecondOrderUnsupportedError(
            f"neither Hessian-vector-product route works on this model: double backward and torch.func both stop at "
            f"{ops}. {str(failures['double_backward']).split('; ', 1)[-1]}", op=failures["double_backward"].op)
    if "double_backward" not in results:
        warnings.warn(f"Hessian probe: double backward is unavailable ({failures['double_backward'].op} has no second "
                      "derivative); using torch.func forward-over-reverse instead", stacklevel=2)
        return HvpTiming(method="func", seconds=seconds, relative_difference=float("nan"), func_error=error)
    diff = float("nan")
    method = "double_backward"
    if "func" in results:
        reference = results["double_backward"]
        diff = float((results["func"] - reference).norm() / reference.norm().clamp_min(1e-30))
        if diff < 1e-3 and seconds["func"] < seconds["double_backward"]:
            method = "func"
    return HvpTiming(method=method, seconds=seconds, relative_difference=diff, func_error=error)
