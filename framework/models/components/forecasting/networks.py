"""The three forecasters as plain ``nn.Module``s sharing one input / output contract.

Inputs: ``target_past [B, L]`` (demand up to the last observed day), ``features [B, L + H', C]`` known covariates
(also over the horizon; ``H' >= H`` after the last fork), ``peak [B, L + H']`` 0/1 PE flags (known in the future),
``fork_positions [F]`` (forks ``t``: decode after observing position ``t``; default the last position, i.e. one
forecast from the end of the history). Output: :class:`ForecastOutput` with quantiles ``[B, F, H, Q]`` in demand
units, non-decreasing in Q. Everything is causal: the forecast of fork ``t`` depends on targets at positions <= t only.

* :class:`MQCNN`: causal dilated CNN encoder (GluonTS defaults) + forking MLP decoder + IQF head.
* :class:`MQTransformer`: MQ-CNN + horizon-specific attention over the encoded history, queries from the horizon's
  covariates (holiday distances act as the positional encoding), keys from encoder states and covariates.
* :class:`SPADE`: a "rest" branch = MQ-CNN on the peak-masked (forward-filled) history with a scale from the same
  masked history, plus a peak branch = Peak Attention over past PE positions only (additive −inf mask), whose
  non-crossing adjustment is added on horizon days flagged PE: ``q = s·(q_base + pe_{t+h}·δ)``.

Scaling (ours, see docs/spade.md): a causal trailing mean ``s_τ`` of |y| over ``scale_window`` days; the encoder
reads ``y_τ / s_τ`` and ``log s_τ``, fork ``t`` outputs ``s_t ×`` the decoded quantiles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from framework.models.components.forecasting.attention import MaskedHorizonAttention
from framework.models.components.forecasting.causal_conv import CausalConvEncoder
from framework.models.components.forecasting.decoder import ForkingMLPDecoder
from framework.models.components.forecasting.forking import gather_horizon
from framework.models.components.forecasting.quantile_head import IncrementalQuantileHead, validate_quantiles
from framework.models.components.forecasting.scaling import forward_fill_peaks, rolling_mean_scale

__all__ = ["ForecastOutput", "MQCNN", "MQTransformer", "SPADE", "DEFAULT_QUANTILES"]

DEFAULT_QUANTILES = (0.025, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.975)


@dataclass
class ForecastOutput:
    """``quantiles [B, F, H, Q]`` (demand units), ``scale [B, F]``, ``fork_positions [F]``; SPADE also fills
    ``base [B, F, H, Q]`` (the rest branch, demand units), ``peak_weights [B, heads, F, H, L]`` (on request)."""

    quantiles: Tensor
    scale: Tensor
    fork_positions: Tensor
    base: Tensor | None = None
    peak_weights: Tensor | None = None


def _check_int(name: str, value, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


class _ForkingForecaster(nn.Module):
    """Shared encoder, decoder and input checks (MQ-CNN layout)."""

    mask_peaks = False

    def __init__(self, *, num_features: int, horizon: int, quantiles: Sequence[float] = DEFAULT_QUANTILES,
                 channels: Sequence[int] = (30, 30, 30), kernel_sizes: Sequence[int] = (7, 3, 3),
                 dilations: Sequence[int] = (1, 3, 9), decoder_dim: int = 30, scale_window: int = 28,
                 extra_dim: int = 0, hidden_history_features: Sequence[int] = ()) -> None:
        super().__init__()
        _check_int("num_features", num_features, 1)
        _check_int("horizon", horizon, 1)
        _check_int("decoder_dim", decoder_dim, 1)
        _check_int("scale_window", scale_window, 1)
        self.quantiles = validate_quantiles(quantiles)
        hidden = sorted({int(i) for i in hidden_history_features})
        if any(i < 0 or i >= num_features for i in hidden):
            raise ValueError(f"hidden_history_features must index the {num_features} covariates, got {hidden}")
        self.hidden_history_features = hidden
        self.num_features, self.horizon, self.scale_window = num_features, horizon, scale_window
        # Encoder inputs per step: y/s, log s, covariates.
        self.encoder = CausalConvEncoder(in_features=2 + num_features, channels=list(channels),
                                         kernel_sizes=list(kernel_sizes), dilations=list(dilations))
        self.enc_dim = self.encoder.out_features + 1  # + log scale at the fork
        self.decoder = ForkingMLPDecoder(enc_dim=self.enc_dim, horizon=horizon, num_features=num_features,
                                         dim=decoder_dim, extra_dim=extra_dim)
        self.head = IncrementalQuantileHead(in_features=decoder_dim, num_quantiles=len(self.quantiles))

    # ------------------------------------------------------------------ checks
    def _check(self, target_past: Tensor, features: Tensor, peak: Tensor, fork_positions: Tensor | None) -> Tensor:
        if target_past.dim() != 2:
            raise ValueError(f"target_past must be [B, L], got shape {list(target_past.shape)}")
        B, L = target_past.shape
        if features.dim() != 3 or features.shape[0] != B or features.shape[2] != self.num_features:
            raise ValueError(f"features must be [B={B}, L + H, C={self.num_features}], got {list(features.shape)}")
        if peak.shape != features.shape[:2]:
            raise ValueError(f"peak flags must be [B, L + H] like the covariates {list(features.shape[:2])}, got "
                             f"{list(peak.shape)}")
        if fork_positions is None:
            fork_positions = torch.tensor([L - 1], device=target_past.device)
        fork_positions = torch.as_tensor(fork_positions, device=target_past.device, dtype=torch.long)
        if fork_positions.numel() == 0 or int(fork_positions.min()) < 0 or int(fork_positions.max()) >= L:
            raise ValueError(f"fork positions must lie in [0, L={L}), got {fork_positions.tolist()}")
        needed = int(fork_positions.max()) + 1 + self.horizon
        if features.shape[1] < needed:
            raise ValueError(f"known covariates and peak flags must cover the forecast horizon: forks up to position "
                             f"{int(fork_positions.max())} with horizon {self.horizon} need {needed} steps, got "
                             f"{features.shape[1]}")
        horizon_flags = peak[:, L:needed]
        if not torch.isfinite(horizon_flags).all() or ((horizon_flags != 0) & (horizon_flags != 1)).any():
            raise ValueError("peak flags of the forecast horizon are missing (NaN) or not 0/1; SPADE and the MQ "
                             "forecasters need the known-future peak flags for every forecast day")
        return fork_positions

    # ------------------------------------------------------------------ pieces
    def encode(self, target_past: Tensor, features: Tensor, peak: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(enc [B, L, E_conv], scale [B, L], history [B, L])``; ``history`` is the series the encoder saw."""
        L = target_past.shape[1]
        if self.mask_peaks:
            history, observed = forward_fill_peaks(target_past, peak[:, :L])
        else:
            history, observed = target_past, torch.ones_like(target_past, dtype=torch.bool)
        scale = rolling_mean_scale(history, observed, self.scale_window)
        past = features[:, :L]
        if self.hidden_history_features:  # ablation: the encoder does not see these covariates' history
            past = past.clone()
            past[..., self.hidden_history_features] = 0.0
        x = torch.cat([(history / scale)[..., None], scale.log()[..., None], past], dim=-1)
        return self.encoder(x), scale, history

    def fork_states(self, enc: Tensor, scale: Tensor, forks: Tensor) -> Tensor:
        """``[B, F, E]``: encoder state and log scale at every fork."""
        return torch.cat([enc[:, forks], scale[:, forks].log()[..., None]], dim=-1)

    def forward(self, target_past: Tensor, features: Tensor, peak: Tensor, fork_positions: Tensor | None = None,
                *, return_attention: bool = False) -> ForecastOutput:
        forks = self._check(target_past, features, peak, fork_positions)
        enc, scale, _ = self.encode(target_past, features, peak)
        future = gather_horizon(features, forks, self.horizon)
        hidden = self.decoder(self.fork_states(enc, scale, forks), future)
        s = scale[:, forks]
        return ForecastOutput(quantiles=self.head(hidden) * s[..., None, None], scale=s, fork_positions=forks)


class MQCNN(_ForkingForecaster):
    """MQ-CNN (Wen et al. 2017) with GluonTS's defaults.

    Args:
        num_features: C known covariates per step. horizon: H. quantiles: output levels (GluonTS's 11 by default).
        channels, kernel_sizes, dilations: encoder (GluonTS: [30, 30, 30], [7, 3, 3], [1, 3, 9]).
        decoder_dim: decoder context width (30). scale_window: days of the trailing-mean scale.
        hidden_history_features: covariate indices zeroed in the encoder's history (an ablation: with the peak
            flags hidden the encoder cannot tell a spike from a level change); the horizon still sees them.
    """


def _causal_allowed(forks: Tensor, length: int) -> Tensor:
    """``[F, L]``: position τ <= fork t."""
    return torch.arange(length, device=forks.device)[None, :] <= forks[:, None]


class MQTransformer(_ForkingForecaster):
    """MQ-CNN + horizon-specific attention over the encoded history (MQ-Transformer's context alignment).

    The query of ``(t, h)`` reads the covariates of day ``t+h`` (calendar, event flags, holiday distances: the
    event-based positional encoding) and the fork's encoder state; keys read each past day's encoder state and
    covariates; values its encoder state; positions after ``t`` are masked. The decoder self-attention over
    previous forecasts of the paper is not included (note §1.5).

    Args: as :class:`MQCNN`, plus ``d_model`` and ``num_heads`` of the attention.
    """

    def __init__(self, *, num_features: int, horizon: int, quantiles: Sequence[float] = DEFAULT_QUANTILES,
                 channels: Sequence[int] = (30, 30, 30), kernel_sizes: Sequence[int] = (7, 3, 3),
                 dilations: Sequence[int] = (1, 3, 9), decoder_dim: int = 30, scale_window: int = 28,
                 d_model: int = 32, num_heads: int = 4) -> None:
        super().__init__(num_features=num_features, horizon=horizon, quantiles=quantiles, channels=channels,
                         kernel_sizes=kernel_sizes, dilations=dilations, decoder_dim=decoder_dim,
                         scale_window=scale_window, extra_dim=d_model)
        conv_dim = self.encoder.out_features
        self.attention = MaskedHorizonAttention(query_dim=num_features + self.enc_dim, key_dim=conv_dim + num_features,
                                                value_dim=conv_dim, d_model=d_model, num_heads=num_heads)

    def forward(self, target_past: Tensor, features: Tensor, peak: Tensor, fork_positions: Tensor | None = None,
                *, return_attention: bool = False) -> ForecastOutput:
        forks = self._check(target_past, features, peak, fork_positions)
        L = target_past.shape[1]
        enc, scale, _ = self.encode(target_past, features, peak)
        future = gather_horizon(features, forks, self.horizon)
        state = self.fork_states(enc, scale, forks)
        queries = torch.cat([future, state[:, :, None].expand(-1, -1, self.horizon, -1)], dim=-1)
        allowed = _causal_allowed(forks, L).expand(target_past.shape[0], -1, -1)
        attended = self.attention(queries, torch.cat([enc, features[:, :L]], dim=-1), enc, allowed)
        hidden = self.decoder(state, future, attended.context)
        s = scale[:, forks]
        return ForecastOutput(quantiles=self.head(hidden) * s[..., None, None], scale=s, fork_positions=forks)


class SPADE(_ForkingForecaster):
    """Split Peak Attention DEcomposition (our reconstruction, note §1.3; no public code exists).

    Rest branch: MQ-CNN on the forward-filled history (PE days replaced by the last non-PE value), scaled by the
    trailing mean of that masked history. Peak branch: Peak Attention whose query for ``(t, h)`` reads day ``t+h``'s
    covariates and the fork state, keys each past day's encoder state and covariates, values the past day's peak
    increment ``(y_τ − ỹ_τ)/s_τ`` and covariates; only past PE positions ``τ <= t`` with ``pe_τ = 1`` are allowed
    (additive −inf mask; a learned default when there is none). An MLP maps the attended context, the fork state and
    the horizon covariates to a non-crossing adjustment δ, added on PE days:
    ``q = s_t · (q_base + pe_{t+h} · δ)`` (a sum of non-decreasing vectors, so quantiles still do not cross).

    Args: as :class:`MQTransformer`.
    """

    mask_peaks = True

    def __init__(self, *, num_features: int, horizon: int, quantiles: Sequence[float] = DEFAULT_QUANTILES,
                 channels: Sequence[int] = (30, 30, 30), kernel_sizes: Sequence[int] = (7, 3, 3),
                 dilations: Sequence[int] = (1, 3, 9), decoder_dim: int = 30, scale_window: int = 28,
                 d_model: int = 32, num_heads: int = 4) -> None:
        super().__init__(num_features=num_features, horizon=horizon, quantiles=quantiles, channels=channels,
                         kernel_sizes=kernel_sizes, dilations=dilations, decoder_dim=decoder_dim,
                         scale_window=scale_window)
        conv_dim = self.encoder.out_features
        self.peak_attention = MaskedHorizonAttention(
            query_dim=num_features + self.enc_dim, key_dim=conv_dim + num_features, value_dim=1 + num_features,
            d_model=d_model, num_heads=num_heads)
        self.peak_mlp = nn.Sequential(nn.Linear(d_model + self.enc_dim + num_features, decoder_dim), nn.ReLU())
        self.peak_head = IncrementalQuantileHead(in_features=decoder_dim, num_quantiles=len(self.quantiles))

    def forward(self, target_past: Tensor, features: Tensor, peak: Tensor, fork_positions: Tensor | None = None,
                *, return_attention: bool = False) -> ForecastOutput:
        forks = self._check(target_past, features, peak, fork_positions)
        B, L = target_past.shape
        enc, scale, history = self.encode(target_past, features, peak)
        future = gather_horizon(features, forks, self.horizon)
        state = self.fork_states(enc, scale, forks)
        base = self.head(self.decoder(state, future))                                  # [B, F, H, Q] scaled
        past_peak = peak[:, :L] > 0.5
        increment = torch.where(past_peak, (target_past - history) / scale, torch.zeros_like(target_past))
        queries = torch.cat([future, state[:, :, None].expand(-1, -1, self.horizon, -1)], dim=-1)
        allowed = _causal_allowed(forks, L)[None] & past_peak[:, None, :]
        attended = self.peak_attention(queries, torch.cat([enc, features[:, :L]], dim=-1),
                                       torch.cat([increment[..., None], features[:, :L]], dim=-1), allowed,
                                       return_weights=return_attention)
        delta = self.peak_head(self.peak_mlp(torch.cat(
            [attended.context, state[:, :, None].expand(-1, -1, self.horizon, -1), future], dim=-1)))
        future_peak = gather_horizon(peak, forks, self.horizon)[..., None]
        s = scale[:, forks][..., None, None]
        return ForecastOutput(quantiles=s * (base + future_peak * delta), scale=scale[:, forks], fork_positions=forks,
                              base=s * base, peak_weights=attended.weights)
