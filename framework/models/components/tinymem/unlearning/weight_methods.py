"""Weight-level unlearning by scoring individual MLP weights (biases are never touched).

- **Greedy** (Maini et al. 2023): repeatedly, on a mixed batch (memorized label +1, clean label −1), take the
  gradient g of J = mean(−label · per-sequence loss) = (clean loss − memorized loss) and zero the weight with the
  largest w·g, i.e. the one whose removal decreases J most to first order; ``ratio · #MLP weights`` weights in all.
  ``weights_per_step`` > 1 zeroes that many per gradient (our speed knob; 1 = the original).
- **Durable**: accumulate |∂L_mem/∂w| over the memorized set and zero the top ``ratio`` of each weight matrix.
- **Durable-aggregate**: the same with one global top-k over all MLP weights.
- **Second-Order Unlearning** (TinyMem's ``obs``): empirical Fisher F = λI + (1/G)Σ g gᵀ of G memorized-set
  gradients, block-diagonal with blocks of ``block_size`` consecutive weights; OBS saliency w²/(2[F⁻¹]_ii) (the loss
  increase of removing the weight); zero the top ``ratio`` globally. Each gradient is computed from scratch (the
  public code forgot ``zero_grad`` and summed them). The block inverses are exact (``torch.linalg.inv`` in float64),
  equal to the WoodFisher recursion the public code runs.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
from torch import Tensor, nn

from framework.validation import require_non_negative, require_positive
from framework.models.components.tinymem.unlearning.base import UnlearningMethod, model_device
from framework.models.components.tinymem.unlearning.mlp_locator import MLPBlock, mlp_weight_parameters
from framework.models.components.tinymem.unlearning.unlearning_data import (
    UnlearningData,
    batches,
    exclude_rows,
    sequence_nll,
    token_nll,
)

__all__ = ["Greedy", "Durable", "DurableAggregate", "SecondOrderUnlearning", "mixed_pool"]


def _prepare(model: nn.Module, blocks: list[MLPBlock]) -> dict[str, nn.Parameter]:
    for p in model.parameters():
        p.requires_grad_(False)
    weights = mlp_weight_parameters(blocks)
    for w in weights.values():
        w.requires_grad_(True)
    return weights


def mixed_pool(data: UnlearningData, method: str, exclude_memorized: bool) -> tuple[Tensor, Tensor]:
    """``(ids [N + M, T], is_memorized [N + M])``: the memorized set followed by the clean pool.

    With ``exclude_memorized`` the clean pool loses every row equal to a memorized one (TinyMem's driver put the noise
    set - the memorized sequences included - into the clean pool, so part of the objective pushed back).
    """
    clean = data.require_clean(method)
    if clean.shape[1] != data.memorized.shape[1]:
        raise ValueError(f"{method} mixes memorized and clean rows in one batch, so they need the same length; got "
                         f"T={data.memorized.shape[1]} (memorized) and T={clean.shape[1]} (clean)")
    if exclude_memorized:
        clean = exclude_rows(clean, data.memorized)
        if clean.shape[0] == 0:
            raise ValueError(f"{method}: every clean row is also a memorized row; nothing is left to balance against")
    ids = torch.cat([data.memorized, clean.to(data.memorized.dtype)])
    is_mem = torch.cat([torch.ones(len(data.memorized), dtype=torch.bool), torch.zeros(len(clean), dtype=torch.bool)])
    return ids, is_mem


def _count(ratio: float, numel: int, what: str) -> int:
    k = int(ratio * numel)
    if k == 0:
        raise ValueError(f"ratio={ratio} removes int({ratio} * {numel}) = 0 {what}; use ratio >= {1 / numel:.3g}")
    return k


class Greedy(UnlearningMethod):
    """Greedy weight removal on mixed memorized / clean batches.

    Args:
        weights_per_step: weights zeroed per gradient (1 = Maini et al.'s one-at-a-time).
        exclude_memorized_from_clean: drop memorized rows from the clean pool (see :func:`mixed_pool`).
        ratio, layers, batch_size, seed: see ``UnlearningMethod``.
    """

    name = "Greedy"
    level = "weight"

    def __init__(self, *, ratio: float, layers=None, batch_size: int = 64, seed: int = 0, weights_per_step: int = 1,
                 exclude_memorized_from_clean: bool = True) -> None:
        super().__init__(ratio=ratio, layers=layers, batch_size=batch_size, seed=seed)
        require_positive("weights_per_step", weights_per_step)
        self.weights_per_step = int(weights_per_step)
        self.exclude_memorized_from_clean = bool(exclude_memorized_from_clean)

    def apply(self, model, blocks, data, generator):
        device = model_device(model)
        ids, is_mem = mixed_pool(data, self.name, self.exclude_memorized_from_clean)
        ids, labels = ids.to(device), torch.where(is_mem, 1.0, -1.0).to(device)
        weights = _prepare(model, blocks)
        params = list(weights.values())
        total = sum(w.numel() for w in params)
        target = _count(self.ratio, total, "MLP weights")
        pruned = [torch.zeros_like(w, dtype=torch.bool) for w in params]
        sizes = [w.numel() for w in params]
        removed = steps = 0
        while removed < target:
            for rows in batches(ids, self.batch_size, shuffle=True, generator=generator):
                nll = sequence_nll(model, ids[rows], data.ignore_token_id)
                objective = (-labels[rows] * nll).mean()
                grads = torch.autograd.grad(objective, params)
                with torch.no_grad():
                    score = torch.cat([(w * g).flatten() for w, g in zip(params, grads)])
                    score[torch.cat([m.flatten() for m in pruned])] = -math.inf
                    k = min(self.weights_per_step, target - removed)
                    flat = torch.topk(score, k).indices
                    for i, (w, m) in enumerate(zip(params, pruned)):
                        offset = sum(sizes[:i])
                        local = flat[(flat >= offset) & (flat < offset + sizes[i])] - offset
                        w.view(-1)[local] = 0.0
                        m.view(-1)[local] = True
                removed += k
                steps += 1
                if removed >= target:
                    break
        return removed, total, {"gradient_steps": steps}


def _memorized_gradient_magnitudes(model, weights: dict[str, nn.Parameter], data: UnlearningData,
                                   batch_size: int) -> list[Tensor]:
    device = model_device(model)
    ids = data.memorized.to(device)
    params = list(weights.values())
    sums = [torch.zeros_like(w) for w in params]
    for rows in batches(ids, batch_size):
        nll, mask = token_nll(model(input_ids=ids[rows]).logits, ids[rows], data.ignore_token_id)
        loss = (nll * mask).sum() / mask.sum().clamp_min(1)
        for s, g in zip(sums, torch.autograd.grad(loss, params)):
            s += g.abs()
    return sums


class Durable(UnlearningMethod):
    """Durable: zero the weights with the largest accumulated |∂L_mem/∂w|, top ``ratio`` of each weight matrix."""

    name = "Durable"
    level = "weight"
    per_matrix = True

    def apply(self, model, blocks, data, generator):
        weights = _prepare(model, blocks)
        params = list(weights.values())
        total = sum(w.numel() for w in params)
        if self.per_matrix:
            counts = [_count(self.ratio, w.numel(), "weights of a matrix") for w in params]
        else:
            counts = [_count(self.ratio, total, "MLP weights")]
        sums = _memorized_gradient_magnitudes(model, weights, data, self.batch_size)
        with torch.no_grad():
            if self.per_matrix:
                for w, s, k in zip(params, sums, counts):
                    w.view(-1)[torch.topk(s.flatten(), k).indices] = 0.0
            else:
                _zero_global_top(params, torch.cat([s.flatten() for s in sums]), counts[0])
        return sum(counts), total, {}


class DurableAggregate(Durable):
    """Durable-aggregate: Durable's score with one global top-k over all MLP weights."""

    name = "Durable-aggregate"
    per_matrix = False


def _zero_global_top(params: list[Tensor], score: Tensor, k: int) -> None:
    flat = torch.topk(score, k).indices
    offset = 0
    for w in params:
        local = flat[(flat >= offset) & (flat < offset + w.numel())] - offset
        w.view(-1)[local] = 0.0
        offset += w.numel()


class SecondOrderUnlearning(UnlearningMethod):
    """Second-Order Unlearning: block-diagonal empirical-Fisher OBS saliency on the memorized set.

    Args:
        num_grads: G, memorized-set gradients in the Fisher estimate (TinyMem: 512).
        grad_batch_size: sequences per gradient (1 = per-sequence gradients; cycles through the set).
        block_size: consecutive weights per Fisher block (TinyMem: 50).
        damping: λ added to the Fisher diagonal (TinyMem: 1e-7).
        ratio, layers, batch_size, seed: see ``UnlearningMethod`` (batch_size is unused).
    """

    name = "Second-Order Unlearning"
    level = "weight"

    def __init__(self, *, ratio: float, layers=None, batch_size: int = 64, seed: int = 0, num_grads: int = 512,
                 grad_batch_size: int = 1, block_size: int = 50, damping: float = 1e-7) -> None:
        super().__init__(ratio=ratio, layers=layers, batch_size=batch_size, seed=seed)
        require_positive("num_grads", num_grads)
        require_positive("grad_batch_size", grad_batch_size)
        require_positive("block_size", block_size)
        require_non_negative("damping", damping)
        self.num_grads, self.grad_batch_size = int(num_grads), int(grad_batch_size)
        self.block_size, self.damping = int(block_size), float(damping)

    def apply(self, model, blocks, data, generator):
        device = model_device(model)
        weights = _prepare(model, blocks)
        params = list(weights.values())
        total = sum(w.numel() for w in params)
        k = _count(self.ratio, total, "MLP weights")
        n_blocks = math.ceil(total / self.block_size)
        padded = n_blocks * self.block_size
        fisher = torch.zeros(n_blocks, self.block_size, self.block_size, dtype=torch.float64, device=device)
        ids = data.memorized.to(device)

        def row_batches():
            while True:
                yield from batches(ids, self.grad_batch_size, shuffle=True, generator=generator)

        for rows in itertools.islice(row_batches(), self.num_grads):
            nll, mask = token_nll(model(input_ids=ids[rows]).logits, ids[rows], data.ignore_token_id)
            loss = (nll * mask).sum() / mask.sum().clamp_min(1)
            grads = torch.autograd.grad(loss, params)  # fresh gradient each time
            g = torch.zeros(padded, dtype=torch.float64, device=device)
            g[:total] = torch.cat([x.flatten() for x in grads]).double()
            g = g.view(n_blocks, self.block_size)
            fisher += g[:, :, None] * g[:, None, :]
        fisher /= self.num_grads
        fisher += self.damping * torch.eye(self.block_size, dtype=torch.float64, device=device)
        # Padding weights have zero gradient; their diagonal is λ > 0 (or they would make the block singular).
        if self.damping == 0.0:
            fisher += 1e-12 * torch.eye(self.block_size, dtype=torch.float64, device=device)
        inverse_diag = torch.linalg.inv(fisher).diagonal(dim1=1, dim2=2).reshape(-1)[:total]
        w = torch.cat([p.detach().flatten() for p in params]).double()
        saliency = w.square() / (2.0 * inverse_diag)
        with torch.no_grad():
            _zero_global_top(params, saliency.float(), k)
        return k, total, {"num_grads": self.num_grads, "fisher_blocks": n_blocks}
