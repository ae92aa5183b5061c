"""Per-layer budgets from calibration: the allocation against brute force, the selector against per-layer serving."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from framework.kernels.squeezed_attention.reference import selection_mask
from framework.models.components.squeezed import serve
from framework.models.components.squeezed.baselines import OracleTopK
from framework.models.components.squeezed.layer_budgets import (
    PerLayerSelector,
    allocate_group_multipliers,
    layer_budgets,
)
from framework.models.components.squeezed.product_quantized_selection import ProductQuantizedTopK


def _brute_force(losses, sizes, mean=1.0):
    names = sorted(losses)
    best = None
    for picks in itertools.product(*[sorted(losses[g]) for g in names]):
        if sum(sizes[g] * m for g, m in zip(names, picks)) > mean * sum(sizes.values()) + 1e-9:
            continue
        key = (sum(losses[g][m] for g, m in zip(names, picks)),
               sum(sizes[g] * abs(m - 1.0) for g, m in zip(names, picks)))
        if best is None or key < best[0]:
            best = (key, dict(zip(names, picks)))
    return best


@pytest.mark.parametrize("seed", range(25))
def test_allocation_is_the_brute_force_optimum(seed):
    rng = random.Random(seed)
    groups = [f"g{i}" for i in range(rng.randint(1, 5))]
    mults = [0.5, 0.75, 1.0, 1.5, 2.0]
    sizes = {g: rng.randint(1, 6) for g in groups}
    # losses decrease with the budget (as a KL does), with random steepness per group; some exact ties
    losses = {g: {m: round(rng.uniform(0, 3) / m, rng.choice([1, 3])) for m in mults} for g in groups}
    got = allocate_group_multipliers(losses, sizes)
    (want_loss, want_dist), _ = _brute_force(losses, sizes)
    assert sum(losses[g][m] for g, m in got.items()) == pytest.approx(want_loss)
    assert sum(sizes[g] * abs(m - 1) for g, m in got.items()) == pytest.approx(want_dist)
    assert sum(sizes[g] * m for g, m in got.items()) <= sum(sizes.values()) + 1e-9


def test_flat_calibration_keeps_the_uniform_budget_and_a_sensitive_group_is_fed():
    flat = {g: {0.5: 1.0, 1.0: 1.0, 2.0: 1.0} for g in ("a", "b", "c")}
    assert allocate_group_multipliers(flat, {"a": 5, "b": 5, "c": 5}) == {"a": 1.0, "b": 1.0, "c": 1.0}
    # "a" loses nothing at half budget, "b" gains a lot from double: keys move from a to b, mean stays 1
    skewed = {"a": {0.5: 0.0, 1.0: 0.0, 2.0: 0.0}, "b": {0.5: 9.0, 1.0: 4.0, 2.0: 0.5}, "c": {0.5: 2, 1.0: 1, 2.0: 0.9}}
    got = allocate_group_multipliers(skewed, {"a": 2, "b": 1, "c": 1})
    assert got == {"a": 0.5, "b": 2.0, "c": 1.0}


def test_allocation_errors():
    with pytest.raises(ValueError, match="same non-empty groups"):
        allocate_group_multipliers({"a": {1.0: 0.0}}, {"b": 1})
    with pytest.raises(ValueError, match="finite loss"):
        allocate_group_multipliers({"a": {1.0: float("nan")}}, {"a": 1})
    with pytest.raises(ValueError, match="size must be"):
        allocate_group_multipliers({"a": {1.0: 0.0}}, {"a": 0})
    with pytest.raises(ValueError, match="no allocation"):
        allocate_group_multipliers({"a": {1.5: 0.0, 2.0: 0.0}}, {"a": 3})


def test_layer_budgets_partition():
    assert layer_budgets({"x": [0, 1], "y": [2]}, {"x": 0.5, "y": 2.0}, 0.2) == [0.1, 0.1, 0.4]
    with pytest.raises(ValueError, match="in groups"):
        layer_budgets({"x": [0, 1], "y": [1]}, {"x": 1.0, "y": 1.0}, 0.2)
    with pytest.raises(ValueError, match="cover layers"):
        layer_budgets({"x": [0, 2]}, {"x": 1.0}, 0.2)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        layer_budgets({"x": [0]}, {"x": 4.0}, 0.3)


def test_equal_budgets_select_as_the_plain_selector(index):
    plain = ProductQuantizedTopK(budget=0.4, subspaces=4, codewords=8, kmeans_iters=5, sinks=2)
    per_layer = PerLayerSelector(
        [ProductQuantizedTopK(budget=0.4, subspaces=4, codewords=8, kmeans_iters=5, sinks=2) for _ in index.layers]
    ).bind(index)
    q = torch.randn(1, 4, 3, 16, generator=torch.Generator().manual_seed(3))
    n = index.layers[0].num_tokens
    for layer in index.layers:
        assert torch.equal(selection_mask(per_layer.select(q, layer, scale=0.25), n),
                           selection_mask(plain.select(q, layer, scale=0.25), n))
        assert per_layer.metadata_vectors(layer) == plain.metadata_vectors(layer)
    assert per_layer.budget == pytest.approx(0.4)


def test_each_layer_is_served_at_its_own_budget(model, index):
    # layer 0 at full budget attends every key; layer 1 at 0.25 keeps the oracle's count; the measured kept
    # fraction is the mean of the two layers'
    n = index.layers[0].num_tokens
    small = OracleTopK(budget=0.25)
    sel = PerLayerSelector([OracleTopK(budget=1.0), OracleTopK(budget=0.25)]).bind(index)
    q = torch.randn(1, 4, 3, 16, generator=torch.Generator().manual_seed(4))
    assert torch.all(selection_mask(sel.select(q, index.layers[0], scale=0.25), n))
    assert int(selection_mask(sel.select(q, index.layers[1], scale=0.25), n)[0, 0].sum()) == small.num_keys(
        index.layers[1])
    question = torch.randint(3, 300, (1, 5), generator=torch.Generator().manual_seed(5))
    with torch.no_grad(), serve(model, index, PerLayerSelector([OracleTopK(budget=1.0), small])) as session:
        model(input_ids=question, cache=index.new_cache(), use_cache=True)
    assert session.budget().kept_fraction == pytest.approx((1.0 + small.num_keys(index.layers[1]) / n) / 2)


def test_per_layer_selector_errors(index):
    with pytest.raises(ValueError, match="got none"):
        PerLayerSelector([])
    with pytest.raises(ValueError, match="3 per-layer selectors for an index of 2"):
        PerLayerSelector([OracleTopK(budget=0.5)] * 3).bind(index)
    with pytest.raises(ValueError, match="bind"):
        PerLayerSelector([OracleTopK(budget=0.5)] * 2).select(torch.randn(1, 4, 1, 16), index.layers[0], scale=0.25)


def test_shared_quantizer_fits_are_fitted_once_and_select_the_same(index):
    first = ProductQuantizedTopK(budget=0.3, subspaces=4, codewords=8, kmeans_iters=5)
    second = ProductQuantizedTopK(budget=0.6, subspaces=4, codewords=8, kmeans_iters=5).share_fits_with(first)
    alone = ProductQuantizedTopK(budget=0.6, subspaces=4, codewords=8, kmeans_iters=5)
    layer = index.layers[0]
    books, codes = first.quantizer(layer)
    assert second.quantizer(layer)[0] is books  # no second fit
    q = torch.randn(1, 4, 2, 16, generator=torch.Generator().manual_seed(6))
    n = layer.num_tokens
    assert torch.equal(selection_mask(second.select(q, layer, scale=0.25), n),
                       selection_mask(alone.select(q, layer, scale=0.25), n))
    with pytest.raises(ValueError, match="cannot share"):
        ProductQuantizedTopK(budget=0.3, subspaces=2, codewords=8).share_fits_with(first)
