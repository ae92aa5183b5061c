"""Neuron-level unlearning (Chang et al. 2024, as used by TinyMem): score every MLP neuron on the memorized set, then
ablate the top ``ratio`` fraction of neurons **per layer** by zeroing their input weights and biases.

Count per layer: ``floor(ratio · inner_dim)`` as in the TinyMem code; a ratio that selects no neuron is an error
(the code silently did nothing). Scores:

- **Zero-Out**: increase of the memorized-set loss when the neuron alone is ablated. (One stored TinyMem version
  builds the inverted mask - it keeps only that neuron and ablates the rest of the layer - which measures something
  else; we ablate the single neuron, as Chang et al. define the method.)
- **Activations**: mean |activation| over the continuation positions × the L2 norm of the neuron's output weights.
- **Slimming**: learned per-neuron coefficients in [0, 1] minimising memorized loss + λ·mean|coef| (Adam); the
  neurons that keep the largest coefficients are the ones memorization needs.
- **Hard Concrete**: L0 hard-concrete gates (Louizos et al. 2018) with the same objective; score = sigmoid(log α).
- **Integrated Gradients**: per continuation position, IG of the probability of the next (memorized) token w.r.t.
  the neuron's activation at that position (baseline 0, Riemann sum over ``ig_steps`` scales k/m, k = 1..m);
  averaged over positions and sequences (Dai et al. 2022 knowledge neurons).
"""

from __future__ import annotations

import abc
import math
from typing import Any

import torch
from torch import Tensor, nn

from framework.validation import require_non_negative, require_positive
from framework.models.components.tinymem.unlearning.base import UnlearningMethod, model_device
from framework.models.components.tinymem.unlearning.mlp_locator import MLPBlock, neuron_hook, neuron_hooks
from framework.models.components.tinymem.unlearning.unlearning_data import UnlearningData, batches, token_nll

__all__ = ["NeuronUnlearning", "ZeroOut", "Activations", "Slimming", "HardConcrete", "IntegratedGradients"]


def _freeze(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def _loss_sums(model: nn.Module, ids: Tensor, ignore: int | None) -> tuple[Tensor, Tensor]:
    """Summed token NLL and token count of ``ids [B, T]``."""
    nll, weights = token_nll(model(input_ids=ids).logits, ids, ignore)
    return (nll * weights).sum(), weights.sum()


class NeuronUnlearning(UnlearningMethod):
    """Score neurons (:meth:`score`), then zero the input weights of the top ``floor(ratio · I)`` per layer."""

    level = "neuron"

    @abc.abstractmethod
    def score(self, model: nn.Module, blocks: list[MLPBlock], data: UnlearningData,
              generator: torch.Generator) -> list[Tensor]:
        """One score ``[I]`` per block; higher = more responsible for the memorized sequences."""

    def neurons_per_layer(self, block: MLPBlock) -> int:
        k = int(math.floor(block.inner_dim * self.ratio))
        if k == 0:
            raise ValueError(f"ratio={self.ratio} ablates floor({self.ratio} * {block.inner_dim}) = 0 neurons of "
                             f"{block.name}; use ratio >= {1 / block.inner_dim:.3g}")
        return k

    def apply(self, model, blocks, data, generator):
        counts = [self.neurons_per_layer(b) for b in blocks]  # validate before the (slow) scoring
        _freeze(model)
        scores = self.score(model, blocks, data, generator)
        chosen = {}
        for block, block_scores, k in zip(blocks, scores, counts, strict=True):
            if block_scores.shape != (block.inner_dim,) or not torch.isfinite(block_scores).all():
                raise RuntimeError(f"{self.name} produced invalid scores for {block.name}: shape "
                                   f"{tuple(block_scores.shape)}, finite={bool(torch.isfinite(block_scores).all())}")
            idx = torch.topk(block_scores, k).indices
            block.zero_neurons(idx)
            chosen[block.name] = sorted(idx.tolist())
        details: dict[str, Any] = {"neurons": chosen, **getattr(self, "last_details", {})}
        return sum(counts), sum(b.inner_dim for b in blocks), details


class ZeroOut(NeuronUnlearning):
    """Zero-Out: score = memorized loss with the neuron ablated − loss of the intact model.

    Args:
        neurons_per_pass: ablations evaluated in one forward pass (the batch is replicated that many times).
        ratio, layers, batch_size, seed: see ``UnlearningMethod``.
    """

    name = "Zero-Out"

    def __init__(self, *, ratio: float, layers=None, batch_size: int = 64, seed: int = 0,
                 neurons_per_pass: int = 8) -> None:
        super().__init__(ratio=ratio, layers=layers, batch_size=batch_size, seed=seed)
        require_positive("neurons_per_pass", neurons_per_pass)
        self.neurons_per_pass = int(neurons_per_pass)

    @torch.no_grad()
    def score(self, model, blocks, data, generator):
        device = model_device(model)
        ids = data.memorized.to(device)
        base_sum = base_count = 0.0
        for rows in batches(ids, self.batch_size):
            s, c = _loss_sums(model, ids[rows], data.ignore_token_id)
            base_sum, base_count = base_sum + s, base_count + c
        base = base_sum / base_count
        scores = []
        for block in blocks:
            losses = torch.zeros(block.inner_dim, device=device)
            for neurons in torch.arange(block.inner_dim, device=device).split(self.neurons_per_pass):
                c = len(neurons)
                masks = torch.ones(c, block.inner_dim, device=device)
                masks[torch.arange(c, device=device), neurons] = 0.0
                sums = torch.zeros(c, device=device)
                count = 0.0
                for rows in batches(ids, self.batch_size):
                    batch = ids[rows]
                    b = batch.shape[0]

                    def ablate(a: Tensor, masks=masks, b=b, c=c) -> Tensor:
                        return (a.view(c, b, *a.shape[1:]) * masks.view(c, 1, *([1] * (a.dim() - 2)), -1)).view_as(a)

                    with neuron_hook(block, ablate):
                        logits = model(input_ids=batch.repeat(c, 1)).logits
                    nll, weights = token_nll(logits, batch.repeat(c, 1), data.ignore_token_id)
                    sums += (nll * weights).view(c, -1).sum(1)
                    count += float(weights[:b].sum())
                losses[neurons] = sums / count
            scores.append((losses - base).cpu())
        return scores


class Activations(NeuronUnlearning):
    """Activations: mean |activation| over continuation positions × ‖output weights‖₂ of the neuron."""

    name = "Activations"

    @torch.no_grad()
    def score(self, model, blocks, data, generator):
        device = model_device(model)
        ids = data.memorized.to(device)
        start = data.prompt_len - 1
        sums = [torch.zeros(b.inner_dim, device=device) for b in blocks]
        count = 0

        def capture(i: int):
            def fn(a: Tensor) -> Tensor:
                sums[i].add_(a[:, start:-1].abs().float().sum(dim=(0, 1)))
                return a
            return fn

        with neuron_hooks(blocks, [capture(i) for i in range(len(blocks))]):
            for rows in batches(ids, self.batch_size):
                model(input_ids=ids[rows])
                count += len(rows) * (ids.shape[1] - 1 - start)
        return [(s / count * b.output_weights().float().norm(dim=1)).cpu() for s, b in zip(sums, blocks)]


class _LearnedMaskScoring(NeuronUnlearning):
    """Shared training loop of Slimming and Hard Concrete: a per-neuron mask trained on the memorized set."""

    def __init__(self, *, ratio: float, layers=None, batch_size: int = 64, seed: int = 0, epochs: int = 10,
                 lr: float = 1e-2, lambda_l1: float = 1000.0, stop_loss: float = 0.1) -> None:
        super().__init__(ratio=ratio, layers=layers, batch_size=batch_size, seed=seed)
        require_positive("epochs", epochs)
        require_positive("lr", lr)
        require_non_negative("lambda_l1", lambda_l1)
        require_non_negative("stop_loss", stop_loss)
        self.epochs, self.lr, self.lambda_l1, self.stop_loss = int(epochs), float(lr), float(lambda_l1), float(stop_loss)

    @abc.abstractmethod
    def init_parameters(self, blocks: list[MLPBlock], device, generator) -> list[Tensor]: ...

    @abc.abstractmethod
    def gate(self, param: Tensor, generator: torch.Generator) -> Tensor: ...

    @abc.abstractmethod
    def penalty(self, params: list[Tensor]) -> Tensor: ...

    @abc.abstractmethod
    def final_scores(self, param: Tensor) -> Tensor: ...

    def project(self, params: list[Tensor]) -> None:
        """Keep the parameters feasible after a step (nothing by default)."""

    def score(self, model, blocks, data, generator):
        device = model_device(model)
        ids = data.memorized.to(device)
        params = self.init_parameters(blocks, device, generator)
        optimizer = torch.optim.Adam(params, lr=self.lr)
        steps = 0
        with torch.no_grad():
            penalty = self.penalty(params)
        for _ in range(self.epochs):
            for rows in batches(ids, self.batch_size, shuffle=True, generator=generator):
                gates = [self.gate(p, generator) for p in params]
                with neuron_hooks(blocks, [lambda a, g=g: a * g.to(a.dtype) for g in gates]):
                    loss_sum, count = _loss_sums(model, ids[rows], data.ignore_token_id)
                penalty = self.penalty(params)
                loss = loss_sum / count + self.lambda_l1 * penalty
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    self.project(params)
                steps += 1
                with torch.no_grad():
                    penalty = self.penalty(params)
                if float(penalty) < self.stop_loss:
                    break
            if float(penalty) < self.stop_loss:
                break
        self.last_details = {"steps": steps, "final_penalty": float(penalty)}
        return [self.final_scores(p.detach()).cpu() for p in params]


class Slimming(_LearnedMaskScoring):
    """Slimming: coefficients in [0, 1] (init 1) times each activation; loss + λ·mean|coef| on the memorized set.

    Args:
        epochs: passes over the memorized set; lr: Adam step; lambda_l1: λ (TinyMem default 1000);
        stop_loss: stop once mean|coef| falls below it. ratio, layers, batch_size, seed: see ``UnlearningMethod``.
    """

    name = "Slimming"

    def init_parameters(self, blocks, device, generator):
        return [torch.ones(b.inner_dim, device=device, requires_grad=True) for b in blocks]

    def gate(self, param, generator):
        return param

    def penalty(self, params):
        return torch.cat(params).abs().mean()

    def project(self, params):
        for p in params:
            p.clamp_(0.0, 1.0)

    def final_scores(self, param):
        return param


class HardConcrete(_LearnedMaskScoring):
    """Hard Concrete: L0 gates z = clamp(sigmoid((logit u + log α)/β)·(r − l) + l, 0, 1) on each activation.

    Args:
        init_mean: initial keep probability p (log α starts at log((1 − p)/p) + N(0, 0.01²), as in Chang et al.).
        beta, stretch: temperature β and stretch interval (l, r).
        epochs, lr, lambda_l1, stop_loss: as ``Slimming`` (the penalty is the mean expected L0 norm).
    """

    name = "Hard Concrete"

    def __init__(self, *, ratio: float, layers=None, batch_size: int = 64, seed: int = 0, epochs: int = 10,
                 lr: float = 1e-2, lambda_l1: float = 1000.0, stop_loss: float = 0.1, init_mean: float = 0.5,
                 beta: float = 2.0 / 3.0, stretch: tuple[float, float] = (-0.1, 1.1)) -> None:
        super().__init__(ratio=ratio, layers=layers, batch_size=batch_size, seed=seed, epochs=epochs, lr=lr,
                         lambda_l1=lambda_l1, stop_loss=stop_loss)
        if not 0.0 < init_mean < 1.0:
            raise ValueError(f"init_mean must lie in (0, 1), got {init_mean!r}")
        require_positive("beta", beta)
        low, high = stretch
        if not (low < 0.0 and high > 1.0):
            raise ValueError(f"stretch must be (l, r) with l < 0 < 1 < r, got {stretch!r}")
        self.init_mean, self.beta, self.low, self.high = float(init_mean), float(beta), float(low), float(high)

    def init_parameters(self, blocks, device, generator):
        mean = math.log(1 - self.init_mean) - math.log(self.init_mean)
        return [(mean + 0.01 * torch.randn(b.inner_dim, generator=generator)).to(device).requires_grad_()
                for b in blocks]

    def gate(self, param, generator):
        u = torch.rand(param.shape, generator=generator).clamp(1e-6, 1 - 1e-6).to(param.device)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + param) / self.beta)
        return (s * (self.high - self.low) + self.low).clamp(0.0, 1.0)

    def penalty(self, params):
        shift = self.beta * math.log(-self.low / self.high)
        return torch.sigmoid(torch.cat(params) - shift).mean()

    def final_scores(self, param):
        return torch.sigmoid(param)


class IntegratedGradients(NeuronUnlearning):
    """Integrated Gradients of the next-token probability w.r.t. each neuron's activation, per continuation position.

    Exact per position: row (t, α) of a batch replaces the activation at position t by α·a_t and reads the
    probability of token t+1 at position t (a causal model's position-t output does not see later tokens, so one
    forward pass evaluates many (t, α) rows).

    Args:
        ig_steps: Riemann steps m (TinyMem grid {1, 10, 20}; its full-data wrapper uses 20).
        max_sequences: score on at most this many memorized sequences (the first ones; ``None``: all). IG costs
            ``m · (T - prompt_len)`` forward rows per sequence and layer.
        rows_per_pass: (position, scale) rows per forward pass.
        ratio, layers, batch_size, seed: see ``UnlearningMethod`` (batch_size is unused).
    """

    name = "Integrated Gradients"

    def __init__(self, *, ratio: float, layers=None, batch_size: int = 64, seed: int = 0, ig_steps: int = 20,
                 max_sequences: int | None = None, rows_per_pass: int = 256) -> None:
        super().__init__(ratio=ratio, layers=layers, batch_size=batch_size, seed=seed)
        require_positive("ig_steps", ig_steps)
        require_positive("rows_per_pass", rows_per_pass)
        if max_sequences is not None:
            require_positive("max_sequences", max_sequences)
        self.ig_steps, self.max_sequences, self.rows_per_pass = int(ig_steps), max_sequences, int(rows_per_pass)

    def score(self, model, blocks, data, generator):
        device = model_device(model)
        ids = data.memorized if self.max_sequences is None else data.memorized[: self.max_sequences]
        ids = ids.to(device)
        seq_len = ids.shape[1]
        positions = torch.arange(data.prompt_len - 1, seq_len - 1, device=device)
        scales = torch.arange(1, self.ig_steps + 1, device=device, dtype=torch.float32) / self.ig_steps
        row_pos = positions.repeat_interleave(self.ig_steps)
        row_scale = scales.repeat(len(positions))
        scores = []
        for block in blocks:
            total = torch.zeros(block.inner_dim, device=device)
            for seq in ids:
                store: dict[str, Tensor] = {}

                def keep(a: Tensor) -> Tensor:
                    store["act"] = a[0].detach().float()
                    return a

                with torch.no_grad(), neuron_hook(block, keep):
                    model(input_ids=seq[None])
                act = store["act"]  # [T, I]
                grad_sum = torch.zeros(seq_len, block.inner_dim, device=device)
                for chunk in torch.arange(len(row_pos), device=device).split(self.rows_per_pass):
                    pos, scale = row_pos[chunk], row_scale[chunk]
                    rows = torch.arange(len(chunk), device=device)
                    length = int(pos.max()) + 1
                    z = (act[pos] * scale[:, None]).requires_grad_(True)

                    def patch(a: Tensor, z=z, pos=pos, rows=rows) -> Tensor:
                        a = a.clone()
                        a[rows, pos] = z.to(a.dtype)
                        return a

                    with neuron_hook(block, patch):
                        logits = model(input_ids=seq[:length].expand(len(chunk), length)).logits
                    probs = torch.softmax(logits[rows, pos].float(), dim=-1)[rows, seq[pos + 1]]
                    (grad,) = torch.autograd.grad(probs.sum(), z)
                    grad_sum.index_add_(0, pos, grad)
                ig = act[positions] * grad_sum[positions] / self.ig_steps  # [P, I]
                total += ig.mean(0)
            scores.append((total / len(ids)).cpu())
        return scores
