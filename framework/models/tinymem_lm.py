"""TinyMem language model: Transformers' GPT-2 trained on TinyMem data, with memorization metrics and the
train-time / fine-tuning mitigations.

Training (research note A4): AdamW (lr 1e-3, weight decay 0.1, betas (0.9, 0.98)), batch 128, the causal-LM loss over
*all* positions, pads included (``loss_on_pad=True``, the paper; ``False`` ignores pad targets). A train-time
regularizer (``framework.models.components.tinymem.regularizers``) is injected by ``class_path``.

Fine-tuning (methods "clean", "extra", "both"): set ``init_checkpoint`` to a trained checkpoint and the DataModule's
``train_on`` to ``clean`` / ``extra`` / ``both`` (configs ``configs/tinymem/finetune_*.yaml``); the checkpoint must
have this model's vocabulary and architecture, else a ``ValueError`` names the differing fields.

Logged each validation / test epoch, per held-out family (``<stage>/<family>/...``) and averaged over families
(``<stage>/...``): ``accuracy`` (pads counted, the paper's number), ``accuracy_no_pad``, ``perplexity`` (pad
targets excluded); ``<stage>/loss`` (first family); and on the DataModule's memorization set
``<stage>/percent_memorized`` + ``<stage>/percent_clean_continuation`` (noise artifacts) or
``<stage>/backdoor_success`` (backdoors). Batches come from ``framework.datamodules.tinymem_math.TinyMemMath`` or
``framework.datamodules.tinymem_text.TinyMemText``.

:func:`tinymem_report` computes the same numbers for any GPT-2 (e.g. after unlearning) without a Trainer.

Config example::

    model:
      class_path: framework.models.tinymem_lm.TinyMemLM
      init_args:
        n_layers: 2
        optimizer: {class_path: torch.optim.AdamW, init_args: {lr: 1.0e-3, weight_decay: 0.1, betas: [0.9, 0.98]}}
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MetricCollection

from framework.base import FrameworkModule
from framework.metrics.memorization import (
    BackdoorSuccessRate,
    NextTokenAccuracy,
    PercentMemorized,
    TokenPerplexity,
    backdoor_success_mask,
    greedy_continuation,
    noise_window_eligible,
)
from framework.validation import require_existing_path
from framework.models.components.tinymem.gpt2 import (
    BOS_ID,
    EOS_ID,
    MATH_VOCAB_SIZE,
    PAD_ID,
    architecture_of,
    build_tinymem_gpt2,
    check_architecture,
    load_tinymem_gpt2,
)
from framework.models.components.tinymem.regularizers import TrainRegularizer

__all__ = ["TinyMemLM", "tinymem_report", "sequence_losses"]

CONFIG_KEY = "tinymem_gpt2_config"


def sequence_losses(logits: Tensor, input_ids: Tensor, *, ignore_index: int | None = None) -> tuple[Tensor, Tensor]:
    """``(mean next-token loss per sequence [B], counted tokens per sequence [B])``; ``ignore_index`` targets are
    not counted (``None``: every position, as in Transformers' GPT-2 loss without labels masking)."""
    targets = input_ids[:, 1:]
    nll = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                          reduction="none").view_as(targets)
    counted = torch.ones_like(targets, dtype=torch.bool) if ignore_index is None else targets != ignore_index
    count = counted.sum(dim=1)
    per_sequence = (nll * counted).sum(dim=1) / count.clamp_min(1)
    return per_sequence, count


def _family_metrics(pad_token_id: int) -> MetricCollection:
    return MetricCollection({
        "accuracy": NextTokenAccuracy(),
        "accuracy_no_pad": NextTokenAccuracy(ignore_index=pad_token_id),
        "perplexity": TokenPerplexity(ignore_index=pad_token_id),
    }, compute_groups=False)


class TinyMemLM(FrameworkModule):
    """GPT-2 language model of TinyMem; ``forward(input_ids [B, T]) -> logits [B, T, V]``.

    Args:
        n_layers: transformer blocks (1, 2, 4, 8, 16 in the paper).
        vocab_size: vocabulary (14 for math; linked from the DataModule).
        context_length: positions (150; linked from the DataModule).
        n_embd, n_head: width (128) and heads (4).
        bos_token_id, eos_token_id, pad_token_id: special ids (math: 10, 11, 13).
        loss_on_pad: count pad targets in the training loss (the paper) or not.
        init_seed: seed of the weight initialisation (``None``: the global RNG, set by ``seed_everything``).
        init_checkpoint: start from these weights (fine-tuning); a TinyMemLM ``.ckpt``, a GPT-2 ``state_dict`` file
            or a ``save_pretrained`` folder of the same architecture.
        regularizer: a ``TrainRegularizer`` (spectral norm, loss truncation, example-tied dropout) or ``None``.
        prompt_len, k: the memorization window (50, 50); backdoor prompts end after the trigger.
        optimizer, scheduler, scheduler_interval, scheduler_monitor: see ``FrameworkModule``.
    """

    def __init__(
        self,
        *,
        n_layers: int = 2,
        vocab_size: int = MATH_VOCAB_SIZE,
        context_length: int = 150,
        n_embd: int = 128,
        n_head: int = 4,
        bos_token_id: int = BOS_ID,
        eos_token_id: int = EOS_ID,
        pad_token_id: int = PAD_ID,
        loss_on_pad: bool = True,
        init_seed: int | None = None,
        init_checkpoint: str | None = None,
        regularizer: TrainRegularizer | None = None,
        prompt_len: int = 50,
        k: int = 50,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "epoch",
        scheduler_monitor: str | None = None,
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, scheduler_interval=scheduler_interval,
                         scheduler_monitor=scheduler_monitor)
        self.save_hyperparameters(ignore=["regularizer"])
        if regularizer is not None and not isinstance(regularizer, TrainRegularizer):
            raise ValueError(f"regularizer must be a TrainRegularizer (framework.models.components.tinymem.regularizers), "
                             f"got {type(regularizer).__name__}")
        for name, value in (("prompt_len", prompt_len), ("k", k)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if prompt_len + k > context_length:
            raise ValueError(f"prompt_len + k = {prompt_len + k} exceeds context_length={context_length}")
        self.model = build_tinymem_gpt2(
            n_layers=n_layers, vocab_size=vocab_size, context_length=context_length, n_embd=n_embd, n_head=n_head,
            bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id, seed=init_seed,
        )
        if init_checkpoint is not None:
            self.load_weights(init_checkpoint)
        self.pad_token_id = pad_token_id
        self.loss_on_pad = loss_on_pad
        self.prompt_len, self.k = prompt_len, k
        self.regularizer = regularizer if regularizer is not None else TrainRegularizer()
        self.regularizer.attach(self.model)
        self.eval_metrics = nn.ModuleDict()  # "<stage>__<family>" -> MetricCollection, created on first batch
        self.memorization_metrics = nn.ModuleDict({
            f"{stage}_{name}": metric_cls()
            for stage in ("val", "test")
            for name, metric_cls in (("memorized", PercentMemorized), ("clean", PercentMemorized),
                                     ("backdoor", BackdoorSuccessRate))
        })

    # ------------------------------------------------------------------ checkpoints
    def load_weights(self, path: str) -> None:
        """Copy the GPT-2 weights of a checkpoint into this model (same vocabulary and architecture required)."""
        path = require_existing_path("init_checkpoint", path)
        loaded = load_tinymem_gpt2(path, expected=self.model.config)
        self.model.load_state_dict(loaded.state_dict())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CONFIG_KEY] = self.model.config.to_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        stored = checkpoint.get(CONFIG_KEY)
        if stored is not None:
            check_architecture(stored, self.model.config, source="checkpoint")

    # ------------------------------------------------------------------ model
    def forward(self, input_ids: Tensor) -> Tensor:
        vocab = self.model.config.vocab_size
        if input_ids.numel() and (int(input_ids.max()) >= vocab or int(input_ids.min()) < 0):
            raise ValueError(f"token ids must lie in [0, vocab_size={vocab}), got range [{int(input_ids.min())}, "
                             f"{int(input_ids.max())}]: set model.init_args.vocab_size to the tokenizer's vocabulary")
        return self.model(input_ids=input_ids).logits

    def architecture(self) -> dict[str, Any]:
        return architecture_of(self.model.config)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        input_ids = batch["input_ids"]
        self.regularizer.begin_batch(batch.get("example_id"))
        try:
            logits = self(input_ids)
        finally:
            self.regularizer.end_batch()
        per_sequence, count = sequence_losses(logits, input_ids,
                                              ignore_index=None if self.loss_on_pad else self.pad_token_id)
        if type(self.regularizer) is TrainRegularizer:
            loss = (per_sequence * count).sum() / count.sum().clamp_min(1)  # token mean = HF GPT-2 loss
            logs: dict[str, Tensor] = {}
        else:
            loss, logs = self.regularizer.training_loss(self.model, per_sequence)
        batch_size = len(input_ids)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        for name, value in logs.items():
            self.log(f"train/{name}", value, batch_size=batch_size)
        return loss

    # ------------------------------------------------------------------ evaluation
    def _split_names(self, stage: str) -> list[str]:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        return list(getattr(datamodule, f"{stage}_split_names", None) or [])

    def _family(self, stage: str, family: str) -> MetricCollection:
        key = f"{stage}__{family}"
        if key not in self.eval_metrics:
            self.eval_metrics[key] = _family_metrics(self.pad_token_id).to(self.device)
        return self.eval_metrics[key]

    def _eval_step(self, batch: dict[str, Tensor], stage: str, dataloader_idx: int) -> None:
        if "prefix_length" in batch:
            self._memorization_step(batch, stage)
            return
        names = self._split_names(stage)
        family = names[dataloader_idx] if dataloader_idx < len(names) else f"set{dataloader_idx}"
        input_ids = batch["input_ids"]
        logits = self(input_ids)
        if dataloader_idx == 0:
            per_sequence, count = sequence_losses(logits, input_ids,
                                                  ignore_index=None if self.loss_on_pad else self.pad_token_id)
            loss = (per_sequence * count).sum() / count.sum().clamp_min(1)
            self.log(f"{stage}/loss", loss, batch_size=len(input_ids), add_dataloader_idx=False)
        self._family(stage, family).update(logits.float(), input_ids)

    def _memorization_step(self, batch: dict[str, Tensor], stage: str) -> None:
        sequences, prefix = batch["input_ids"], batch["prefix_length"]
        if bool(batch.get("backdoor", torch.zeros(1, dtype=torch.bool)).any()):
            success = backdoor_success_mask(self.model, sequences, prefix, k=self.k)
            self.memorization_metrics[f"{stage}_backdoor"].update(success)
            return
        clean = batch["clean_ids"]
        window = slice(self.prompt_len, self.prompt_len + self.k)
        eligible = noise_window_eligible(sequences, clean, prompt_len=self.prompt_len, k=self.k)
        generated = greedy_continuation(self.model, clean[:, :self.prompt_len], self.k)
        self.memorization_metrics[f"{stage}_memorized"].update(generated, sequences[:, window], eligible)
        self.memorization_metrics[f"{stage}_clean"].update(generated, clean[:, window], eligible)

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        self._eval_step(batch, "val", dataloader_idx)

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        self._eval_step(batch, "test", dataloader_idx)

    def _eval_epoch_end(self, stage: str) -> None:
        averages: dict[str, list[Tensor]] = {}
        for key, collection in self.eval_metrics.items():
            key_stage, family = key.split("__", 1)
            if key_stage != stage or not any(m.update_count for m in collection.values()):
                continue
            for name, value in collection.compute().items():
                self.log(f"{stage}/{family}/{name}", value.float(), add_dataloader_idx=False)
                averages.setdefault(name, []).append(value.float())
            collection.reset()
        for name, values in averages.items():
            self.log(f"{stage}/{name}", torch.stack(values).mean(), prog_bar=name == "accuracy",
                     add_dataloader_idx=False)
        for name, key in (("percent_memorized", "memorized"), ("percent_clean_continuation", "clean"),
                          ("backdoor_success", "backdoor")):
            metric = self.memorization_metrics[f"{stage}_{key}"]
            if metric.update_count:
                self.log(f"{stage}/{name}", metric.compute().float(), prog_bar=key != "clean",
                         add_dataloader_idx=False)
            metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")


@torch.no_grad()
def tinymem_report(model: nn.Module, datamodule, *, batch_size: int = 256, prompt_len: int | None = None,
                   k: int | None = None) -> dict[str, float]:
    """Accuracy / perplexity per held-out family and their mean, plus memorization, for any GPT-2 language model.

    Args:
        model: a ``GPT2LMHeadModel`` (or a ``TinyMemLM``; its ``.model`` is used, hooks included).
        datamodule: a set-up ``TinyMemMath`` / ``TinyMemText``.
        batch_size: evaluation batch size.
        prompt_len, k: memorization window (default: the DataModule's).

    Returns:
        ``{"<family>/accuracy", "<family>/accuracy_no_pad", "<family>/perplexity", "accuracy", "accuracy_no_pad",
        "perplexity", "percent_memorized" + "percent_clean_continuation" (noise) or "backdoor_success" (backdoor),
        "memorized_count", "eligible_count", "seconds"}``.
    """
    lm = model.model if isinstance(model, TinyMemLM) else model
    pad = int(datamodule.pad_token_id)
    prompt_len = datamodule.prompt_len if prompt_len is None else prompt_len
    k = datamodule.k if k is None else k
    start = time.perf_counter()
    was_training = lm.training
    lm.eval()
    device = next(lm.parameters()).device
    report: dict[str, float] = {}
    sums: dict[str, list[float]] = {}
    try:
        for family, sequences in datamodule.test_sequences.items():
            metrics = _family_metrics(pad).to(device)
            for chunk in sequences.split(batch_size):
                chunk = chunk.to(device)
                metrics.update(lm(input_ids=chunk).logits.float(), chunk)
            for name, value in metrics.compute().items():
                report[f"{family}/{name}"] = float(value)
                sums.setdefault(name, []).append(float(value))
        for name, values in sums.items():
            report[name] = sum(values) / len(values)
        sequences, clean, prefix = datamodule.memorization_eval_set()
        if datamodule.artifact == "backdoor":
            success = backdoor_success_mask(lm, sequences.to(device), prefix.to(device), k=k, batch_size=batch_size)
            report["backdoor_success"] = 100.0 * float(success.float().mean()) if len(success) else float("nan")
            report["memorized_count"], report["eligible_count"] = float(success.sum()), float(len(success))
        else:
            from framework.metrics.memorization import memorization_report

            result = memorization_report(lm, sequences.to(device), clean.to(device), prompt_len=prompt_len, k=k,
                                         batch_size=batch_size)
            eligible = int(result["eligible"].sum())
            report["percent_memorized"] = 100.0 * int(result["memorized"].sum()) / eligible if eligible else float("nan")
            report["percent_clean_continuation"] = (100.0 * int(result["clean_continuation"].sum()) / eligible
                                                    if eligible else float("nan"))
            report["memorized_count"], report["eligible_count"] = float(result["memorized"].sum()), float(eligible)
    finally:
        lm.train(was_training)
    report["seconds"] = time.perf_counter() - start
    return report
