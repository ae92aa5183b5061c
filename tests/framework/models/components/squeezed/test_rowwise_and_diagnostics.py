"""Several methods as rows of one batch; diagnostics against dense attention."""

from __future__ import annotations

import pytest
import torch

from framework.models.components.squeezed import OracleTopK, QuestPages, RowwiseSelector, SqueezedAttention, serve
from framework.models.components.squeezed.answer_scoring import score_answer, score_answer_rows


def _sa(budget: float) -> SqueezedAttention:
    return SqueezedAttention(observation_window=16, attention_sinks=2, centroid_fraction=0.1, budget=budget)


def test_full_budget_diagnostics_are_exact(model, index):
    with torch.no_grad(), serve(model, index, _sa(1.0), diagnostics=True) as session:
        model(input_ids=torch.randint(3, 300, (1, 6)), cache=index.new_cache(), use_cache=True)
    diag = session.attention_diagnostics()
    assert diag.output_error < 1e-5 and diag.mass_recall == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow  # six teacher-forced runs with diagnostics: ~10 s of CPU
def test_rows_equal_separate_runs(model, index):
    question, answer = torch.randint(3, 300, (7,)).tolist(), torch.randint(3, 300, (3,)).tolist()
    selectors = [_sa(0.5), OracleTopK(budget=0.2), QuestPages(budget=0.4)]
    rowwise = RowwiseSelector([_sa(0.5), OracleTopK(budget=0.2), QuestPages(budget=0.4)])
    with serve(model, index, rowwise, diagnostics=True) as session:
        rows = score_answer_rows(model, index, question, answer, rows=3)
    for i, sel in enumerate(selectors):
        with serve(model, index, sel, diagnostics=True) as single:
            alone = score_answer(model, index, question, answer)
        torch.testing.assert_close(rows[i].logits, alone.logits, rtol=1e-4, atol=1e-4)
        assert session.budget(i).budget == pytest.approx(single.budget().budget)
        assert session.attention_diagnostics(i).mass_recall == pytest.approx(
            single.attention_diagnostics().mass_recall, abs=1e-5
        )


def test_rowwise_needs_one_selector_per_row(model, index):
    with serve(model, index, RowwiseSelector([_sa(0.5)])):
        with pytest.raises(ValueError, match="1 selectors"):
            score_answer_rows(model, index, [5, 6], [7], rows=2)
