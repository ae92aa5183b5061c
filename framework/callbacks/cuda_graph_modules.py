"""Replay the training forward and backward of chosen sub-modules as CUDA graphs, from a config:

    trainer:
      callbacks:
        - class_path: framework.callbacks.cuda_graph_modules.CUDAGraphModules
          init_args: {modules: [backbone]}

A launch-bound step (hundreds of small kernels, each costing the host more than the GPU) becomes two graph launches
per module: ``torch.cuda.make_graphed_callables`` captures the module's forward and its backward once per input
signature (shapes, dtypes, ``requires_grad``, keyword arguments, autocast state) at the first training call, and
replays them afterwards. Use it with static shapes (``ListOps(pad_to_seq_len=True)`` or a few ``length_buckets``;
the last, smaller batch of an epoch is one more signature). Tensor keyword arguments (a Hugging Face model's
``input_ids=..., attention_mask=..., labels=...``) are graph inputs like positional ones. Everything else runs the
module's own forward: eval mode, ``torch.no_grad`` (validation, generation), CPU tensors, non-tensor positional
arguments, object keyword arguments (e.g. a ``torch.Generator``), signatures beyond ``max_graphs``, and a signature
whose capture failed (one warning names the module and PyTorch's error — typically a host synchronisation inside the
module — and that signature stays eager; buffers and the random-number state are restored as after a capture).

Numerics: the graphs run the same kernels as eager. Capturing runs ``warmup_iters`` untimed forward/backward passes
on the first batch of each signature; afterwards the module's buffers (BatchNorm running statistics) and the
device's random-number generator state are restored, so the first replay starts from the state the eager step would
have seen (philox offsets advance per replay as they do per eager call). Constraints (PyTorch's): no host synchronisation inside the module (``.item()``, data-dependent
shapes), parameters updated in place (every ``torch.optim`` optimizer does), one device (no DDP / FSDP), outputs a
tensor or a tuple / list / dict of tensors. Outputs live in the graph's static memory and are overwritten by the next
replay: a training step that keeps them past its own backward must clone them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from framework.callbacks.submodule_path import resolve_submodule

__all__ = ["CUDAGraphModules"]

_PLAIN = (bool, int, float, str, type(None))


class _BoundForward(nn.Module):
    """``module``'s original forward with fixed plain keyword arguments; its parameters are ``module``'s.

    Called with ``positional + tensor keyword`` tensors in one flat tuple (what graph capture takes): the first
    ``num_positional`` are passed positionally, the rest as ``tensor_names`` in order.
    """

    def __init__(self, module: nn.Module, forward: Callable[..., Any], kwargs: dict[str, Any], num_positional: int,
                 tensor_names: tuple[str, ...]) -> None:
        super().__init__()
        self.inner = module
        self._call = forward
        self._kwargs = kwargs
        self._num_positional, self._tensor_names = num_positional, tensor_names

    def forward(self, *inputs: Tensor) -> Any:
        tensors = dict(zip(self._tensor_names, inputs[self._num_positional:]))
        return self._call(*inputs[: self._num_positional], **self._kwargs, **tensors)


class _GraphedForward:
    """Replaces ``module.forward``: captures and replays graphs for training calls, the original forward otherwise."""

    device_type = "cuda"  # where graphs are captured (tests substitute a fake capture on CPU)

    def __init__(self, module: nn.Module, max_graphs: int, warmup_iters: int) -> None:
        self.module = module
        self.eager = module.forward
        self.max_graphs, self.warmup_iters = max_graphs, warmup_iters
        self.graphs: dict[tuple, Callable[..., Any]] = {}
        self.replays = 0
        self.eager_calls = 0

    def _on_device(self, value: Any) -> bool:
        return isinstance(value, Tensor) and value.device.type == self.device_type

    def _eligible(self, args: tuple, kwargs: dict) -> bool:
        return (self.module.training and torch.is_grad_enabled()
                and (bool(args) or any(isinstance(v, Tensor) for v in kwargs.values()))
                and all(self._on_device(a) for a in args)
                and all(isinstance(v, _PLAIN) or self._on_device(v) for v in kwargs.values()))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self._eligible(args, kwargs):
            self.eager_calls += 1
            return self.eager(*args, **kwargs)
        plain = {k: v for k, v in kwargs.items() if not isinstance(v, Tensor)}
        names = tuple(sorted(k for k, v in kwargs.items() if isinstance(v, Tensor)))
        inputs = (*args, *(kwargs[k] for k in names))
        autocast = (torch.is_autocast_enabled(self.device_type), torch.get_autocast_dtype(self.device_type))
        key = (len(args), names, tuple((tuple(a.shape), a.dtype, a.requires_grad) for a in inputs),
               tuple(sorted(plain.items())), autocast)
        if key not in self.graphs:
            if len(self.graphs) >= self.max_graphs:
                self.eager_calls += 1
                return self.eager(*args, **kwargs)
            self.graphs[key] = self._capture(inputs, _BoundForward(self.module, self.eager, plain, len(args), names),
                                             autocast)
        graphed = self.graphs[key]
        if graphed is None:  # its capture failed: this signature runs eagerly
            self.eager_calls += 1
            return self.eager(*args, **kwargs)
        self.replays += 1
        return graphed(*inputs)

    def _capture(self, inputs: tuple, bound: _BoundForward,
                 autocast: tuple[bool, torch.dtype]) -> Callable[..., Any] | None:
        sample = tuple(a.detach().clone().requires_grad_(a.requires_grad) for a in inputs)
        buffers = [b.detach().clone() for b in self.module.buffers()]
        device = inputs[0].device
        rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()
        try:
            # PyTorch refuses to capture under autocast's weight-cast cache; the captured casts are recomputed per
            # replay.
            with torch.autocast(self.device_type, dtype=autocast[1], enabled=autocast[0], cache_enabled=False):
                graphed = torch.cuda.make_graphed_callables(bound, sample, num_warmup_iters=self.warmup_iters,
                                                            allow_unused_input=True).forward
        except RuntimeError as error:
            rank_zero_warn(f"CUDAGraphModules: capturing {type(self.module).__name__} failed for an input signature "
                           f"({str(error).splitlines()[0] if str(error) else type(error).__name__}); it runs eagerly")
            graphed = None
        # The warm-up passes updated BatchNorm statistics and drew random numbers; the real step has not run yet.
        # Restored, the first replay (or eager call) starts from the generator state the eager step would have seen.
        with torch.no_grad():
            for buffer, saved in zip(self.module.buffers(), buffers):
                buffer.copy_(saved)
        if device.type == "cuda":
            torch.cuda.set_rng_state(rng, device)
        else:
            torch.set_rng_state(rng)
        return graphed


class CUDAGraphModules(pl.Callback):
    """Train the sub-modules ``modules`` through CUDA graphs (see the module docstring).

    Args:
        modules: attribute paths from the LightningModule (e.g. ``backbone``, ``network.prior``); each an ``nn.Module``
            with no forward hooks of its own.
        max_graphs: input signatures captured per module; later ones run eagerly.
        warmup_iters: eager passes before each capture (PyTorch's ``num_warmup_iters``; cuDNN / cuFFT plans and
            autotuning happen there, outside the graph).
    """

    def __init__(self, *, modules: list[str], max_graphs: int = 8, warmup_iters: int = 3) -> None:
        super().__init__()
        if not isinstance(modules, (list, tuple)) or not modules or not all(isinstance(m, str) and m for m in modules):
            raise ValueError(f"modules must be a non-empty list of attribute paths, got {modules!r}")
        for name, value in (("max_graphs", max_graphs), ("warmup_iters", warmup_iters)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.modules, self.max_graphs, self.warmup_iters = list(modules), max_graphs, warmup_iters
        self.wrappers: dict[str, _GraphedForward] = {}
        self.final_stats: dict[str, dict[str, int]] = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.world_size > 1:
            raise ValueError(f"CUDAGraphModules runs on one device; this trainer has world_size={trainer.world_size} "
                             "(drop the callback, or train on one GPU)")
        for path in self.modules:
            module = resolve_submodule(pl_module, path, owner="CUDAGraphModules")
            if isinstance(module.__dict__.get("forward"), _GraphedForward):
                continue  # already wrapped (a second fit on the same model)
            if module._forward_hooks or module._forward_pre_hooks or module._backward_hooks:
                raise ValueError(f"CUDAGraphModules: {path!r} has hooks registered; CUDA graphs cannot capture them")
            self.wrappers[path] = module.forward = _GraphedForward(module, self.max_graphs, self.warmup_iters)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Restore the plain forwards (and free the graphs) so the model pickles and runs anywhere."""
        self.final_stats = self.stats()
        for path in self.wrappers:
            module = resolve_submodule(pl_module, path, owner="CUDAGraphModules")
            if isinstance(module.__dict__.get("forward"), _GraphedForward):
                del module.forward
        self.wrappers = {}

    def stats(self) -> dict[str, dict[str, int]]:
        """``{path: {"graphs", "replays", "eager_calls"}}`` since setup."""
        return {path: {"graphs": len(w.graphs), "replays": w.replays, "eager_calls": w.eager_calls}
                for path, w in self.wrappers.items()}
