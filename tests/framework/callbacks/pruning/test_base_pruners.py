"""Magnitude, Wanda and SparseGPT on hand-built layers."""

from __future__ import annotations

import pytest
import torch

from framework.callbacks.pruning.calibration import ActivationRecorder, unfolded_inputs
from framework.callbacks.pruning.magnitude import lowest_scores_mask, magnitude_mask
from framework.callbacks.pruning.sparsegpt import sparsegpt_prune
from framework.callbacks.pruning.wanda import wanda_mask


def test_magnitude_drops_exact_count_of_smallest():
    weight = torch.tensor([[0.1, -5.0, 0.3], [2.0, -0.05, 4.0]])
    keep = magnitude_mask(weight, 0.5)
    assert keep.tolist() == [[False, True, False], [True, False, True]]
    ties = torch.zeros(10)
    assert int((~lowest_scores_mask(ties, 0.3)).sum()) == 3  # ties do not change the count


def test_wanda_keeps_per_row_top_scores():
    # Input feature 0 has a huge norm, feature 2 a tiny one: Wanda must prefer weights on feature 0 even when
    # their magnitude is smaller (magnitude pruning would not).
    weight = torch.tensor([[0.2, 1.0, 3.0, 0.6], [-0.3, 0.1, -2.0, 1.0]])
    sq_norms = torch.tensor([100.0, 1.0, 0.01, 4.0])
    keep = wanda_mask(weight, sq_norms, 0.5, comparison="row")
    scores = weight.abs() * sq_norms.sqrt()
    for row in range(2):
        top = set(torch.topk(scores[row], 2).indices.tolist())
        assert set(torch.nonzero(keep[row]).flatten().tolist()) == top
    assert keep[:, 0].all() and not keep[:, 2].any()
    assert (keep.sum(dim=1) == 2).all()  # every row loses the same count
    layer = wanda_mask(weight, sq_norms, 0.5, comparison="layer")
    assert int(layer.sum()) == 4 and set(torch.nonzero(layer.flatten()).flatten().tolist()) == set(
        torch.topk(scores.flatten(), 4).indices.tolist())


def test_wanda_with_recorded_statistics_on_linear_and_conv():
    g = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(6, 4)
    conv = torch.nn.Conv2d(3, 5, 3, padding=1)
    x = torch.randn(7, 6, generator=g) * torch.arange(1, 7)
    images = torch.randn(2, 3, 5, 5, generator=g)
    with ActivationRecorder({"linear": linear, "conv": conv}, record_gram=True) as rec:
        linear(x)
        conv(images)
    torch.testing.assert_close(rec.statistics["linear"].sq_norms, x.square().sum(0))
    torch.testing.assert_close(rec.statistics["linear"].gram, x.T @ x)
    patches = unfolded_inputs(conv, images)
    assert patches.shape == (2 * 25, 27)
    # The unfolded patches reproduce the convolution: conv(x) == patches @ W_flatᵀ + b.
    out = (patches @ conv.weight.reshape(5, -1).T + conv.bias).reshape(2, 25, 5).permute(0, 2, 1).reshape(2, 5, 5, 5)
    torch.testing.assert_close(out, conv(images), atol=1e-5, rtol=1e-5)
    keep = wanda_mask(conv.weight, rec.statistics["conv"].sq_norms, 0.4)
    assert keep.shape == conv.weight.shape
    assert int((~keep).sum()) == 5 * round(0.4 * 27)


def test_sparsegpt_beats_magnitude_on_reconstruction():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(512, 64, generator=g) @ torch.randn(64, 64, generator=g)  # correlated inputs
    weight = torch.randn(32, 64, generator=g)
    result = sparsegpt_prune(weight, 2 * x.T @ x / len(x), 0.5, blocksize=16)
    assert result.weight.shape == weight.shape
    assert int((~result.mask).sum()) == 32 * 64 // 2
    assert (result.weight[~result.mask] == 0).all()
    dense = x @ weight.T
    error_sparsegpt = (x @ result.weight.T - dense).square().mean()
    error_magnitude = (x @ (weight * magnitude_mask(weight, 0.5)).T - dense).square().mean()
    assert error_sparsegpt < 0.7 * error_magnitude


def test_sparsegpt_zero_sparsity_keeps_weight_and_validates():
    weight = torch.randn(4, 8)
    h = torch.eye(8)
    result = sparsegpt_prune(weight, h, 0.0)
    torch.testing.assert_close(result.weight, weight)
    with pytest.raises(ValueError, match="hessian"):
        sparsegpt_prune(weight, torch.eye(5), 0.5)
