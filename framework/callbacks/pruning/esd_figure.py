"""ESD plots: log-log histogram of each chosen layer's eigenvalues with its fitted power-law tail."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from framework.callbacks.pruning.spectral_metrics import SpectralMetrics

__all__ = ["esd_figure"]


def esd_figure(eigenvalues: Mapping[str, torch.Tensor], metrics: Mapping[str, SpectralMetrics], *, columns: int = 3):
    """A matplotlib Figure with one panel per layer: density of λ on log axes, x_min, and the fitted λ^{−α}.

    Args:
        eigenvalues: layer name → ``[N]`` eigenvalues.
        metrics: layer name → its :class:`SpectralMetrics` (α, x_min).
        columns: panels per row.
    """
    from framework.loggers import new_figure

    names = list(eigenvalues)
    rows = max(1, -(-len(names) // columns))
    fig = new_figure(figsize=(4.0 * min(columns, max(1, len(names))), 3.2 * rows))
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, min(columns, len(names)), i + 1)
        eigs = eigenvalues[name].double().cpu().numpy()
        eigs = eigs[eigs > 1e-5]
        if eigs.size < 2:
            ax.set_title(f"{name}\n(empty spectrum)", fontsize=8)
            continue
        bins = np.logspace(np.log10(eigs.min()), np.log10(eigs.max()), 60)
        density, edges = np.histogram(eigs, bins=bins, density=True)
        centers = np.sqrt(edges[1:] * edges[:-1])
        ax.loglog(centers[density > 0], density[density > 0], ".", color="tab:blue", label="ESD")
        m = metrics.get(name)
        if m is not None and m.fit_ok:
            ax.axvline(m.xmin, color="tab:red", linestyle="--", linewidth=1, label="x_min")
            tail = centers[centers >= m.xmin]
            if tail.size:
                # Power-law density of the tail, scaled to the fraction of eigenvalues in it.
                fraction = m.n_tail / eigs.size
                pdf = fraction * (m.alpha - 1) / m.xmin * (tail / m.xmin) ** (-m.alpha)
                ax.loglog(tail, pdf, color="tab:red", linewidth=1.2, label=f"α={m.alpha:.2f}")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("eigenvalue of WᵀW", fontsize=8)
        ax.set_ylabel("density", fontsize=8)
        ax.legend(fontsize=7)
    fig.suptitle("empirical spectral densities (ESD) with power-law fits", fontsize=9)
    fig.tight_layout()
    return fig
