"""How a model hands an equality-constrained stochastic problem to the project's SQP optimizers.

The problem is ``min_θ E[F(θ; ξ)]  s.t.  c(θ) = 0`` with deterministic constraints. A LightningModule (or any object)
takes part by implementing

* ``constraints() -> Tensor`` — ``c(θ)`` at the *current* parameters, shape ``(m,)``, differentiable in θ;
* ``objective(batch) -> Tensor`` — the mean loss ``F̄(θ; batch)`` on a batch, a scalar, differentiable in θ;
* optionally ``draw_batch(size: int) -> batch`` — a fresh i.i.d. batch of ``size`` samples. With it the optimizer
  chooses its own sample sizes from the accuracy conditions; without it, every estimate uses the batch the
  DataLoader delivered for this training step (fixed sample size).

The optimizer receives these as a :class:`ConstrainedOracle` through ``optimizer.step(oracle=...)``. In Lightning,
use manual optimization and call :func:`constrained_training_step` from ``training_step``::

    class MyModel(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False      # one training step = one optimizer iteration
            ...
        def constraints(self):  return self.w.sum().reshape(1) - 1.0
        def objective(self, batch):  x, y = batch; return F.mse_loss(self.net(x), y)
        def draw_batch(self, size):  ...           # optional
        def training_step(self, batch, batch_idx):
            return constrained_training_step(self, batch)
        def configure_optimizers(self):
            return TRSQP(self.parameters())

``constrained_training_step`` logs the step's diagnostics (KKT residual, radius, penalty, sample sizes, acceptance)
under ``trsqp/...`` to every attached logger (W&B included).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

__all__ = [
    "ConstrainedOracle",
    "EqualityConstrainedProblem",
    "oracle_from_module",
    "constrained_training_step",
    "REQUIRED_METHODS",
]

REQUIRED_METHODS = ("constraints", "objective")


@runtime_checkable
class EqualityConstrainedProblem(Protocol):
    """Structural type of a model that SQP optimizers can train (``draw_batch`` is optional, so not listed)."""

    def constraints(self) -> Tensor: ...

    def objective(self, batch: Any) -> Tensor: ...


@dataclass
class ConstrainedOracle:
    """The callables an SQP optimizer evaluates at the current parameters.

    Attributes:
        objective: ``batch -> scalar tensor``.
        constraints: ``() -> tensor (m,)``.
        draw_batch: ``size -> batch`` or None (then ``fixed_batch`` is used for every estimate).
        fixed_batch: the batch used when ``draw_batch`` is None.
        fixed_batch_size: its number of samples (for sample accounting), or None when unknown.
    """

    objective: Callable[[Any], Tensor]
    constraints: Callable[[], Tensor]
    draw_batch: Callable[[int], Any] | None = None
    fixed_batch: Any = None
    fixed_batch_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("objective", "constraints"):
            if not callable(getattr(self, name)):
                raise TypeError(f"ConstrainedOracle.{name} must be callable, got {getattr(self, name)!r}")
        if self.draw_batch is not None and not callable(self.draw_batch):
            raise TypeError(f"ConstrainedOracle.draw_batch must be callable or None, got {self.draw_batch!r}")

    @property
    def adaptive(self) -> bool:
        """True when the optimizer can choose sample sizes."""
        return self.draw_batch is not None

    def batch(self, size: int) -> tuple[Any, int]:
        """A batch of ``size`` fresh samples (or the fixed batch), and the number of samples it really holds."""
        if self.draw_batch is not None:
            return self.draw_batch(int(size)), int(size)
        return self.fixed_batch, int(self.fixed_batch_size or 0)


def oracle_from_module(module: Any, batch: Any = None) -> ConstrainedOracle:
    """Build the oracle of a model implementing the protocol; a clear ``TypeError`` names what is missing."""
    missing = [name for name in REQUIRED_METHODS if not callable(getattr(module, name, None))]
    if missing:
        raise TypeError(
            f"{type(module).__name__} does not implement the equality-constrained problem protocol: missing "
            f"{', '.join(f'{m}()' for m in missing)}. Implement constraints() -> Tensor (m,), objective(batch) -> "
            "scalar Tensor and optionally draw_batch(size) (see framework.optim.constrained_protocol)"
        )
    draw = getattr(module, "draw_batch", None)
    size = _batch_size(batch)
    return ConstrainedOracle(
        objective=module.objective,
        constraints=module.constraints,
        draw_batch=draw if callable(draw) else None,
        fixed_batch=batch,
        fixed_batch_size=size,
    )


def _batch_size(batch: Any) -> int | None:
    if isinstance(batch, Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], Tensor):
        return int(batch[0].shape[0]) if batch[0].dim() else 1
    if isinstance(batch, dict):
        for value in batch.values():
            if isinstance(value, Tensor):
                return int(value.shape[0]) if value.dim() else 1
    return None


def constrained_training_step(module: Any, batch: Any = None, *, log_prefix: str = "trsqp") -> Any:
    """One optimizer iteration inside ``training_step`` (manual optimization); logs and returns the step info.

    Raises:
        TypeError: the module lacks the protocol, uses automatic optimization, or its optimizer is not one of the
            project's constrained optimizers.
    """
    if getattr(module, "automatic_optimization", False):
        raise TypeError(
            f"{type(module).__name__}.automatic_optimization is True; constrained SQP optimizers need manual "
            "optimization (set self.automatic_optimization = False in __init__)"
        )
    oracle = oracle_from_module(module, batch)
    optimizer = module.optimizers()
    inner = getattr(optimizer, "optimizer", optimizer)
    if not getattr(inner, "accepts_constrained_oracle", False):
        raise TypeError(
            f"{type(inner).__name__} is not an equality-constrained SQP optimizer; use framework.optim.TRSQP or "
            "framework.optim.AdaptiveL1SQP (model.init_args.optimizer.class_path)"
        )
    info = optimizer.step(oracle=oracle)
    values = {f"{log_prefix}/{f.name}": float(getattr(info, f.name)) for f in fields(info)
              if isinstance(getattr(info, f.name), (int, float, bool))}
    module.log_dict(values, on_step=True, on_epoch=False, prog_bar=False, batch_size=1)
    module.log(f"{log_prefix}/kkt", float(info.kkt_residual), on_step=True, prog_bar=True, batch_size=1)
    return info
