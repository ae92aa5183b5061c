"""Sequential prior ``p(z_t | z_<t, c)`` of CGM-GM: a GRUCell unrolled on its *own* samples (no x in the prior)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from framework.models.components.cgm_gm.gaussian import reparameterize

__all__ = ["SequentialPrior"]


class SequentialPrior(nn.Module):
    """``h_t = GRUCell([z_{t-1} ‖ c_t], h_{t-1})``, ``(μ_t, log σ_t²) = Linear(h_t)``, ``z_t ~ N(μ_t, σ_t²)``.

    ``z_0 ~ N(0, I)`` and ``h_0 = 0``; the chain is sampled step by step (as in S3VAE / C-DSVAE), so the prior of
    frame t depends on the condition and on the prior's own earlier samples. The noise of all steps is one draw
    ``ε [T + 1, B, z_dim]`` from ``generator`` (``ε_0`` gives ``z_0``, ``ε_t`` the sample of frame t).

    Args:
        z_dim: latent size per frame.
        embedding_dim: n_cond.
        rnn_dim: GRUCell width (z_rnn_dim).
    """

    def __init__(self, *, z_dim: int, embedding_dim: int, rnn_dim: int) -> None:
        super().__init__()
        self.cell = nn.GRUCell(z_dim + embedding_dim, rnn_dim)
        self.mean = nn.Linear(rnn_dim, z_dim)
        self.logvar = nn.Linear(rnn_dim, z_dim)
        self.z_dim, self.rnn_dim = z_dim, rnn_dim

    def forward(self, cond: Tensor, *, faithful: bool = False, generator: torch.Generator | None = None
                ) -> tuple[Tensor, Tensor, Tensor]:
        """``cond [B, T, n_cond]`` -> ``samples, means, logvars`` each ``[B, T, z_dim]``."""
        batch, frames, _ = cond.shape
        # The unroll is launch-bound (a few tiny kernels per frame, 131 frames): all frames' noise is drawn in one
        # call (on CPU the same numbers as one draw per frame) and the two heads are one matmul.
        noise = torch.randn(frames + 1, batch, self.z_dim, dtype=cond.dtype, device=cond.device, generator=generator)
        head_weight = torch.cat([self.mean.weight, self.logvar.weight])
        head_bias = torch.cat([self.mean.bias, self.logvar.bias])
        z = noise[0]
        h = cond.new_zeros(batch, self.rnn_dim)
        samples, means, logvars = [], [], []
        for t in range(frames):
            h = self.cell(torch.cat([z, cond[:, t]], dim=-1), h)
            mean, logvar = torch.nn.functional.linear(h, head_weight, head_bias).split(self.z_dim, dim=-1)
            z = reparameterize(mean, logvar, faithful=faithful, noise=noise[t + 1])
            samples.append(z)
            means.append(mean)
            logvars.append(logvar)
        return torch.stack(samples, 1), torch.stack(means, 1), torch.stack(logvars, 1)
