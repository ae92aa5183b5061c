"""Magnitude pruning: drop the smallest |W| of a layer (layer-global comparison, as in the public code)."""

from __future__ import annotations

import torch

__all__ = ["pruned_count", "lowest_scores_mask", "magnitude_mask"]


def pruned_count(numel: int, sparsity: float) -> int:
    """Number of entries pruned for ``sparsity`` of ``numel`` entries (round to nearest, as torch.nn.utils.prune)."""
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must lie in [0, 1], got {sparsity!r}")
    return int(round(sparsity * numel))


def lowest_scores_mask(scores: torch.Tensor, sparsity: float, *, dim: int | None = None) -> torch.Tensor:
    """Keep-mask (True = kept) that drops exactly the lowest ``round(sparsity · n)`` scores.

    Args:
        scores: any shape.
        sparsity: fraction to drop.
        dim: ``None`` compares all entries together; an int compares along that dim (e.g. ``dim=1`` of a
            ``[rows, cols]`` score drops the same count in every row, Wanda's per-output comparison).

    Returns:
        bool tensor shaped like ``scores``. Ties are broken by position (stable sort), so the count is exact.
    """
    if dim is None:
        flat = scores.flatten()
        k = pruned_count(flat.numel(), sparsity)
        if k == 0:
            return torch.ones_like(scores, dtype=torch.bool)
        if k == flat.numel():
            return torch.zeros_like(scores, dtype=torch.bool)
        # Selection instead of a full sort: the k-th smallest value splits the entries; ties at it are dropped in
        # position order until exactly k are gone.
        threshold = torch.kthvalue(flat.float().cpu() if flat.device.type == "mps" else flat, k).values
        keep = flat > threshold
        ties = torch.nonzero(flat == threshold).flatten()
        below = int((flat < threshold).sum())
        keep[ties[k - below :]] = True
        return keep.view_as(scores)
    moved = scores.movedim(dim, -1)
    k = pruned_count(moved.shape[-1], sparsity)
    keep = torch.ones_like(moved, dtype=torch.bool)
    if k:
        order = torch.argsort(moved, dim=-1, stable=True)[..., :k]
        keep.scatter_(-1, order, False)
    return keep.movedim(-1, dim)


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask of ``weight`` (any shape) dropping the ``round(sparsity · numel)`` smallest magnitudes."""
    return lowest_scores_mask(weight.detach().abs(), sparsity)
