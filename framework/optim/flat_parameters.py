"""A model's parameters seen as one flat vector ``x`` (shape ``(d,)``), with the autograd helpers TR-SQP needs.

Equality-constrained SQP methods work on ``x ∈ R^d``: steps, projections and Hessian models are vectors and ``d × d``
operators. :class:`FlatParameters` writes a vector into the parameters, reads them back, and differentiates scalar and
vector functions *of the current parameter values* (the model's own forward code) with respect to ``x``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["FlatParameters"]


class FlatParameters:
    """View of a list of parameters as a single vector.

    Args:
        params: the optimizer's parameters; all must be floating point (float64 recommended), on one device, with
            one dtype.

    Raises:
        ValueError: a parameter is not floating point, or dtypes / devices differ, or the list is empty.
    """

    def __init__(self, params: Sequence[Tensor]) -> None:
        params = list(params)
        if not params:
            raise ValueError("the optimizer got an empty parameter list")
        for index, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise ValueError(f"parameter {index} is a {type(p).__name__}, expected a torch.Tensor / nn.Parameter")
            if not p.dtype.is_floating_point:
                raise ValueError(
                    f"parameter {index} (shape {tuple(p.shape)}) has dtype {p.dtype}; constrained SQP optimizers need "
                    "floating-point parameters (float64 recommended: Trainer(precision='64-true') or model.double())"
                )
        dtypes = {p.dtype for p in params}
        devices = {p.device for p in params}
        if len(dtypes) > 1 or len(devices) > 1:
            raise ValueError(
                f"all parameters must share one dtype and one device, got dtypes {sorted(map(str, dtypes))} and "
                f"devices {sorted(map(str, devices))}"
            )
        self.params = params
        self.numels = [p.numel() for p in params]
        self.dim = sum(self.numels)
        self.dtype = params[0].dtype
        self.device = params[0].device

    # ------------------------------------------------------------------ values
    def get(self) -> Tensor:
        """The current parameters as a new detached vector, shape ``(d,)``."""
        return torch.cat([p.detach().reshape(-1) for p in self.params]).clone()

    @torch.no_grad()
    def set_(self, x: Tensor) -> None:
        """Copy ``x`` (shape ``(d,)``) into the parameters in place."""
        offset = 0
        for p, n in zip(self.params, self.numels):
            p.copy_(x[offset : offset + n].view_as(p))
            offset += n

    def _flatten(self, grads: Sequence[Tensor | None]) -> Tensor:
        return torch.cat(
            [
                (g.reshape(-1) if g is not None else torch.zeros(n, dtype=self.dtype, device=self.device))
                for g, n in zip(grads, self.numels)
            ]
        )

    # ------------------------------------------------------------------ derivatives at the current parameters
    def value_and_gradient(self, fn: Callable[[], Tensor]) -> tuple[Tensor, Tensor]:
        """``(fn(), ∇fn)`` of a scalar function of the parameters; shapes ``()`` and ``(d,)``."""
        with torch.enable_grad():
            value = fn()
            _check_scalar(value, "objective")
            value = value.reshape(())
            grads = torch.autograd.grad(value, self.params, allow_unused=True) if value.requires_grad else [None] * len(
                self.params
            )
        return value.detach(), self._flatten(grads)

    def value_and_jacobian(self, fn: Callable[[], Tensor]) -> tuple[Tensor, Tensor]:
        """``(c, G)`` of a vector function: ``c`` shape ``(m,)``, Jacobian ``G`` shape ``(m, d)``."""
        with torch.enable_grad():
            value = fn()
            if not isinstance(value, Tensor):
                raise TypeError(f"constraints() must return a tensor of shape (m,), got {type(value).__name__}")
            value = value.reshape(-1)
            m = value.numel()
            rows = []
            for i in range(m):
                if value.requires_grad:
                    grads = torch.autograd.grad(value[i], self.params, retain_graph=i < m - 1, allow_unused=True)
                else:
                    grads = [None] * len(self.params)
                rows.append(self._flatten(grads))
        jac = torch.stack(rows) if rows else torch.zeros(0, self.dim, dtype=self.dtype, device=self.device)
        return value.detach().to(self.dtype), jac.to(self.dtype)

    def hessian_vector_operator(self, fn: Callable[[], Tensor]) -> Callable[[Tensor], Tensor]:
        """``v ↦ ∇²fn · v`` at the current parameters (one graph, reused by every product); ``v`` shape ``(d,)``."""
        with torch.enable_grad():
            value = fn()
            _check_scalar(value, "Lagrangian")
            value = value.reshape(())
            if not value.requires_grad:
                return lambda v: torch.zeros_like(v)
            grads = torch.autograd.grad(value, self.params, create_graph=True, allow_unused=True)
            flat = self._flatten(grads)

        def matvec(v: Tensor) -> Tensor:
            with torch.enable_grad():
                if not flat.requires_grad:
                    return torch.zeros_like(v)
                out = torch.autograd.grad(flat, self.params, grad_outputs=v, retain_graph=True, allow_unused=True)
            return self._flatten(out).detach()

        return matvec

    def dense_hessian(self, fn: Callable[[], Tensor]) -> Tensor:
        """The ``(d, d)`` Hessian of a scalar function (``d`` Hessian-vector products on one graph), symmetrised.

        (A single ``is_grads_batched`` double-backward was measured slower for the small ``d`` and moderate batches
        this optimizer targets, because of vmap's fixed cost.)
        """
        matvec = self.hessian_vector_operator(fn)
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        hess = torch.stack([matvec(eye[i]) for i in range(self.dim)])
        return 0.5 * (hess + hess.T)

    def evaluate_at(self, x: Tensor, fn: Callable[[], Tensor]) -> Tensor:
        """``fn()`` with the parameters temporarily set to ``x``; the parameters are restored afterwards."""
        saved = self.get()
        self.set_(x)
        try:
            with torch.no_grad():
                return fn().detach()
        finally:
            self.set_(saved)


def _check_scalar(value: object, what: str) -> None:
    if not isinstance(value, Tensor) or value.numel() != 1:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise TypeError(f"the {what} must be a scalar tensor, got {shape}")
