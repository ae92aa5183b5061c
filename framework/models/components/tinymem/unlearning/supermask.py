"""Supermask unlearning (edge-popup, Ramanujan et al. 2020, as adapted by TinyMem): Subnet and BalancedSubnet.

The weights stay frozen. Every MLP weight matrix W gets a score tensor S (kaiming-uniform, a = √5, like W's shape);
the forward pass uses W ⊙ M with M zeroing the ``floor(ratio · numel)`` entries of smallest |S| in that matrix and
a straight-through gradient (∂M/∂|S| = 1). The scores are trained with SGD (lr 0.1, momentum 0.9, weight decay
5e-4, batch 64); afterwards the final mask is baked into the weights, so exactly that many weights of each MLP
matrix are zeroed and nothing else changes.

- **Subnet**: gradient *ascent* on the memorized-set LM loss.
- **BalancedSubnet**: batches drawn from memorized ∪ clean (shuffled) minimise
  L = −(1 − α)·mean L_mem + α·mean L_clean (α = ``loss_weighting``, 0.05 in the latest TinyMem code). Fixes of the
  public code: a batch without memorized (or without clean) rows drops that term instead of producing NaN, and the
  clean pool excludes the memorized rows by default.
"""

from __future__ import annotations

import abc
import math

import torch
from torch import Tensor, nn
from torch.func import functional_call

from framework.validation import require_in_range, require_non_negative, require_positive
from framework.models.components.tinymem.unlearning.base import UnlearningMethod, model_device
from framework.models.components.tinymem.unlearning.mlp_locator import mlp_weight_parameters
from framework.models.components.tinymem.unlearning.unlearning_data import batches, token_nll
from framework.models.components.tinymem.unlearning.weight_methods import mixed_pool

__all__ = ["Subnet", "BalancedSubnet", "supermask", "balanced_loss"]


class _StraightThroughTopK(torch.autograd.Function):
    """Forward: 0 for the ``k`` smallest entries, 1 elsewhere (exact). Backward: the identity (straight-through)."""

    @staticmethod
    def forward(ctx, magnitude: Tensor, k: int) -> Tensor:
        hard = torch.ones_like(magnitude)
        if k:
            hard.view(-1)[torch.argsort(magnitude.flatten())[:k]] = 0.0
        return hard

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


def supermask(scores: Tensor, ratio: float) -> Tensor:
    """Mask (same shape as ``scores``) zeroing the ``floor(ratio · numel)`` smallest |scores|; straight-through grad."""
    return _StraightThroughTopK.apply(scores.abs(), int(ratio * scores.numel()))


def balanced_loss(nll: Tensor, is_memorized: Tensor, alpha: float) -> Tensor:
    """−(1 − α)·mean(nll[memorized]) + α·mean(nll[clean]); an empty group contributes 0 (never NaN)."""
    zero = nll.sum() * 0.0
    mem, clean = nll[is_memorized], nll[~is_memorized]
    forget = mem.mean() if mem.numel() else zero
    keep = clean.mean() if clean.numel() else zero
    return -(1.0 - alpha) * forget + alpha * keep


class _SupermaskUnlearning(UnlearningMethod):
    level = "weight"

    def __init__(self, *, ratio: float, layers=None, batch_size: int = 64, seed: int = 0, epochs: int = 10,
                 lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 5e-4) -> None:
        super().__init__(ratio=ratio, layers=layers, batch_size=batch_size, seed=seed)
        require_positive("epochs", epochs)
        require_positive("lr", lr)
        require_in_range("momentum", momentum, 0.0, 1.0, high_inclusive=False)
        require_non_negative("weight_decay", weight_decay)
        self.epochs, self.lr, self.momentum, self.weight_decay = int(epochs), float(lr), float(momentum), float(weight_decay)

    def training_rows(self, data) -> tuple[Tensor, Tensor]:
        """``(ids [R, T], is_memorized [R])`` the scores are trained on."""
        return data.memorized, torch.ones(len(data.memorized), dtype=torch.bool)

    @abc.abstractmethod
    def loss(self, nll: Tensor, is_memorized: Tensor) -> Tensor:
        """Objective to minimise from per-sequence losses ``nll [B]``."""

    def apply(self, model, blocks, data, generator):
        device = model_device(model)
        ids, is_mem = self.training_rows(data)
        ids, is_mem = ids.to(device), is_mem.to(device)
        for p in model.parameters():
            p.requires_grad_(False)
        weights = mlp_weight_parameters(blocks)
        for name, w in weights.items():
            if int(self.ratio * w.numel()) == 0:
                raise ValueError(f"ratio={self.ratio} masks int({self.ratio} * {w.numel()}) = 0 weights of {name}; "
                                 f"use ratio >= {1 / w.numel():.3g}")
        scores = {}
        for name, w in weights.items():
            s = torch.empty(w.shape, dtype=torch.float32)
            nn.init.kaiming_uniform_(s, a=math.sqrt(5), generator=generator)
            scores[name] = s.to(device).requires_grad_(True)
        optimizer = torch.optim.SGD(scores.values(), lr=self.lr, momentum=self.momentum,
                                    weight_decay=self.weight_decay)
        steps, last = 0, float("nan")
        for _ in range(self.epochs):
            for rows in batches(ids, self.batch_size, shuffle=True, generator=generator):
                masked = {n: w * supermask(scores[n], self.ratio).to(w.dtype) for n, w in weights.items()}
                logits = functional_call(model, masked, args=(), kwargs={"input_ids": ids[rows]}).logits
                nll, mask = token_nll(logits, ids[rows], data.ignore_token_id)
                per_sequence = (nll * mask).sum(1) / mask.sum(1).clamp_min(1)
                loss = self.loss(per_sequence, is_mem[rows])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                steps, last = steps + 1, float(loss.detach())
        edited = 0
        with torch.no_grad():
            for name, w in weights.items():
                hard = supermask(scores[name].detach(), self.ratio)
                w.mul_(hard.to(w.dtype))
                edited += int((hard == 0).sum())
        return edited, sum(w.numel() for w in weights.values()), {"steps": steps, "final_loss": last}


class Subnet(_SupermaskUnlearning):
    """Subnet: supermask scores trained by gradient ascent on the memorized-set loss.

    Args:
        epochs, lr, momentum, weight_decay: SGD on the scores (TinyMem: epochs ∈ {1, 10, 30}, 0.1, 0.9, 5e-4).
        ratio, layers, batch_size, seed: see ``UnlearningMethod``; ``ratio`` = fraction of each MLP matrix masked.
    """

    name = "Subnet"

    def loss(self, nll, is_memorized):
        return -nll.mean()


class BalancedSubnet(_SupermaskUnlearning):
    """BalancedSubnet: supermask scores trained on mixed batches to forget the memorized set and keep the clean one.

    Args:
        loss_weighting: α in L = −(1 − α)·mean L_mem + α·mean L_clean (TinyMem: 0.05).
        exclude_memorized_from_clean: drop memorized rows from the clean pool (TinyMem kept them; True fixes it).
        epochs, lr, momentum, weight_decay, ratio, layers, batch_size, seed: as ``Subnet``.
    """

    name = "BalancedSubnet"

    def __init__(self, *, ratio: float, layers=None, batch_size: int = 64, seed: int = 0, epochs: int = 10,
                 lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 5e-4, loss_weighting: float = 0.05,
                 exclude_memorized_from_clean: bool = True) -> None:
        super().__init__(ratio=ratio, layers=layers, batch_size=batch_size, seed=seed, epochs=epochs, lr=lr,
                         momentum=momentum, weight_decay=weight_decay)
        require_in_range("loss_weighting", loss_weighting, 0.0, 1.0)
        self.loss_weighting = float(loss_weighting)
        self.exclude_memorized_from_clean = bool(exclude_memorized_from_clean)

    def training_rows(self, data):
        return mixed_pool(data, self.name, self.exclude_memorized_from_clean)

    def loss(self, nll, is_memorized):
        return balanced_loss(nll, is_memorized, self.loss_weighting)
