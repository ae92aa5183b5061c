"""The probed loss: ``training_step``'s loss or a user function, on a fixed set of batches, without side effects.

A probe must not change the run it observes. :func:`isolated_module` switches the module to eval mode (batch norm
uses running statistics, dropout is off), turns ``self.log`` / ``self.log_dict`` and the ``update`` / ``forward`` of
every torchmetrics ``Metric`` inside the module into no-ops, and afterwards restores
the train/eval flags, every buffer (bit-exact copies), the state of every torchmetrics ``Metric`` inside the module
(``training_step`` usually updates training metrics) and the RNG state. Parameters are never written: perturbed
losses are computed with ``torch.func.functional_call``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["LossFunction", "ProbeLoss", "batch_size_of", "isolated_module", "training_step_loss"]

#: ``loss_fn(module, batch) -> scalar Tensor``; must call the module (``module(x)``) so that swapped parameters
#: (``functional_call``) are seen.
LossFunction = Callable[[nn.Module, Any], Tensor]


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


def training_step_loss(module: nn.Module, batch: Any) -> Tensor:
    """The loss returned by ``module.training_step(batch, 0)`` (a Tensor, or a mapping with key ``"loss"``)."""
    import lightning.pytorch as pl
    from lightning.pytorch.utilities.model_helpers import is_overridden

    if not isinstance(module, pl.LightningModule) or not is_overridden("training_step", module, pl.LightningModule):
        raise ValueError(
            f"loss_fn=None uses training_step's loss, but {type(module).__name__} has no training_step; "
            "pass loss_fn=callable(module, batch) -> scalar loss"
        )
    if not module.automatic_optimization:
        raise ValueError(
            f"{type(module).__name__} uses manual optimization: its training_step steps the optimizers, so it cannot "
            "serve as the probe loss; pass loss_fn=callable(module, batch) -> scalar loss"
        )
    out = module.training_step(batch, 0)
    if isinstance(out, Mapping):
        out = out.get("loss")
    if not isinstance(out, Tensor) or out.numel() != 1:
        raise ValueError(
            f"{type(module).__name__}.training_step returned {type(out).__name__}, not a scalar loss tensor "
            "(or a dict with a 'loss' tensor); pass loss_fn=callable(module, batch) -> scalar loss"
        )
    return out.reshape(())


def batch_size_of(batch: Any) -> int:
    """Leading dimension of the first tensor found in ``batch`` (1 when it holds none)."""
    if isinstance(batch, Tensor):
        return int(batch.shape[0]) if batch.dim() > 0 else 1
    if isinstance(batch, Mapping):
        for value in batch.values():
            return batch_size_of(value)
    if isinstance(batch, (list, tuple)) and batch:
        return batch_size_of(batch[0])
    return 1


def _metric_snapshot(module: nn.Module) -> list[tuple[Any, dict[str, Any]]]:
    try:
        from torchmetrics import Metric
    except ImportError:  # pragma: no cover - torchmetrics is a dependency of the project
        return []
    saved = []
    for sub in module.modules():
        if isinstance(sub, Metric):
            state = {name: copy.deepcopy(getattr(sub, name)) for name in sub._defaults}
            for name in ("_update_count", "_computed", "_forward_cache"):
                state[name] = copy.deepcopy(getattr(sub, name, None))
            saved.append((sub, state))
    return saved


def _silence_metrics(module: nn.Module) -> list[tuple[Any, str, Any]]:
    """Turn ``update`` / ``forward`` of every torchmetrics Metric into no-ops; returns what to put back.

    ``training_step`` usually updates training metrics; under ``torch.func`` transforms such an update would store
    transformed tensors in the metric state (and fail), and in any case it would count probe batches as training data.
    """
    try:
        from torchmetrics import Metric
    except ImportError:  # pragma: no cover
        return []
    patched = []
    for sub in module.modules():
        if isinstance(sub, Metric):
            for name in ("update", "forward"):
                patched.append((sub, name, sub.__dict__.get(name, _MISSING)))
                object.__setattr__(sub, name, _noop)
    return patched


_MISSING = object()


@contextmanager
def isolated_module(module: nn.Module, *, eval_mode: bool = True) -> Iterator[None]:
    """Run probes on ``module`` with grad enabled (even inside Lightning's inference mode) and no lasting effects."""
    flags = [(m, m.training) for m in module.modules()]
    buffers = [(b, b.detach().clone()) for b in module.buffers()]
    metrics = _metric_snapshot(module)
    silenced = _silence_metrics(module)
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    patched = []
    for name in ("log", "log_dict"):
        if hasattr(module, name) and callable(getattr(module, name)):
            patched.append(name)
            object.__setattr__(module, name, _noop)
    try:
        if eval_mode:
            module.eval()
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        for name in patched:
            module.__dict__.pop(name, None)
        for metric, name, original in reversed(silenced):
            if original is _MISSING:
                metric.__dict__.pop(name, None)
            else:
                object.__setattr__(metric, name, original)
        for m, flag in flags:
            m.training = flag
        with torch.no_grad():
            for b, value in buffers:
                b.copy_(value)
        for metric, state in metrics:
            for name, value in state.items():
                setattr(metric, name, value)
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


class _LossCall(nn.Module):
    """``forward(batch) = loss_fn(module, batch)``, so ``functional_call`` can swap ``module``'s parameters."""

    def __init__(self, module: nn.Module, loss_fn: LossFunction) -> None:
        super().__init__()
        self.module = module
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> Tensor:
        return self.loss_fn(self.module, batch)


class ProbeLoss:
    """Batch-size-weighted mean loss over fixed probe batches.

    Args:
        module: the model (any ``nn.Module``; a ``LightningModule`` when ``loss_fn`` is None).
        batches: the probe batches, already on the module's device (non-empty).
        loss_fn: ``loss_fn(module, batch) -> scalar``; None uses ``training_step``'s loss.

    Weights: batch ``b`` of size ``n_b`` counts ``n_b / Σ n``, so the probed loss is the mean over probe samples
    (for mean-reduced losses), like PyHessian's data-loader mode.
    """

    def __init__(self, module: nn.Module, batches: Sequence[Any], *, loss_fn: LossFunction | None = None) -> None:
        if len(batches) == 0:
            raise ValueError("the probe set is empty: probe_batches must select at least one batch")
        self.module = module
        self.batches = list(batches)
        self.loss_fn: LossFunction = loss_fn if loss_fn is not None else training_step_loss
        sizes = torch.tensor([batch_size_of(b) for b in self.batches], dtype=torch.float64)
        self.weights = (sizes / sizes.sum()).tolist()
        self._call = _LossCall(module, self.loss_fn)
        self.uses_training_step = loss_fn is None

    @property
    def num_samples(self) -> int:
        return sum(batch_size_of(b) for b in self.batches)

    def check(self) -> Tensor:
        """Evaluate once and raise ``ValueError`` when the result is not a differentiable scalar."""
        loss = self.loss_fn(self.module, self.batches[0])
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError(
                f"the probe loss must be a scalar tensor, got {type(loss).__name__}"
                + (f" of shape {tuple(loss.shape)}" if isinstance(loss, Tensor) else "")
            )
        if not loss.requires_grad:
            raise ValueError(
                "the probe loss does not depend on the model's trainable parameters (no autograd graph); "
                "pass a loss_fn that calls the model"
            )
        return loss.detach()

    def batch_losses(self) -> list[Tensor]:
        """Per-batch losses (scalars with autograd graphs) using the module's own parameters."""
        return [self.loss_fn(self.module, batch).reshape(()) for batch in self.batches]

    def value(self) -> Tensor:
        """Weighted loss (scalar, with graph) at the module's own parameters."""
        return sum(w * loss for w, loss in zip(self.weights, self.batch_losses()))

    def functional(self, parameters: Mapping[str, Tensor]) -> Tensor:
        """Weighted loss with the named parameters replaced by ``parameters`` (``functional_call``; ``vmap``-able
        when the loss function is)."""
        swapped = {f"module.{name}": value for name, value in parameters.items()}
        total = None
        for weight, batch in zip(self.weights, self.batches):
            loss = torch.func.functional_call(self._call, swapped, (batch,), strict=False).reshape(())
            total = weight * loss if total is None else total + weight * loss
        return total
