"""The CGM-GM network: a conditional dynamic VAE over log-amplitude spectrogram frames.

Posterior GRU ``q(z_t | x_≤t, c)``, sequential GRU prior ``p(z_t | z_<t, c)`` unrolled on its own samples, a
per-frame MLP decoder, and a condition embedding shared by all three (research note §2.3). With the best
configuration (C = 6, n_cond = 16, z_dim = 32, z_rnn_dim = 32, F = 81) it has 173,009 trainable parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from framework.models.components.cgm_gm.decoder import FrameDecoder
from framework.models.components.cgm_gm.embedding import ConditionEmbedding
from framework.models.components.cgm_gm.gaussian import gaussian_kl, reparameterize
from framework.models.components.cgm_gm.posterior import GRUPosterior
from framework.models.components.cgm_gm.prior import SequentialPrior

__all__ = ["DynamicVAEOutput", "GroundMotionDVAE"]


@dataclass
class DynamicVAEOutput:
    """Outputs of one posterior pass; every tensor ``[B, T, ·]``.

    Attributes:
        reconstruction: decoded scaled log amplitude ``[B, T, F]``.
        z: posterior samples; ``mean_q``/``logvar_q``: posterior; ``mean_p``/``logvar_p``: sequential prior.
        kl: elementwise KL ``[B, T, z_dim]`` of the posterior against the prior.
    """

    reconstruction: Tensor
    z: Tensor
    mean_q: Tensor
    logvar_q: Tensor
    mean_p: Tensor
    logvar_p: Tensor
    kl: Tensor


class GroundMotionDVAE(nn.Module):
    """Conditional dynamic VAE (keyword-only sizes; defaults = the best CGM-GM configuration).

    Args:
        num_conditions: C, conditioning variables (6).
        num_frequencies: F, spectrogram bins (81).
        embedding_dim: n_cond (16).
        z_dim: latent size per frame (32).
        z_rnn_dim: prior GRUCell width (32).
        posterior_rnn_dim: base width of the posterior GRU (128; the GRU has 128 + n_cond units).
        posterior_mlp_hidden: hidden width of the posterior heads (64).
        decoder_hidden: decoder width (128).
        embedding_hidden: hidden width of the condition MLP (32).
        faithful: reparameterise with the released code's ``σ = 0.5·exp(logvar)``.
    """

    def __init__(self, *, num_conditions: int = 6, num_frequencies: int = 81, embedding_dim: int = 16,
                 z_dim: int = 32, z_rnn_dim: int = 32, posterior_rnn_dim: int = 128, posterior_mlp_hidden: int = 64,
                 decoder_hidden: int = 128, embedding_hidden: int = 32, faithful: bool = False) -> None:
        super().__init__()
        for name, value in (("num_conditions", num_conditions), ("num_frequencies", num_frequencies),
                            ("embedding_dim", embedding_dim), ("z_dim", z_dim), ("z_rnn_dim", z_rnn_dim),
                            ("posterior_rnn_dim", posterior_rnn_dim), ("posterior_mlp_hidden", posterior_mlp_hidden),
                            ("decoder_hidden", decoder_hidden), ("embedding_hidden", embedding_hidden)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.embedding = ConditionEmbedding(num_conditions=num_conditions, embedding_dim=embedding_dim,
                                            hidden_dim=embedding_hidden)
        self.posterior = GRUPosterior(num_frequencies=num_frequencies, embedding_dim=embedding_dim, z_dim=z_dim,
                                      rnn_dim=posterior_rnn_dim, mlp_hidden=posterior_mlp_hidden)
        self.prior = SequentialPrior(z_dim=z_dim, embedding_dim=embedding_dim, rnn_dim=z_rnn_dim)
        self.decoder = FrameDecoder(z_dim=z_dim, embedding_dim=embedding_dim, num_frequencies=num_frequencies,
                                    hidden_dim=decoder_hidden)
        self.num_conditions, self.num_frequencies, self.faithful = num_conditions, num_frequencies, faithful

    def forward(self, x: Tensor, condition: Tensor) -> DynamicVAEOutput:
        """``x [B, T, F]`` scaled log amplitude, ``condition [B, C]`` -> :class:`DynamicVAEOutput`."""
        if x.dim() != 3 or x.shape[-1] != self.num_frequencies:
            raise ValueError(f"x must be [B, T, {self.num_frequencies}], got {tuple(x.shape)}")
        if condition.shape[0] != x.shape[0]:
            raise ValueError(f"batch sizes differ: x {x.shape[0]}, condition {condition.shape[0]}")
        cond = self.embedding(condition, x.shape[1])
        mean_q, logvar_q = self.posterior(x, cond)
        z = reparameterize(mean_q, logvar_q, faithful=self.faithful)
        _, mean_p, logvar_p = self.prior(cond, faithful=self.faithful)
        return DynamicVAEOutput(reconstruction=self.decoder(z, cond), z=z, mean_q=mean_q, logvar_q=logvar_q,
                                mean_p=mean_p, logvar_p=logvar_p, kl=gaussian_kl(mean_q, logvar_q, mean_p, logvar_p))

    @torch.no_grad()
    def generate(self, condition: Tensor, num_frames: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Sample the prior and decode: ``condition [B, C]`` -> scaled log amplitude ``[B, T, F]``."""
        cond = self.embedding(condition, num_frames)
        z, _, _ = self.prior(cond, faithful=self.faithful, generator=generator)
        return self.decoder(z, cond)
