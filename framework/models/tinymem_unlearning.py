"""Unlearning of memorized sequences from a trained TinyMem GPT-2, run through the framework.

``python -m framework test --config configs/tinymem/unlearn_balanced_subnet.yaml``: at the start of the test loop the
module loads the trained checkpoint, measures the untouched model (held-out accuracy per family and memorization /
backdoor success, :func:`framework.models.tinymem_lm.tinymem_report`), runs the configured unlearning method
(``framework.models.components.tinymem.unlearning``) on the memorized set, then the regular test loop of
:class:`~framework.models.tinymem_lm.TinyMemLM` evaluates the edited model. Logged (W&B through the configured logger):

- ``test/accuracy``, ``test/accuracy_no_pad``, ``test/perplexity``, ``test/<family>/...``, ``test/backdoor_success`` or
  ``test/percent_memorized``: the edited model (TinyMemLM's test metrics);
- ``before/accuracy``, ``before/accuracy_no_pad``, ``before/perplexity``, ``before/backdoor_success`` or
  ``before/percent_memorized``: the same numbers for the untouched model;
- ``unlearning/seconds`` (the method's wall-clock time), ``unlearning/edited`` (neurons or weights removed),
  ``unlearning/edited_fraction``, ``unlearning/memorized_set_size``, ``unlearning/clean_pool_size``.

The edited GPT-2 is written with ``save_pretrained`` to ``output_dir`` (atomically: a temporary folder renamed into
place); ``framework.models.components.tinymem.gpt2.load_tinymem_gpt2`` reads it back.

The memorized set given to the method: ``memorized_set="memorized"`` (default) keeps the training artifact sequences
(noised or backdoored) that the model reproduces before unlearning - greedy continuation of the clean 50-token prefix
equals the noised window, or the backdoor fires after the trigger; ``"artifact"`` passes all of them, as the TinyMem
driver does. The clean pool is the DataModule's ``extra_sequences`` (all training data except the artifact set - the
fix of the public code, whose pool contained the noise set), optionally subsampled to ``clean_pool_size``.

Config example::

    model:
      class_path: framework.models.tinymem_unlearning.MemorizationUnlearning
      init_args:
        checkpoint: outputs/tinymem/backdoor_2layer.ckpt
        method:
          class_path: framework.models.components.tinymem.unlearning.BalancedSubnet
          init_args: {ratio: 0.01, epochs: 10}
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from framework.metrics.memorization import backdoor_success_mask, memorization_report
from framework.validation import require_choice, require_existing_path, require_positive
from framework.models.components.tinymem.gpt2 import load_tinymem_gpt2
from framework.models.components.tinymem.unlearning import UnlearningData, UnlearningMethod, UnlearningResult
from framework.models.tinymem_lm import TinyMemLM, tinymem_report

__all__ = ["MemorizationUnlearning", "memorized_subset", "save_model_atomically"]

MEMORIZED_SETS = ("memorized", "artifact")


@torch.no_grad()
def memorized_subset(model: torch.nn.Module, datamodule, *, batch_size: int = 256) -> torch.Tensor:
    """``Bool [M]``: which of the DataModule's artifact sequences ``model`` reproduces (noise or backdoor)."""
    sequences = datamodule.memorized_sequences
    if len(sequences) == 0:
        return torch.zeros(0, dtype=torch.bool)
    device = next(model.parameters()).device
    if datamodule.artifact == "backdoor":
        return backdoor_success_mask(model, sequences.to(device), datamodule.memorized_prefix_lengths.to(device),
                                     k=datamodule.k, batch_size=batch_size).cpu()
    report = memorization_report(model, sequences.to(device), datamodule.memorized_clean_sequences.to(device),
                                 prompt_len=datamodule.prompt_len, k=datamodule.k, batch_size=batch_size)
    return report["memorized"].cpu()


def save_model_atomically(model, output_dir: str | Path) -> Path:
    """``model.save_pretrained`` into a temporary sibling folder, then renamed to ``output_dir`` (replacing it)."""
    target = Path(output_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(str(tmp))
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


class MemorizationUnlearning(TinyMemLM):
    """A trained TinyMem GPT-2, edited by an unlearning method when the test loop starts, then evaluated.

    Args:
        checkpoint: the trained model (TinyMemLM ``.ckpt``, GPT-2 ``state_dict`` or ``save_pretrained`` folder). Its
            depth, width and heads are read from it; vocabulary and context must equal the DataModule's, else a
            ``ValueError`` names the differing fields. ``None``: an untrained model of shape ``n_layers``, ``n_embd``,
            ``n_head`` (config smoke tests only - it has memorized nothing).
        method: an ``UnlearningMethod`` (``class_path`` in YAML), e.g. ``BalancedSubnet(ratio=0.01)``.
        memorized_set: ``"memorized"`` (artifact sequences the model reproduces) or ``"artifact"`` (all of them).
        clean_pool_size: sample at most this many clean sequences for the methods that use a clean pool
            (``None``: all of ``extra_sequences``).
        output_dir: where the edited model is saved (``None``: not saved).
        report_batch_size: batch size of the before-unlearning evaluation.
        seed: seed of the clean-pool sample.
        vocab_size, context_length, pad_token_id, loss_on_pad, prompt_len, k: as ``TinyMemLM`` (linked from the
            DataModule where the CLI links them).
    """

    def __init__(
        self,
        *,
        checkpoint: str | None,
        method: UnlearningMethod,
        n_layers: int = 2,
        n_embd: int = 128,
        n_head: int = 4,
        memorized_set: str = "memorized",
        clean_pool_size: int | None = None,
        output_dir: str | None = None,
        report_batch_size: int = 256,
        seed: int = 0,
        vocab_size: int = 14,
        context_length: int = 150,
        bos_token_id: int = 10,
        eos_token_id: int = 11,
        pad_token_id: int = 13,
        loss_on_pad: bool = True,
        prompt_len: int = 50,
        k: int = 50,
    ) -> None:
        if not isinstance(method, UnlearningMethod):
            raise ValueError(f"method must be an UnlearningMethod (framework.models.components.tinymem.unlearning), got "
                             f"{type(method).__name__}")
        require_choice("memorized_set", memorized_set, MEMORIZED_SETS)
        if clean_pool_size is not None:
            require_positive("clean_pool_size", clean_pool_size)
        require_positive("report_batch_size", report_batch_size)
        if checkpoint is not None:
            checkpoint = str(require_existing_path("checkpoint", checkpoint))
            stored = load_tinymem_gpt2(checkpoint,
                                       expected={"vocab_size": vocab_size, "n_positions": context_length}).config
            n_layers, n_embd, n_head = stored.n_layer, stored.n_embd, stored.n_head
        super().__init__(n_layers=n_layers, vocab_size=vocab_size, context_length=context_length,
                         n_embd=n_embd, n_head=n_head, bos_token_id=bos_token_id,
                         eos_token_id=eos_token_id, pad_token_id=pad_token_id, loss_on_pad=loss_on_pad,
                         init_checkpoint=checkpoint, prompt_len=prompt_len, k=k)
        self.save_hyperparameters(ignore=["method"])
        self.method = method
        self.memorized_set = memorized_set
        self.clean_pool_size = clean_pool_size
        self.output_dir = output_dir
        self.report_batch_size = report_batch_size
        self.seed = seed
        self.before: dict[str, float] = {}
        self.result: UnlearningResult | None = None
        self.memorized_set_size = self.clean_pool_size_used = 0

    # ------------------------------------------------------------------ the edit
    def unlearning_data(self, datamodule) -> UnlearningData:
        """Memorized set and clean pool of ``datamodule`` for this model (see the class docstring)."""
        for attr in ("memorized_sequences", "extra_sequences", "artifact", "vocab_size"):
            if not hasattr(datamodule, attr):
                raise ValueError(f"{type(datamodule).__name__} has no `{attr}`; use framework.datamodules.tinymem_math.TinyMemMath "
                                 "or framework.datamodules.tinymem_text.TinyMemText (after setup)")
        if int(datamodule.vocab_size) != self.model.config.vocab_size:
            raise ValueError(f"the data has a vocabulary of {datamodule.vocab_size} tokens but the checkpoint's model "
                             f"has {self.model.config.vocab_size}: a checkpoint of another vocabulary")
        memorized = datamodule.memorized_sequences
        if self.memorized_set == "memorized":
            memorized = memorized[memorized_subset(self.model, datamodule, batch_size=self.report_batch_size)]
        if len(memorized) == 0:
            raise ValueError(f"the memorized set is empty (memorized_set={self.memorized_set!r}, "
                             f"{len(datamodule.memorized_sequences)} {datamodule.artifact} sequences, none reproduced "
                             "by the model): there is nothing to unlearn")
        clean = datamodule.extra_sequences
        if self.clean_pool_size is not None and len(clean) > self.clean_pool_size:
            generator = torch.Generator().manual_seed(self.seed)
            clean = clean[torch.randperm(len(clean), generator=generator)[: self.clean_pool_size]]
        self.memorized_set_size, self.clean_pool_size_used = len(memorized), len(clean)
        # clone(): tensors made under inference mode cannot be saved for backward.
        return UnlearningData(memorized=memorized.clone(), clean=clean.clone(), prompt_len=self.prompt_len,
                              ignore_token_id=None if self.loss_on_pad else self.pad_token_id)

    def run_unlearning(self, datamodule) -> UnlearningResult:
        """Measure, edit ``self.model`` in place, remember the numbers; returns the method's result."""
        data = self.unlearning_data(datamodule)
        self.before = tinymem_report(self.model, datamodule, batch_size=self.report_batch_size)
        self.result = self.method(self.model, data)
        return self.result

    def on_test_start(self) -> None:
        datamodule = self.trainer.datamodule
        if datamodule is None:
            raise ValueError("MemorizationUnlearning needs a DataModule (data: TinyMemMath / TinyMemText)")
        # The test loop runs under inference mode; the methods need autograd.
        with torch.inference_mode(False), torch.enable_grad():
            self.run_unlearning(datamodule)

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        if self.result is None:
            return
        for key in ("accuracy", "accuracy_no_pad", "perplexity", "backdoor_success", "percent_memorized",
                    "percent_clean_continuation"):
            if key in self.before:
                self.log(f"before/{key}", float(self.before[key]))
        self.log("unlearning/seconds", self.result.seconds)
        self.log("unlearning/edited", float(self.result.edited))
        self.log("unlearning/edited_fraction", self.result.edited / max(self.result.total, 1))
        self.log("unlearning/memorized_set_size", float(self.memorized_set_size))
        self.log("unlearning/clean_pool_size", float(self.clean_pool_size_used))

    def on_test_end(self) -> None:
        if self.output_dir is not None and self.result is not None and self.trainer.is_global_zero:
            save_model_atomically(self.model, self.output_dir)

    def summary(self) -> dict[str, Any]:
        """The method's result and the before-unlearning report, for scripts."""
        return {"method": self.method.name, "before": dict(self.before),
                "result": None if self.result is None else vars(self.result)}
