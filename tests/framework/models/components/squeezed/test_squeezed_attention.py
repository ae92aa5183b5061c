"""SqueezedAttention settings validation and selection behaviour."""

from __future__ import annotations

import math

import pytest
import torch

from framework.models.components.squeezed import SqueezedAttention, serve


@pytest.mark.parametrize("budget", [0.0, -0.1, 1.5, float("nan"), "half", True])
def test_budget_outside_unit_interval_is_an_error(budget):
    with pytest.raises(ValueError, match="budget"):
        SqueezedAttention(budget=budget)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"levels": 3}, "levels must be 1 or 2"),
        ({"centroid_fraction": 0.0}, "centroid_fraction"),
        ({"levels": 2, "coarse_fraction": 0.05}, "coarse_fraction"),
        ({"observation_window": -1}, "observation_window"),
        ({"attention_sinks": -2}, "attention_sinks"),
        ({"threshold": 0.1, "budget": 0.3}, "exactly one"),
        ({"budget_mode": "greedy"}, "budget_mode"),
        ({"kmeans_iters": 0}, "kmeans_iters"),
        ({"backend": "cuda"}, "backend"),
    ],
)
def test_bad_settings_are_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SqueezedAttention(**kwargs)


def test_topk_mode_keeps_the_budget_per_head(model, index):
    n = index.metadata.context_length
    settings = SqueezedAttention(observation_window=16, attention_sinks=2, centroid_fraction=0.1, budget=0.25, budget_mode="topk")
    q = torch.randn(2, 4, 3, 16)
    settings.bind(index)
    layer = index.layers[1]
    sel = settings.select(q, layer, scale=0.25)
    expected = math.ceil(0.25 * layer.num_clustered)
    counts = sel.key_counts - 2 - 16
    assert torch.all((counts - expected).abs() <= 1)
    idx = sel.key_indices.long()
    for b in range(2):
        for h in range(2):
            row = idx[b, h, : sel.key_counts[b, h]]
            assert torch.all(row[1:] > row[:-1])  # ascending, unique
            assert row[:2].tolist() == [0, 1]  # sinks
            assert row[-16:].tolist() == list(range(n - 16, n))  # observation window


def test_higher_threshold_keeps_fewer_keys(model, index):
    q = torch.randn(1, 4, 5, 16)
    counts = []
    for keep in (0.5, 0.3, 0.1):
        s = SqueezedAttention(observation_window=16, attention_sinks=2, centroid_fraction=0.1, budget=keep).bind(index)
        counts.append(int(s.select(q, index.layers[0], scale=0.25).key_counts.sum()))
    assert counts[0] >= counts[1] >= counts[2]


def test_select_before_bind_is_an_error(index):
    with pytest.raises(RuntimeError, match="bind"):
        SqueezedAttention(budget=0.3).select(torch.randn(1, 4, 2, 16), index.layers[0], scale=0.25)
