"""Residual SSM block (norm, S4D, GELU, dropout, output mixing) and the deep SSM backbone."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from framework.validation import require_choice, require_probability
from framework.models.components.ssm.s4d_layer import S4D

__all__ = ["SSMBlock", "DeepSSM", "NORMS", "MIXINGS", "POOLINGS"]

NORMS = ("batch", "layer", "none")
MIXINGS = ("glu", "linear", "none")
POOLINGS = ("mean", "last", "none")


class _Norm(nn.Module):
    """LayerNorm / BatchNorm over the feature dimension of ``[B, L, H]``, or identity."""

    def __init__(self, kind: str, d_model: int) -> None:
        super().__init__()
        self.kind = kind
        self.norm = {"batch": lambda: nn.BatchNorm1d(d_model), "layer": lambda: nn.LayerNorm(d_model),
                     "none": nn.Identity}[kind]()

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "batch":
            return self.norm(x.transpose(1, 2)).transpose(1, 2)
        return self.norm(x)


class SSMBlock(nn.Module):
    """``x [B, L, H] -> [B, L, H]``: ``x + mix(drop(GELU(S4D(norm(x)))))`` (pre-norm) or ``norm(x + ...)`` (post-norm).

    ``mixing="glu"``: Linear(C·H -> 2H) then GLU (S4's default); ``"linear"``: Linear(C·H -> H); ``"none"``: no mixing
    (needs C = 1). ``residual=False`` drops the skip connection (single-layer toy models).
    """

    def __init__(self, *, d_model: int, norm: str = "layer", prenorm: bool = True, dropout: float = 0.0,
                 mixing: str = "glu", residual: bool = True, **s4d_kwargs) -> None:
        super().__init__()
        require_choice("norm", norm, NORMS)
        require_choice("mixing", mixing, MIXINGS)
        require_probability("dropout", dropout)
        self.ssm = S4D(d_model=d_model, **s4d_kwargs)
        width = self.ssm.channels * d_model
        if mixing == "none" and self.ssm.channels != 1:
            raise ValueError(f"mixing='none' needs channels=1, got channels={self.ssm.channels}")
        self.norm = _Norm(norm, d_model)
        self.prenorm = prenorm
        self.residual = residual
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        if mixing == "glu":
            self.mix: nn.Module = nn.Sequential(nn.Linear(width, 2 * d_model), nn.GLU(dim=-1))
        elif mixing == "linear":
            self.mix = nn.Linear(width, d_model)
        else:
            self.mix = nn.Identity()

    def forward(self, x: Tensor, kernel_spectrum: Tensor | None = None) -> Tensor:
        """``kernel_spectrum``: the S4D layer's precomputed kernel rFFT (``S4D.kernel_spectra``), or None."""
        z = self.norm(x) if self.prenorm else x
        z = self.dropout(self.activation(self.ssm(z, kernel_spectrum)))
        z = self.dropout(self.mix(z))
        if self.residual:
            z = z + x
        return z if self.prenorm else self.norm(z)


class DeepSSM(nn.Module):
    """Encoder -> n_layers × :class:`SSMBlock` -> pooling -> decoder.

    Inputs: floats ``[B, L]`` / ``[B, L, d_input]`` (``vocab_size=None``) or token ids ``[B, L]`` (``vocab_size`` set).
    Output: ``[B, d_output]`` (pooling "mean"/"last") or ``[B, L, d_output]`` (pooling "none").
    ``lengths [B]`` (optional) marks the valid prefix of padded sequences for pooling.
    """

    def __init__(self, *, d_output: int, d_model: int = 128, n_layers: int = 4, d_input: int = 1,
                 vocab_size: int | None = None, pooling: str = "mean", final_norm: bool = False, **block_kwargs) -> None:
        super().__init__()
        for name, value in (("d_output", d_output), ("d_model", d_model), ("n_layers", n_layers), ("d_input", d_input)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if vocab_size is not None and (not isinstance(vocab_size, int) or vocab_size < 2):
            raise ValueError(f"vocab_size must be an integer >= 2 or None, got {vocab_size!r}")
        require_choice("pooling", pooling, POOLINGS)
        self.vocab_size = vocab_size
        self.d_input = d_input
        self.encoder = nn.Embedding(vocab_size, d_model) if vocab_size else nn.Linear(d_input, d_model)
        self.blocks = nn.ModuleList(SSMBlock(d_model=d_model, **block_kwargs) for _ in range(n_layers))
        self.final_norm = nn.LayerNorm(d_model) if final_norm else nn.Identity()
        self.pooling = pooling
        self.decoder = nn.Linear(d_model, d_output)

    def ssm_layers(self) -> list[S4D]:
        return [block.ssm for block in self.blocks]

    def encode(self, x: Tensor) -> Tensor:
        if self.vocab_size:
            if x.dim() != 2 or x.dtype not in (torch.int64, torch.int32):
                raise ValueError(f"token input must be integer ids [B, L], got {x.dtype} {list(x.shape)}")
            return self.encoder(x)
        if x.dim() == 2:
            x = x[..., None]
        if x.dim() != 3 or x.shape[-1] != self.d_input:
            raise ValueError(f"input must be [B, L] or [B, L, d_input={self.d_input}], got {list(x.shape)}")
        return self.encoder(x.to(self.encoder.weight.dtype))

    def features(self, x: Tensor) -> Tensor:
        """Per-step features ``[B, L, d_model]`` after the last block."""
        z = self.encode(x)
        # All layers' kernels (and their FFTs) in one batched pass: 1/n_layers of the kernel launches.
        spectra = S4D.kernel_spectra(self.ssm_layers(), z.shape[1]) or [None] * len(self.blocks)
        for block, spectrum in zip(self.blocks, spectra):
            z = block(z, spectrum)
        return self.final_norm(z)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        z = self.features(x)
        if self.pooling == "none":
            return self.decoder(z)
        if lengths is None:
            pooled = z.mean(dim=1) if self.pooling == "mean" else z[:, -1]
        else:
            steps = torch.arange(z.shape[1], device=z.device)
            mask = (steps[None, :] < lengths[:, None]).to(z.dtype)  # [B, L]
            if self.pooling == "mean":
                pooled = (z * mask[..., None]).sum(1) / lengths.clamp_min(1)[:, None].to(z.dtype)
            else:
                pooled = z[torch.arange(z.shape[0], device=z.device), (lengths - 1).clamp_min(0)]
        return self.decoder(pooled)
