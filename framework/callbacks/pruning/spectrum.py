"""Empirical spectral density (ESD) of a weight: the eigenvalues of WᵀW.

A Linear weight ``[out, in]`` is one matrix. A Conv weight ``[out, in, *kernel]`` is one ``out x in`` matrix per
spatial position of the kernel, scaled by ``sqrt(conv_norm)`` (0.5 as in AlphaPruning and WeightWatcher), and the
eigenvalues of all positions are pooled into one ESD.

Eigenvalues are the squared singular values, with no 1/N normalisation (α is scale-invariant). The default
``method="gram"`` forms the Gram matrix on the small side and calls ``eigvalsh`` — about 10x faster than
``svdvals`` on a GPU and 2x on a CPU, at fp32 relative error ~1e-6 on the large eigenvalues (the power-law tail);
``method="svd"`` is the reference path. Computation happens on the weight's device, in float32 (or float64) even for
half-precision weights.
"""

from __future__ import annotations

import math

import torch

__all__ = ["EIGENVALUE_METHODS", "weight_matrices", "weight_eigenvalues"]

EIGENVALUE_METHODS = ("gram", "svd")


def weight_matrices(weight: torch.Tensor, *, conv_norm: float = 0.5) -> torch.Tensor:
    """The stack of matrices whose spectra make the ESD.

    Args:
        weight: ``[out, in]`` (Linear) or ``[out, in, k1, ..., kd]`` (Conv, ``d`` in 1..3).
        conv_norm: conv matrices are multiplied by ``sqrt(conv_norm)``.

    Returns:
        ``[P, out, in]`` with ``P = 1`` for a Linear weight and ``P = k1 * ... * kd`` for a Conv weight.
    """
    if weight.dim() < 2:
        raise ValueError(f"a weight needs at least 2 dimensions to have a spectrum, got shape {tuple(weight.shape)}")
    if weight.dim() == 2:
        return weight.unsqueeze(0)
    out_channels, in_channels = weight.shape[:2]
    # [out, in, P] -> [P, out, in]: one matrix per kernel position.
    stacked = weight.reshape(out_channels, in_channels, -1).permute(2, 0, 1)
    return stacked * math.sqrt(conv_norm)


def weight_eigenvalues(
    weight: torch.Tensor, *, method: str = "gram", dtype: torch.dtype = torch.float32, conv_norm: float = 0.5
) -> torch.Tensor:
    """All eigenvalues of WᵀW (pooled over conv positions), sorted ascending, on ``weight.device``.

    Args:
        weight: ``[out, in]`` or ``[out, in, *kernel]``, any floating dtype.
        method: ``"gram"`` (eigvalsh of the Gram matrix on the small side) or ``"svd"`` (squared ``svdvals``).
        dtype: ``torch.float32`` or ``torch.float64`` (the computation dtype).
        conv_norm: see :func:`weight_matrices`.

    Returns:
        ``[P * min(out, in)]`` eigenvalues in ``dtype``, ascending; tiny negative Gram round-off is clamped to 0.
    """
    if method not in EIGENVALUE_METHODS:
        raise ValueError(f"method must be one of {list(EIGENVALUE_METHODS)}, got {method!r}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    matrices = weight_matrices(weight.detach().to(dtype), conv_norm=conv_norm)
    if method == "svd":
        eigenvalues = torch.linalg.svdvals(matrices).square()
    else:
        rows, cols = matrices.shape[-2:]
        gram = matrices.mT @ matrices if cols <= rows else matrices @ matrices.mT
        eigenvalues = torch.linalg.eigvalsh(gram).clamp_min(0.0)
    return eigenvalues.flatten().sort().values
