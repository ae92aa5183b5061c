"""Wanda: prune by |W_ij| · ‖X_j‖₂, the weight times the L2 norm of its input feature over calibration tokens.

The LLM code compares scores within each output row (``comparison="row"``: every row loses the same number of
weights); the image-classifier code compares over the whole layer (``"layer"``). Conv weights ``[out, in, *k]`` are
scored against the norms of their unfolded input patches (``in · prod(k)`` features).
"""

from __future__ import annotations

import torch

from framework.callbacks.pruning.magnitude import lowest_scores_mask

__all__ = ["WANDA_COMPARISONS", "wanda_scores", "wanda_mask"]

WANDA_COMPARISONS = ("row", "layer")


def wanda_scores(weight: torch.Tensor, input_sq_norms: torch.Tensor) -> torch.Tensor:
    """Scores ``|W| · sqrt(input_sq_norms)``.

    Args:
        weight: ``[out, in]`` or ``[out, in, *k]``.
        input_sq_norms: ``[in · prod(k)]`` sums (or means) of squared input features over calibration tokens.

    Returns:
        scores shaped like ``weight``.
    """
    matrix = weight.detach().reshape(weight.shape[0], -1)
    if input_sq_norms.numel() != matrix.shape[1]:
        raise ValueError(
            f"input_sq_norms has {input_sq_norms.numel()} features but the weight {tuple(weight.shape)} has "
            f"{matrix.shape[1]} inputs per output"
        )
    norms = input_sq_norms.to(device=matrix.device, dtype=torch.float32).clamp_min(0).sqrt()
    return (matrix.abs().float() * norms[None, :]).view(weight.shape)


def wanda_mask(
    weight: torch.Tensor, input_sq_norms: torch.Tensor, sparsity: float, *, comparison: str = "row"
) -> torch.Tensor:
    """Keep-mask (True = kept) of Wanda at ``sparsity`` (``comparison`` "row" or "layer")."""
    if comparison not in WANDA_COMPARISONS:
        raise ValueError(f"comparison must be one of {list(WANDA_COMPARISONS)}, got {comparison!r}")
    scores = wanda_scores(weight, input_sq_norms)
    if comparison == "layer":
        return lowest_scores_mask(scores, sparsity)
    rows = scores.reshape(scores.shape[0], -1)
    return lowest_scores_mask(rows, sparsity, dim=1).view(weight.shape)
