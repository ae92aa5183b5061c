"""SqueezedAttentionQAEval: a tiny end-to-end test run logs every (method, budget, metric)."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest

from framework.datamodules.long_context_qa import LongContextQADataModule
from framework.models.squeezed_attention_eval import SqueezedAttentionQAEval


@pytest.mark.slow  # ~8 s of CPU, but >20 s wall on a loaded 2-core machine
def test_test_run_logs_accuracy_budget_and_errors():
    model = SqueezedAttentionQAEval(
        backbone="tiny_llama", budgets=[0.5], observation_window=16, attention_sinks=2, kmeans_iters=3,
        baselines=["oracle_topk", "random"],
    )
    data = LongContextQADataModule(tokenizer="bytes", context_tokens=[1000], facts_per_context=1, chat_markup=False)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (metrics,) = trainer.test(model, datamodule=data, verbose=False)
    for method in ("squeezed", "oracle_topk", "random"):
        assert 0.0 < metrics[f"test/{method}@0.5/budget"] <= 1.0
        assert 0.0 <= metrics[f"test/{method}@0.5/mass_recall"] <= 1.0
        assert metrics[f"test/{method}@0.5/kl"] >= 0.0
    assert metrics["test/dense@1.0/kl"] == 0.0
    # baselines get the budget Squeezed Attention measured on the same question
    assert metrics["test/oracle_topk@0.5/budget"] == pytest.approx(metrics["test/squeezed@0.5/budget"], abs=2e-3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"backbone": "gpt2"}, "backbone"),
        ({"budgets": [0.0]}, "budgets"),
        ({"budgets": [1.2]}, "budgets"),
        ({"baselines": ["h2o"]}, "unknown baselines"),
        ({"levels": 3}, "levels"),
    ],
)
def test_bad_settings_are_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SqueezedAttentionQAEval(**kwargs)
