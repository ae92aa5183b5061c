"""TinyMem's three fine-tuning mitigations, applied to a trained model (research note A6, 4-6).

* ``"clean"`` — fine-tune on the clean versions of the memorized (noised or backdoored) sequences;
* ``"extra"`` — on every training sequence except the memorized set (clean main family + auxiliary families);
* ``"both"`` — on the union of the two.

The paper runs 5 more epochs with the base-training optimiser (AdamW lr 1e-3, weight decay 0.1, betas (0.9, 0.98),
batch 128) and the same loss (all positions, pads included).

Two ways to run them:

* from a config — ``TinyMemLM(init_checkpoint=...)`` with the DataModule's ``train_on`` set to the method
  (``configs/tinymem/finetune_{clean,extra,both}.yaml``), which logs the metrics each epoch through the Trainer;
* from Python — :func:`fine_tune`, a plain loop used by benchmarks (returns a copy; the input model is untouched).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import GPT2LMHeadModel

from framework.validation import require_choice, require_positive

__all__ = ["FINE_TUNING_METHODS", "FineTuneResult", "fine_tune", "fine_tuning_sequences"]

FINE_TUNING_METHODS = ("clean", "extra", "both")


@dataclass
class FineTuneResult:
    """Output of :func:`fine_tune`.

    Attributes:
        model: the fine-tuned copy (eval mode).
        method: ``"clean"``, ``"extra"`` or ``"both"``.
        steps: optimiser steps taken.
        seconds: wall-clock time of the fine-tuning loop.
        losses: mean training loss per epoch.
    """

    model: GPT2LMHeadModel
    method: str
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)


def fine_tuning_sequences(datamodule, method: str) -> torch.Tensor:
    """``LongTensor [N, C]``: the training sequences of a fine-tuning method from a set-up TinyMem DataModule."""
    require_choice("method", method, FINE_TUNING_METHODS)
    if method == "clean":
        sequences = datamodule.memorized_clean_sequences
    elif method == "extra":
        sequences = datamodule.extra_sequences
    else:
        sequences = torch.cat([datamodule.memorized_clean_sequences, datamodule.extra_sequences])
    if len(sequences) == 0:
        raise ValueError(f"fine-tuning method {method!r} has no training sequence (empty memorized set?)")
    return sequences


def fine_tune(model: GPT2LMHeadModel | str | Path, datamodule, *, method: str, epochs: int = 5, lr: float = 1e-3,
              weight_decay: float = 0.1, betas: tuple[float, float] = (0.9, 0.98), batch_size: int = 128,
              max_steps: int | None = None, seed: int = 0) -> FineTuneResult:
    """Fine-tune a copy of ``model`` with one of the three methods.

    Args:
        model: a ``GPT2LMHeadModel`` or a checkpoint path (``load_tinymem_gpt2``; the DataModule's vocabulary and
            context are required).
        datamodule: a set-up ``TinyMemMath`` / ``TinyMemText``.
        method: ``"clean"``, ``"extra"`` or ``"both"``.
        epochs: passes over the method's data (5 in the paper).
        lr, weight_decay, betas: AdamW settings (the paper's base-training ones).
        batch_size: sequences per step.
        max_steps: optional cap on optimiser steps (quick runs).
        seed: shuffling seed.
    """
    from framework.models.components.tinymem.gpt2 import load_tinymem_gpt2
    from framework.models.tinymem_lm import sequence_losses

    require_choice("method", method, FINE_TUNING_METHODS)
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if max_steps is not None and (not isinstance(max_steps, int) or max_steps < 1):
        raise ValueError(f"max_steps must be a positive integer or None, got {max_steps!r}")
    require_positive("lr", lr)
    if isinstance(model, (str, Path)):
        model = load_tinymem_gpt2(model, expected={"vocab_size": datamodule.vocab_size,
                                                   "n_positions": datamodule.context_length})
    else:
        model = copy.deepcopy(model)
    sequences = fine_tuning_sequences(datamodule, method)
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=tuple(betas))
    generator = torch.Generator().manual_seed(seed)
    model.train()
    steps, losses = 0, []
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(sequences), generator=generator)
        total, batches = 0.0, 0
        for chunk in order.split(batch_size):
            batch = sequences[chunk].to(device)
            per_sequence, count = sequence_losses(model(input_ids=batch).logits, batch)
            loss = (per_sequence * count).sum() / count.sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            batches += 1
            steps += 1
            if max_steps is not None and steps >= max_steps:
                break
        losses.append(total / max(batches, 1))
        if max_steps is not None and steps >= max_steps:
            break
    seconds = time.perf_counter() - start
    return FineTuneResult(model=model.eval(), method=method, steps=steps, seconds=seconds, losses=losses)
