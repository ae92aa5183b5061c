"""CausalLMEvaluation: perplexity equals exp(mean next-token NLL); fine-tuning lowers it; bad input."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from framework.models.causal_lm_evaluation import CausalLMEvaluation


def _batches(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    # A repetitive sequence: learnable in a few steps.
    base = torch.arange(3, 35).repeat(2)[None].repeat(n, 1)
    return [{"input_ids": base + torch.randint(0, 2, (n, 1), generator=g)} for _ in range(2)]


def test_perplexity_is_exp_mean_nll_and_finetuning_lowers_it(tmp_path):
    torch.manual_seed(0)
    model = CausalLMEvaluation(backbone="tiny_llama", hidden_size=32, intermediate_size=64, num_layers=1,
                               optimizer=lambda params: torch.optim.AdamW(params, lr=1e-2))
    data = _batches()
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    before = trainer.test(model, DataLoader(data, batch_size=None), verbose=False)[0]["test/perplexity"]
    with torch.no_grad():
        total = count = 0
        for batch in data:
            logits = model(batch["input_ids"])[:, :-1]
            total += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                             batch["input_ids"][:, 1:].reshape(-1), reduction="sum"))
            count += batch["input_ids"][:, 1:].numel()
    assert before == pytest.approx(math.exp(total / count), rel=1e-4)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=6, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, DataLoader(data, batch_size=None))
    after = trainer.test(model, DataLoader(data, batch_size=None), verbose=False)[0]["test/perplexity"]
    assert after < 0.7 * before


def test_bad_input():
    with pytest.raises(ValueError, match="dtype"):
        CausalLMEvaluation(backbone="tiny_llama", dtype="int8")
    with pytest.raises(ValueError, match="divisible"):
        CausalLMEvaluation(backbone="tiny_llama", hidden_size=30, num_heads=4)
    with pytest.raises(FileNotFoundError, match="backbone"):
        CausalLMEvaluation(backbone="/nonexistent/model")
    model = CausalLMEvaluation(backbone="tiny_llama", vocab_size=50, hidden_size=32, intermediate_size=64)
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        model(torch.tensor([[1, 2, 60]]))
