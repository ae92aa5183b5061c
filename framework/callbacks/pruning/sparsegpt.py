"""SparseGPT (Frantar & Alistarh, 2023): prune with Optimal-Brain-Surgeon updates of the remaining weights.

With the layer Hessian H = 2 XᵀX / tokens (``[in, in]``, X the calibration inputs), damped by ``percdamp`` times its
mean diagonal, and U the upper Cholesky factor of H⁻¹, columns are processed left to right in blocks of
``blocksize``. In each block the mask drops the ``round(sparsity · rows · block)`` smallest w² / U_jj² (the OBS
saliency, all rows of the block compared together), then column by column the pruned weights are zeroed and the
error (w − q) / U_jj is propagated to the not-yet-processed columns through row j of U (lazy batch updates across
blocks).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from framework.callbacks.pruning.magnitude import lowest_scores_mask

__all__ = ["SparseGPTResult", "sparsegpt_prune"]


@dataclass
class SparseGPTResult:
    """Output of :func:`sparsegpt_prune`.

    Attributes:
        weight: updated weight, shaped and typed like the input, zeros where pruned.
        mask: keep-mask (True = kept), shaped like the weight.
    """

    weight: torch.Tensor
    mask: torch.Tensor


def _upper_inverse_cholesky(hessian: torch.Tensor, percdamp: float) -> torch.Tensor:
    damp = percdamp * torch.diagonal(hessian).mean()
    eye = torch.eye(hessian.shape[0], dtype=hessian.dtype, device=hessian.device)
    damped = hessian + damp * eye
    for attempt in range(5):
        factor, info = torch.linalg.cholesky_ex(damped)
        if int(info) == 0:
            inverse = torch.cholesky_inverse(factor)
            upper, info = torch.linalg.cholesky_ex(inverse, upper=True)
            if int(info) == 0:
                return upper
        # Not positive definite in floating point: damp harder (10x per attempt).
        damped = damped + damp * (10.0 ** attempt) * eye
    raise ValueError("SparseGPT: the calibration Hessian is not positive definite even after damping; "
                     "use more calibration data or a larger percdamp")


def sparsegpt_prune(
    weight: torch.Tensor, hessian: torch.Tensor, sparsity: float, *, blocksize: int = 128, percdamp: float = 0.01
) -> SparseGPTResult:
    """Prune ``weight`` to ``sparsity`` with SparseGPT's OBS reconstruction.

    Args:
        weight: ``[out, in]`` or ``[out, in, *k]`` (conv weights use unfolded inputs: ``in · prod(k)`` features).
        hessian: ``[F, F]`` with ``F`` the inputs per output (XᵀX up to a positive factor).
        sparsity: fraction of weights dropped in every column block.
        blocksize: columns per block (128 in the paper).
        percdamp: damping as a fraction of the mean Hessian diagonal (0.01).

    Returns:
        :class:`SparseGPTResult`.
    """
    if blocksize < 1:
        raise ValueError(f"blocksize must be >= 1, got {blocksize}")
    if percdamp <= 0:
        raise ValueError(f"percdamp must be > 0, got {percdamp}")
    shape, dtype = weight.shape, weight.dtype
    w = weight.detach().reshape(shape[0], -1).to(torch.float32).clone()
    rows, cols = w.shape
    if hessian.shape != (cols, cols):
        raise ValueError(f"hessian must be [{cols}, {cols}] for weight {tuple(shape)}, got {tuple(hessian.shape)}")
    h = hessian.to(device=w.device, dtype=torch.float32).clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0  # inputs never active: their weights are free to drop
    w[:, dead] = 0.0
    hinv = _upper_inverse_cholesky(h, percdamp)
    keep = torch.ones_like(w, dtype=torch.bool)
    for start in range(0, cols, blocksize):
        end = min(start + blocksize, cols)
        block = w[:, start:end].clone()
        hinv_block = hinv[start:end, start:end]
        diag = torch.diagonal(hinv_block)
        block_keep = lowest_scores_mask(block.square() / diag.square()[None, :], sparsity)
        quantised = torch.zeros_like(block)
        errors = torch.zeros_like(block)
        for i in range(end - start):
            column = block[:, i]
            q = torch.where(block_keep[:, i], column, torch.zeros_like(column))
            quantised[:, i] = q
            err = (column - q) / diag[i]
            block[:, i:] -= err[:, None] * hinv_block[i, i:][None, :]
            errors[:, i] = err
        w[:, start:end] = quantised
        keep[:, start:end] = block_keep
        w[:, end:] -= errors @ hinv[start:end, end:]
    w = torch.where(keep, w, torch.zeros_like(w))
    return SparseGPTResult(weight=w.view(shape).to(dtype), mask=keep.view(shape))
