"""Common shape of the 11 unlearning methods: validated keyword-only settings, ``method(model, data) -> result``.

Every method edits the model **in place**, touching only the MLP blocks found by
:func:`~framework.models.components.tinymem.unlearning.mlp_locator.locate_mlp_blocks` (optionally restricted to ``layers``);
parameters are never left with ``requires_grad`` changed and the model is returned in the mode it came in.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from framework.validation import require_in_range, require_positive
from framework.models.components.tinymem.unlearning.mlp_locator import MLPBlock, locate_mlp_blocks
from framework.models.components.tinymem.unlearning.unlearning_data import UnlearningData

__all__ = ["UnlearningMethod", "UnlearningResult", "model_device"]


@dataclass
class UnlearningResult:
    """What a method did.

    Attributes:
        method: paper name of the method.
        ratio: the pruning ratio it was given.
        edited: neurons ablated (neuron-level) or weights zeroed (weight-level).
        total: neurons / MLP weights it could have edited.
        layers: indices of the MLP blocks it looked at.
        seconds: wall-clock time of the call.
        details: method-specific numbers (steps run, final losses, ...).
    """

    method: str
    ratio: float
    edited: int
    total: int
    layers: list[int]
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class UnlearningMethod(abc.ABC):
    """Base of the unlearning methods.

    Args:
        ratio: fraction in (0, 1) of the neurons (per layer) or MLP weights to remove.
        layers: MLP block indices to edit (``None``: all; negatives count from the end).
        batch_size: sequences per forward pass.
        seed: seeds every random choice of the method (shuffles, initial scores, sampled masks).
    """

    name: ClassVar[str]
    level: ClassVar[str]  # "neuron" or "weight"

    def __init__(self, *, ratio: float, layers: Sequence[int] | None = None, batch_size: int = 64,
                 seed: int = 0) -> None:
        require_in_range("ratio", ratio, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        require_positive("batch_size", batch_size)
        if layers is not None and (isinstance(layers, (str, bytes)) or len(layers) == 0):
            raise ValueError(f"layers must be None (all MLP blocks) or a non-empty list of block indices, got {layers!r}")
        self.ratio = float(ratio)
        self.layers = None if layers is None else list(layers)
        self.batch_size = batch_size
        self.seed = int(seed)

    def __call__(self, model: nn.Module, data: UnlearningData) -> UnlearningResult:
        """Unlearn ``data.memorized`` from ``model`` in place; returns what was done."""
        if not isinstance(data, UnlearningData):
            raise ValueError(f"data must be an UnlearningData, got {type(data).__name__}")
        vocab = getattr(getattr(model, "config", None), "vocab_size", None)
        for split, ids in (("memorized", data.memorized), ("clean", data.clean)):
            if vocab is not None and ids is not None and ids.numel() and (int(ids.max()) >= vocab or int(ids.min()) < 0):
                raise ValueError(f"{split} holds token ids in [{int(ids.min())}, {int(ids.max())}] but the model's "
                                 f"vocabulary has {vocab} tokens: data and checkpoint do not match")
        blocks = locate_mlp_blocks(model, self.layers)
        requires_grad = {id(p): p.requires_grad for p in model.parameters()}
        was_training = model.training
        model.eval()  # dropout off; the methods that need sampling do it themselves
        generator = torch.Generator().manual_seed(self.seed)
        start = time.perf_counter()
        try:
            edited, total, details = self.apply(model, blocks, data, generator)
        finally:
            for p in model.parameters():
                p.requires_grad_(requires_grad[id(p)])
            model.train(was_training)
        return UnlearningResult(method=self.name, ratio=self.ratio, edited=int(edited), total=int(total),
                                layers=[b.layer for b in blocks], seconds=time.perf_counter() - start, details=details)

    @abc.abstractmethod
    def apply(self, model: nn.Module, blocks: list[MLPBlock], data: UnlearningData,
              generator: torch.Generator) -> tuple[int, int, dict[str, Any]]:
        """Edit ``model``; return ``(edited, total, details)``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(ratio={self.ratio}, layers={self.layers})"
