"""Baseline selectors pick exactly the budgeted keys; measured budget follows the §3.7 formula."""

from __future__ import annotations

import math

import pytest
import torch

from framework.models.components.squeezed import (
    BudgetMeter,
    OracleTopK,
    QuestPages,
    RandomKeys,
    SlidingWindowSinks,
    SqueezedAttention,
    budget_of,
    serve,
)
from framework.models.components.squeezed.selection_tools import frame_selection, selection_from_indices, selection_from_mask


@pytest.mark.parametrize("make", [OracleTopK, QuestPages, SlidingWindowSinks, RandomKeys])
@pytest.mark.parametrize("budget", [0.05, 0.3, 1.0])
def test_baselines_select_exactly_the_budgeted_keys(index, make, budget):
    layer = index.layers[0]
    n = layer.num_tokens
    selector = make(budget=budget)
    sel = selector.select(torch.randn(2, 4, 3, 16), layer, scale=0.25)
    meta = selector.metadata_vectors(layer)
    expected = int(min(n, max(1, round((budget - meta / (2 * n)) * n))))
    assert torch.all(sel.key_counts == expected)
    for b in range(2):
        for h in range(2):
            row = sel.key_indices[b, h, :expected].long()
            assert torch.all(row[1:] > row[:-1]) and row.min() >= 0 and row.max() < n


def test_oracle_picks_the_largest_true_probabilities(index):
    layer = index.layers[1]
    q = torch.randn(1, 4, 1, 16)
    sel = OracleTopK(budget=0.1).select(q, layer, scale=0.25)
    k = layer.keys[0, 0].float()
    probs = torch.softmax(q[0, :2, 0] @ k.T * 0.25, dim=-1).mean(0)  # KV head 0 serves query heads 0, 1
    want = set(torch.topk(probs, int(sel.key_counts[0, 0])).indices.tolist())
    assert set(sel.key_indices[0, 0, : sel.key_counts[0, 0]].tolist()) == want


def test_quest_bound_is_an_upper_bound_and_pages_are_whole(index):
    layer = index.layers[0]
    quest = QuestPages(budget=0.5, page_size=16)
    lo, hi = quest.page_bounds(layer)
    q = torch.randn(16)
    k = layer.keys[0, 1].float()
    bound = torch.maximum(q * lo[1], q * hi[1]).sum(-1)
    scores = k @ q
    for p in range(lo.shape[1]):
        assert scores[p * 16 : (p + 1) * 16].max() <= bound[p] + 1e-5
    sel = quest.select(torch.randn(1, 4, 1, 16), layer, scale=0.25)
    pages = sel.key_indices[0, 0, : sel.key_counts[0, 0]].long() // 16
    full_pages = torch.bincount(pages)
    assert int((full_pages % 16 != 0).sum()) <= 1  # only the last page taken may be partial
    assert quest.metadata_vectors(layer) == 2 * math.ceil(layer.num_tokens / 16)


def test_window_keeps_sinks_and_recent_keys(index):
    layer = index.layers[0]
    n = layer.num_tokens
    sel = SlidingWindowSinks(budget=0.25, sinks=4).select(torch.randn(1, 4, 1, 16), layer, scale=0.25)
    k = int(sel.key_counts[0, 0])
    assert sel.key_indices[0, 0, :k].tolist() == list(range(4)) + list(range(n - (k - 4), n))


def test_budget_formula_and_meter():
    assert budget_of(300, 100, 1000) == pytest.approx(0.3 + 0.05)
    meter = BudgetMeter()
    meter.record(torch.tensor([[100, 300]]), 1000, 50)
    meter.record(torch.tensor([[200, 200]]), 1000, 50)
    rep = meter.report()
    assert rep.kept_fraction == pytest.approx(0.2) and rep.metadata_fraction == pytest.approx(0.025)
    assert rep.budget == pytest.approx(0.225) and rep.lookups == 4


def test_measured_budget_of_serving_matches_the_formula(model, index):
    settings = SqueezedAttention(observation_window=16, attention_sinks=2, centroid_fraction=0.1, budget=0.3)
    captured = []
    original = settings.select

    def spy(query, layer, *, scale):
        sel = original(query, layer, scale=scale)
        captured.append((sel.key_counts.clone(), layer))
        return sel

    settings.select = spy
    with torch.no_grad(), serve(model, index, settings) as session:
        model(input_ids=torch.randint(3, 300, (2, 4)), cache=index.new_cache(2), use_cache=True)
    n = index.metadata.context_length
    values = [
        budget_of(float(c), layer.centroids.shape[1], n) for counts, layer in captured for c in counts.reshape(-1)
    ]
    assert session.budget().budget == pytest.approx(sum(values) / len(values))


def test_selection_helpers():
    sel = selection_from_indices(torch.tensor([[[5, 1, 3, 0]]]), torch.tensor([[3]]))
    assert sel.key_indices.tolist() == [[[1, 3, 5, 0]]] and sel.key_counts.tolist() == [[3]]
    mask = torch.tensor([[[False, True, True, False, True]]])
    assert selection_from_mask(mask).key_indices[0, 0, :3].tolist() == [1, 2, 4]
    framed = frame_selection(sel, sinks=2, tail_first=10, tail_count=2)
    assert framed.key_indices[0, 0, : framed.key_counts[0, 0]].tolist() == [0, 1, 3, 5, 7, 10, 11]


def test_keep_fraction_for_budget_inverts_the_formula(index):
    from framework.models.components.squeezed.qa_evaluation import keep_fraction_for_budget

    meta = index.metadata
    n, fixed = meta.context_length, meta.observation_window + meta.attention_sinks
    c = index.layers[0].centroids.shape[1]
    keep = keep_fraction_for_budget(0.4, index, 1)
    assert keep * (n - fixed) / n + fixed / n + c / (2 * n) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="below the fixed cost"):
        keep_fraction_for_budget(0.05, index, 1)
    with pytest.raises(ValueError, match="target budget"):
        keep_fraction_for_budget(1.5, index, 1)
