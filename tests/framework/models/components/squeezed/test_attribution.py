"""Attribution tools: sparse in a subset of layers / KV heads only, and needle-key diagnostics."""

from __future__ import annotations

import pytest
import torch

from framework.kernels.squeezed_attention.reference import selection_mask
from framework.models.components.squeezed import RandomKeys, SqueezedAttention, serve
from framework.models.components.squeezed.attribution import (
    LayerSubsetSelector,
    find_subsequence,
    needle_key_report,
)
from framework.models.components.squeezed.transformers_backend import capture_queries


def test_subset_selector_is_sparse_only_where_asked(model, index):
    inner = RandomKeys(budget=0.25, seed=0)
    sel = LayerSubsetSelector(inner, layers=[1], kv_heads=[0]).bind(index)
    q = torch.randn(1, 4, 3, 16)
    n = index.layers[0].num_tokens
    assert torch.all(selection_mask(sel.select(q, index.layers[0], scale=0.25), n))  # layer 0: every key
    mask = selection_mask(sel.select(q, index.layers[1], scale=0.25), n)[0]
    assert torch.all(mask[1]) and int(mask[0].sum()) == inner.num_keys(index.layers[1])  # only KV head 0 sparse
    question = torch.randint(3, 300, (1, 5), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        with serve(model, index, LayerSubsetSelector(RandomKeys(budget=0.25), layers=[0, 1])) as all_layers:
            model(input_ids=question, cache=index.new_cache(), use_cache=True)
        with serve(model, index, LayerSubsetSelector(RandomKeys(budget=0.25), layers=[0])) as one_layer:
            model(input_ids=question, cache=index.new_cache(), use_cache=True)
    k = RandomKeys(budget=0.25).num_keys(index.layers[0]) / n
    assert all_layers.budget().kept_fraction == pytest.approx(k)
    assert one_layer.budget().kept_fraction == pytest.approx((k + 1.0) / 2)


def test_subset_selector_errors(index):
    with pytest.raises(ValueError, match="at least one"):
        LayerSubsetSelector(RandomKeys(budget=0.3), layers=[])
    with pytest.raises(ValueError, match="outside"):
        LayerSubsetSelector(RandomKeys(budget=0.3), layers=[5]).bind(index)


def test_find_subsequence():
    assert find_subsequence([1, 2, 3, 1, 2], [1, 2]) == 3
    assert find_subsequence([1, 2, 3], [4]) == -1


def test_needle_report_against_brute_force(model, context, index):
    question = torch.randint(3, 300, (1, 4), generator=torch.Generator().manual_seed(5))
    with torch.no_grad(), capture_queries(model, 4) as cap:
        model(input_ids=question, cache=index.new_cache(), use_cache=True)
    queries = [cap.queries[i] for i in range(2)]
    full = SqueezedAttention(observation_window=16, attention_sinks=2, centroid_fraction=0.1, budget=1.0,
                             budget_mode="topk").bind(index)
    positions = [40, 41, 42]
    rep = needle_key_report(index, queries, positions, full, scale=0.25)
    assert torch.all(rep.kept == 1.0)
    torch.testing.assert_close(rep.mass_recall, torch.ones_like(rep.mass_recall))  # every key kept
    layer = index.layers[1]
    q = queries[1][0, 2:4]  # KV head 1 <- query heads 2, 3
    p = torch.softmax(torch.einsum("gtd,nd->gtn", q, layer.keys[0, 1].float()) * 0.25, -1)
    assert rep.needle_mass[1, 1] == pytest.approx(float(p[..., positions].sum(-1).mean()), rel=1e-4)
    lab = layer.key_labels[1, torch.tensor(positions) - 2]
    assert rep.cluster_size[1, 1] == pytest.approx(float(layer.cluster_sizes[1, lab].float().mean()))
    assert 0 <= float(rep.score_rank.min()) and float(rep.score_rank.max()) < 1
