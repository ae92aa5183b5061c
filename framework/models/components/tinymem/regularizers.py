"""The three train-time memorization mitigations of TinyMem, as components injected into ``TinyMemLM``.

Every regularizer is an ``nn.Module`` (its state — power-iteration vectors, loss buffer, masks' seed — is saved in
the Lightning checkpoint) with three hooks the LightningModule calls:

* ``attach(model)`` once, with the ``GPT2LMHeadModel``;
* ``begin_batch(example_ids [B])`` before each training forward pass;
* ``training_loss(model, sequence_losses [B]) -> (loss, logs)``: the loss to minimise from the per-sequence mean
  next-token losses, and scalars to log.

Methods (research note A6, 1-3):

* :class:`SpectralNormRegularizer` (Yoshida & Miyato 2017): ``loss = mean + (λ/2)·Σ_W σ_max(W)`` (TinyMem's form;
  ``squared=True`` gives the paper's σ²); σ_max by one power-iteration step per training step with persistent
  vectors, over all
  weight matrices except embeddings, LayerNorms and biases; attention ``c_attn`` split into its 3×n_head per-head
  blocks and attention ``c_proj`` into n_head blocks.
* :class:`LossTruncation` (Kang & Hashimoto 2020): drop (weight 0) the sequences whose loss exceeds the
  (1 − drop_fraction) quantile of the last ``window`` sequence losses, recomputed every ``recompute_every`` losses.
* :class:`ExampleTiedDropout` (Maini et al. 2023): on the MLP hidden units of every block, a fixed fraction
  ``p_fixed`` of units (the "generalization" units) is always on; each remaining ("memorization") unit is on with
  probability ``p_mem`` through a mask tied to the example id. At evaluation the memorization units are dropped and the
  generalization units scaled by ``(p_fixed + p_mem) / p_fixed``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers import GPT2LMHeadModel

from framework.validation import require_in_range, require_positive

__all__ = ["TrainRegularizer", "SpectralNormRegularizer", "LossTruncation", "ExampleTiedDropout"]


class TrainRegularizer(nn.Module):
    """Base class: plain mean loss, no state (subclasses override the hooks)."""

    def attach(self, model: GPT2LMHeadModel) -> None:
        """Called once with the model to regularize."""

    def begin_batch(self, example_ids: Tensor | None) -> None:
        """Called before each training forward pass with the batch's example ids ``[B]``."""

    def end_batch(self) -> None:
        """Called after each training forward pass."""

    def training_loss(self, model: GPT2LMHeadModel, sequence_losses: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``(loss, logs)`` from the per-sequence losses ``[B]``."""
        return sequence_losses.mean(), {}


def _weight_blocks(model: GPT2LMHeadModel) -> list[tuple[str, Tensor]]:
    """``(name, block)`` of every matrix the spectral penalty sees (views into the weights, gradients flow)."""
    blocks: list[tuple[str, Tensor]] = []
    n_head = model.config.n_head
    for index, block in enumerate(model.transformer.h):
        attn_w = block.attn.c_attn.weight  # Conv1D [d, 3d]: x @ W, columns q | k | v
        d = attn_w.shape[0]
        head = d // n_head
        for part, name in enumerate("qkv"):
            for h in range(n_head):
                start = part * d + h * head
                blocks.append((f"h{index}.attn.{name}{h}", attn_w[:, start:start + head]))
        proj_w = block.attn.c_proj.weight  # [d, d]: input rows are the concatenated heads
        for h in range(n_head):
            blocks.append((f"h{index}.attn.proj{h}", proj_w[h * head:(h + 1) * head, :]))
        blocks.append((f"h{index}.mlp.c_fc", block.mlp.c_fc.weight))
        blocks.append((f"h{index}.mlp.c_proj", block.mlp.c_proj.weight))
    return blocks


class SpectralNormRegularizer(TrainRegularizer):
    """Spectral-norm regularization: ``loss = mean sequence loss + (λ/2) · Σ_blocks σ_max(W_block)`` (or σ²).

    TinyMem's code adds σ itself (default, so its λ grid {0.001, 0.01, 0.1} applies); Yoshida & Miyato (2017)
    penalise σ², whose gradient is ``λ·σ·u vᵀ`` (``squared=True``). σ is estimated with ``power_iterations`` steps
    of the power method per training step from persistent vectors ``u`` (the estimate improves over training, as in
    the paper); the gradient flows through ``uᵀ W v`` with u, v fixed.

    Args:
        strength: λ > 0 (TinyMem grid {0.001, 0.01, 0.1}).
        power_iterations: power-method steps per training step (>= 1).
        squared: penalise σ² (Yoshida & Miyato) instead of σ (TinyMem's code).
        seed: seed of the initial vectors.
    """

    def __init__(self, *, strength: float = 0.01, power_iterations: int = 1, squared: bool = False,
                 seed: int = 0) -> None:
        super().__init__()
        require_positive("strength", strength)
        if not isinstance(power_iterations, int) or power_iterations < 1:
            raise ValueError(f"power_iterations must be an integer >= 1, got {power_iterations!r}")
        self.strength = float(strength)
        self.power_iterations = power_iterations
        self.squared = squared
        self.seed = seed
        self.vectors = nn.ParameterDict()  # frozen "parameters" so they are saved and move with the module

    def attach(self, model: GPT2LMHeadModel) -> None:
        generator = torch.Generator().manual_seed(self.seed)
        for name, block in _weight_blocks(model):
            u = torch.randn(block.shape[0], generator=generator)
            self.vectors[name.replace(".", "_")] = nn.Parameter(u / u.norm(), requires_grad=False)

    def spectral_norms(self, model: GPT2LMHeadModel, *, update: bool = True) -> dict[str, Tensor]:
        """σ_max estimate per block (differentiable in the weights); ``update`` advances the power method."""
        sigmas = {}
        for name, block in _weight_blocks(model):
            key = name.replace(".", "_")
            if key not in self.vectors:
                raise RuntimeError("SpectralNormRegularizer.attach(model) was not called for this model")
            u = self.vectors[key]
            with torch.no_grad():
                w = block.detach().float()
                uu = u.to(w.device)
                for _ in range(self.power_iterations):
                    v = w.t() @ uu
                    v = v / v.norm().clamp_min(1e-12)
                    uu = w @ v
                    uu = uu / uu.norm().clamp_min(1e-12)
                if update:
                    u.copy_(uu)
            sigmas[name] = uu @ block @ v
        return sigmas

    def training_loss(self, model: GPT2LMHeadModel, sequence_losses: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        sigmas = torch.stack(list(self.spectral_norms(model).values()))
        penalty = 0.5 * self.strength * (sigmas.square().sum() if self.squared else sigmas.sum())
        base = sequence_losses.mean()
        return base + penalty, {"spectral_penalty": penalty.detach(), "max_spectral_norm": sigmas.detach().max()}


class LossTruncation(TrainRegularizer):
    """Loss truncation: sequences whose loss is above the (1 − ``drop_fraction``) quantile of recent losses get
    weight 0 (the batch loss is still divided by B, as in Kang & Hashimoto's ``LossDropper``).

    Nothing is dropped until ``window`` losses have been seen; the threshold is recomputed after every
    ``recompute_every`` new losses from a ring buffer of the last ``window`` ones. Under DDP each rank keeps its own
    buffer (the threshold is then a per-rank quantile).

    Args:
        drop_fraction: fraction of sequences dropped, in (0, 1) (TinyMem grid {0.01, 0.05, 0.1}).
        window: ring-buffer length (10000).
        recompute_every: losses between threshold updates (10000).
    """

    def __init__(self, *, drop_fraction: float = 0.05, window: int = 10000, recompute_every: int = 10000) -> None:
        super().__init__()
        require_in_range("drop_fraction", drop_fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        for name, value in (("window", window), ("recompute_every", recompute_every)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.drop_fraction = float(drop_fraction)
        self.window = window
        self.recompute_every = recompute_every
        self.register_buffer("buffer", torch.zeros(window, dtype=torch.float64))
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))
        self.register_buffer("since_recompute", torch.zeros((), dtype=torch.long))
        self.register_buffer("threshold", torch.tensor(float("inf"), dtype=torch.float64))

    def observe(self, losses: Tensor) -> None:
        """Push losses into the ring buffer and recompute the threshold when due."""
        values = losses.detach().double().reshape(-1).to(self.buffer.device)
        positions = (self.seen + torch.arange(len(values), device=values.device)) % self.window
        self.buffer[positions] = values
        self.seen += len(values)
        self.since_recompute += len(values)
        if int(self.seen) >= self.window and int(self.since_recompute) >= self.recompute_every:
            self.threshold.fill_(float(torch.quantile(self.buffer, 1.0 - self.drop_fraction)))
            self.since_recompute.zero_()

    def keep_mask(self, losses: Tensor) -> Tensor:
        """``BoolTensor [B]``: losses at or below the current threshold (all True before the first threshold)."""
        return losses.detach().double() <= self.threshold.to(losses.device)

    def training_loss(self, model: GPT2LMHeadModel, sequence_losses: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        keep = self.keep_mask(sequence_losses)
        self.observe(sequence_losses)
        loss = (sequence_losses * keep.to(sequence_losses.dtype)).mean()
        return loss, {"dropped_fraction": 1.0 - keep.float().mean()}


class ExampleTiedDropout(TrainRegularizer):
    """Example-tied dropout on the MLP hidden units (``mlp.act`` output, width n_inner) of every block.

    Training: units ``[0, ⌊p_fixed·H⌋)`` are always kept; each other unit j of example i is kept iff
    ``mask[i, j]``, a Bernoulli(``p_mem``) draw from a generator seeded by ``(seed, i)`` — the same mask every epoch
    and in every layer. Evaluation: memorization units are zeroed and generalization units scaled by
    ``(p_fixed + p_mem) / p_fixed``.

    Design note: the public TinyMem port applies the CNN mask along dimension 1, which for a ``[B, T, H]`` GPT-2
    activation is the *sequence position*, so it drops tokens, not neurons. We apply it to hidden units (the last
    dimension), which is what the method (Maini et al. 2023) defines and what localizes memorization in neurons.

    Args:
        p_fixed: fraction of always-on generalization units, in (0, 1) (0.2).
        p_mem: keep probability of each memorization unit, in (0, 1] (0.1).
        seed: seed of the per-example masks.
    """

    def __init__(self, *, p_fixed: float = 0.2, p_mem: float = 0.1, seed: int = 0) -> None:
        super().__init__()
        require_in_range("p_fixed", p_fixed, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        require_in_range("p_mem", p_mem, 0.0, 1.0, low_inclusive=False)
        self.p_fixed, self.p_mem, self.seed = float(p_fixed), float(p_mem), seed
        self._example_ids: Tensor | None = None
        self._masks: dict[int, Tensor] = {}
        self._handles: list[Any] = []
        self.hidden = 0

    @property
    def num_fixed(self) -> int:
        return int(self.p_fixed * self.hidden)

    def attach(self, model: GPT2LMHeadModel) -> None:
        for handle in self._handles:
            handle.remove()
        self.hidden = model.transformer.h[0].mlp.c_fc.weight.shape[1]
        if self.num_fixed < 1:
            raise ValueError(f"p_fixed={self.p_fixed} keeps no unit of the {self.hidden} MLP units")
        self._handles = [block.mlp.act.register_forward_hook(self._hook) for block in model.transformer.h]

    def example_mask(self, example_id: int) -> Tensor:
        """``BoolTensor [H - num_fixed]``: the memorization units kept for one example."""
        mask = self._masks.get(example_id)
        if mask is None:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + example_id)
            mask = torch.rand(self.hidden - self.num_fixed, generator=generator) < self.p_mem
            self._masks[example_id] = mask
        return mask

    def begin_batch(self, example_ids: Tensor | None) -> None:
        self._example_ids = example_ids

    def end_batch(self) -> None:
        self._example_ids = None

    def _hook(self, module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
        fixed = self.num_fixed
        if not module.training:
            scaled = output.clone()
            scaled[..., fixed:] = 0
            scaled[..., :fixed] *= (self.p_fixed + self.p_mem) / self.p_fixed
            return scaled
        if self._example_ids is None:
            raise RuntimeError("ExampleTiedDropout needs the example ids of a training batch (begin_batch); "
                               "batches must carry 'example_id'")
        if len(self._example_ids) != output.shape[0]:
            raise ValueError(f"{len(self._example_ids)} example ids for a batch of {output.shape[0]}")
        masks = torch.stack([self.example_mask(int(i)) for i in self._example_ids.tolist()]).to(output.device)
        keep = torch.cat([torch.ones(output.shape[0], fixed, dtype=torch.bool, device=output.device), masks], dim=1)
        return output * keep[:, None, :].to(output.dtype)
