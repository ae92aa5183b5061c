"""Forecaster invariants: non-crossing quantiles, causality of forking forecasts, Peak Attention masking, scaling and
peak masking against numpy loops, clear errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from framework.models.components.forecasting import (
    MQCNN,
    SPADE,
    CausalConvEncoder,
    IncrementalQuantileHead,
    MaskedHorizonAttention,
    MQTransformer,
    forward_fill_peaks,
    pinball_loss,
    rolling_mean_scale,
)

L, H, C = 40, 6, 4
NETWORKS = [MQCNN, MQTransformer, SPADE]


def make_inputs(seed: int = 0, batch: int = 3):
    g = torch.Generator().manual_seed(seed)
    target = torch.poisson(torch.full((batch, L), 10.0), generator=g)
    peak = (torch.rand(batch, L + H, generator=g) < 0.2).float()
    target = target * (1 + 2 * peak[:, :L])
    features = torch.randn(batch, L + H, C, generator=g)
    features[..., 0] = peak
    return target, features, peak


def build(cls, seed: int = 0):
    torch.manual_seed(seed)
    return cls(num_features=C, horizon=H, quantiles=[0.1, 0.5, 0.9], scale_window=7, d_model=8, num_heads=2) \
        if cls is not MQCNN else cls(num_features=C, horizon=H, quantiles=[0.1, 0.5, 0.9], scale_window=7)


@pytest.mark.parametrize("cls", NETWORKS)
def test_quantiles_never_cross(cls):
    net = build(cls)
    target, features, peak = make_inputs()
    with torch.no_grad():
        for p in net.parameters():  # large random weights stress the monotonicity
            p.add_(torch.randn_like(p))
        out = net(target, features, peak, torch.arange(10, L))
    assert out.quantiles.shape == (3, L - 10, H, 3)
    assert (out.quantiles.diff(dim=-1) >= 0).all()


@pytest.mark.parametrize("cls", NETWORKS)
def test_changing_a_future_target_never_changes_an_earlier_forecast(cls):
    net = build(cls).eval()
    target, features, peak = make_inputs(1)
    forks = torch.arange(0, L)
    with torch.no_grad():
        before = net(target, features, peak, forks).quantiles
        for p in (5, 17, 33):
            changed = target.clone()
            changed[:, p] += 1000.0
            after = net(changed, features, peak, forks).quantiles
            assert torch.equal(after[:, :p], before[:, :p]), f"fork < {p} changed"
            assert not torch.allclose(after[:, p:], before[:, p:])


def test_peak_attention_weights_zero_on_non_peak_and_future_positions():
    net = build(SPADE)
    target, features, peak = make_inputs(2)
    peak[0, :L] = 0.0  # a window without any past peak: the learned default, no NaN
    features[..., 0] = peak
    forks = torch.arange(0, L)
    out = net(target, features, peak, forks, return_attention=True)
    w = out.peak_weights  # [B, heads, F, H, L]
    allowed = (torch.arange(L)[None, :] <= forks[:, None])[None] & (peak[:, None, :L] > 0)
    assert torch.isfinite(out.quantiles).all()
    assert (w.masked_select(~allowed[:, None, :, None, :].expand_as(w)) == 0).all()
    sums = w.sum(-1)
    has_peak = allowed.any(-1)[:, None, :, None].expand_as(sums)
    torch.testing.assert_close(sums[has_peak], torch.ones_like(sums[has_peak]))
    assert (sums[~has_peak] == 0).all()


def test_spade_adjustment_only_on_peak_forecast_days_and_base_ignores_peak_values():
    net = build(SPADE).eval()
    target, features, peak = make_inputs(3)
    with torch.no_grad():
        out = net(target, features, peak)
        future_peak = peak[:, L:L + H]
        same = out.quantiles[:, 0][future_peak == 0]
        torch.testing.assert_close(same, out.base[:, 0][future_peak == 0])
        # Peak values never reach the rest branch: changing demand on past PE days leaves the base unchanged.
        changed = torch.where(peak[:, :L] > 0, target * 5, target)
        torch.testing.assert_close(net(changed, features, peak).base, out.base)


def test_forward_fill_and_rolling_scale_match_numpy_loops():
    target, _, peak = make_inputs(4)
    filled, observed = forward_fill_peaks(target, peak[:, :L])
    scale = rolling_mean_scale(filled, observed, 5, minimum=1.0)
    for b in range(target.shape[0]):
        last = None
        for t in range(L):
            if peak[b, t] == 0:
                last = float(target[b, t])
            assert bool(observed[b, t]) == (last is not None)
            assert float(filled[b, t]) == (last if last is not None else 0.0)
            window = [float(filled[b, k]) for k in range(max(0, t - 4), t + 1) if observed[b, k]]
            expected = max(1.0, float(np.mean(np.abs(window)))) if window else 1.0
            assert float(scale[b, t]) == pytest.approx(expected, rel=1e-5)


def test_causal_conv_receptive_field_and_gluonts_defaults():
    enc = CausalConvEncoder(in_features=2)
    assert enc.out_features == 31 and enc.receptive_field == 1 + 6 + 2 * 3 + 2 * 9
    x = torch.randn(1, 60, 2, requires_grad=True)
    enc(x)[0, 40].sum().backward()
    touched = (x.grad[0].abs().sum(-1) > 0).nonzero().flatten()
    assert touched.max() == 40 and touched.min() >= 40 - enc.receptive_field + 1


def test_incremental_head_and_pinball():
    head = IncrementalQuantileHead(in_features=3, num_quantiles=4)
    assert (head(torch.randn(50, 3)).diff(dim=-1) > 0).all()
    loss = pinball_loss(torch.tensor([[1.0, 3.0]]), torch.tensor([2.0]), torch.tensor([0.1, 0.9]))
    torch.testing.assert_close(loss, torch.tensor([[2 * 0.1 * 1.0, 2 * 0.1 * 1.0]]))


def test_attention_empty_rows_use_default_and_no_nan():
    att = MaskedHorizonAttention(query_dim=3, key_dim=3, value_dim=2, d_model=4, num_heads=2)
    allowed = torch.zeros(2, 3, 5, dtype=torch.bool)
    allowed[0, 1, :2] = True
    out = att(torch.randn(2, 3, 4, 3), torch.randn(2, 5, 3), torch.randn(2, 5, 2), allowed, return_weights=True)
    assert torch.isfinite(out.context).all()
    torch.testing.assert_close(out.context[1, 0, 0], att.default)
    assert out.empty.sum() == 5 and (out.weights[1] == 0).all()


@pytest.mark.parametrize("cls", NETWORKS)
def test_bad_inputs_raise_clear_errors(cls):
    net = build(cls)
    target, features, peak = make_inputs()
    missing = peak.clone()
    missing[:, L + 2] = float("nan")
    with pytest.raises(ValueError, match="peak flags of the forecast horizon are missing"):
        net(target, features, missing)
    with pytest.raises(ValueError, match="must cover the forecast horizon"):
        net(target, features[:, :L + 2], peak[:, :L + 2])
    with pytest.raises(ValueError, match="quantiles must be strictly increasing"):
        cls(num_features=C, horizon=H, quantiles=[0.5, 0.1])


def test_hidden_history_features_do_not_reach_the_encoder():
    torch.manual_seed(0)
    net = MQCNN(num_features=C, horizon=H, quantiles=[0.1, 0.5, 0.9], hidden_history_features=[0, 2]).eval()
    target, features, peak = make_inputs(5)
    changed = features.clone()
    changed[:, :L, 0] = 1 - changed[:, :L, 0]
    changed[:, :L, 2] += 3.0
    with torch.no_grad():
        torch.testing.assert_close(net(target, changed, peak).quantiles, net(target, features, peak).quantiles)
        changed[:, :L, 1] += 3.0
        assert not torch.allclose(net(target, changed, peak).quantiles, net(target, features, peak).quantiles)
    with pytest.raises(ValueError, match="hidden_history_features must index"):
        MQCNN(num_features=C, horizon=H, hidden_history_features=[C])
