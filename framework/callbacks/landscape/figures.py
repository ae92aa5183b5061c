"""Figures of the probes (matplotlib on the Agg canvas of :func:`framework.loggers.new_figure`; no pyplot)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from framework.callbacks.landscape.merge_tree import MINIMUM, ROOT, SublevelPersistence
from framework.loggers import new_figure

__all__ = ["landscape_figure", "merge_tree_figure", "persistence_diagram_figure", "spectral_density_figure",
           "surface_figure"]


def landscape_figure(axes: list[np.ndarray], losses: np.ndarray, *, title: str = "", log_scale: bool = True) -> Figure:
    """1-D: loss along the direction; 2-D: filled contour of ``losses`` ``[r, r]`` (log10 when positive)."""
    fig = new_figure(figsize=(5.0, 4.0))
    ax = fig.add_subplot()
    losses = np.asarray(losses, dtype=np.float64)
    use_log = log_scale and np.all(losses > 0)
    if losses.ndim == 1:
        ax.plot(axes[0], losses)
        ax.set_xlabel("α (step along the filter-normalised direction)")
        ax.set_ylabel("loss")
        if use_log:
            ax.set_yscale("log")
    else:
        shown = np.log10(losses) if use_log else losses
        contour = ax.contourf(axes[1], axes[0], shown, levels=30, cmap="viridis")
        ax.contour(axes[1], axes[0], shown, levels=15, colors="k", linewidths=0.3)
        ax.plot([0], [0], "r*", markersize=8, label="trained weights")
        ax.legend(loc="upper right", fontsize=7)
        fig.colorbar(contour, ax=ax, label="log10 loss" if use_log else "loss")
        ax.set_xlabel("α2 (step along direction 2)")
        ax.set_ylabel("α1 (step along direction 1)")
    ax.set_title(title or "loss landscape around the trained weights")
    fig.tight_layout()
    return fig


def surface_figure(axes: list[np.ndarray], losses: np.ndarray, *, title: str = "", log_scale: bool = True) -> Figure:
    """3-D surface of a 2-D landscape ``[r, r]``."""
    fig = new_figure(figsize=(5.0, 4.0))
    ax = fig.add_subplot(projection="3d")
    losses = np.asarray(losses, dtype=np.float64)
    use_log = log_scale and np.all(losses > 0)
    shown = np.log10(losses) if use_log else losses
    a2, a1 = np.meshgrid(axes[1], axes[0])
    ax.plot_surface(a2, a1, shown, cmap="viridis", linewidth=0, antialiased=False)
    ax.set_xlabel("α2")
    ax.set_ylabel("α1")
    ax.set_zlabel("log10 loss" if use_log else "loss")
    ax.set_title(title or "loss surface around the trained weights")
    return fig


def persistence_diagram_figure(diagram: SublevelPersistence, *, title: str = "") -> Figure:
    """Birth vs death of the finite pairs, plus the essential class drawn at the global maximum."""
    fig = new_figure(figsize=(4.0, 4.0))
    ax = fig.add_subplot()
    low, high = diagram.essential_birth, diagram.maximum
    if len(diagram.pairs):
        ax.scatter(diagram.pairs[:, 0], diagram.pairs[:, 1], s=10, label="finite pairs")
    ax.scatter([low], [high], marker="^", color="C3", s=30, label="essential (death = max)")
    ax.plot([low, high], [low, high], "k--", linewidth=0.7)
    ax.set_xlabel("birth (loss at minimum)")
    ax.set_ylabel("death (loss at saddle)")
    ax.legend(loc="lower right", fontsize=7)
    ax.set_title(title or "H0 persistence diagram of the loss")
    fig.tight_layout()
    return fig


def _leaf_positions(parent: np.ndarray) -> np.ndarray:
    """x positions: leaves left to right in depth-first order, internal nodes at the mean of their children."""
    n = len(parent)
    children: list[list[int]] = [[] for _ in range(n)]
    roots = []
    for i, p in enumerate(parent):
        (children[p] if p >= 0 else roots).append(i)
    x = np.zeros(n)
    counter = [0]

    def place(node: int) -> float:
        # Iterative post-order (trees can be deeper than Python's recursion limit on rough landscapes).
        stack = [(node, False)]
        while stack:
            current, visited = stack.pop()
            if not children[current]:
                x[current] = counter[0]
                counter[0] += 1
            elif visited:
                x[current] = np.mean([x[c] for c in children[current]])
            else:
                stack.append((current, True))
                stack.extend((c, False) for c in reversed(children[current]))
        return x[node]

    for root in roots:
        place(root)
    return x


def merge_tree_figure(diagram: SublevelPersistence, *, title: str = "") -> Figure:
    """The join tree: minima at the bottom, joins at their loss values, the root at the global maximum."""
    tree = diagram.tree
    fig = new_figure(figsize=(6.0, 4.0))
    ax = fig.add_subplot()
    x = _leaf_positions(tree.parent)
    y = tree.value
    for i, p in enumerate(tree.parent):
        if p >= 0:
            ax.plot([x[i], x[i], x[p]], [y[i], y[p], y[p]], color="0.3", linewidth=0.8)
    minima = tree.kind == MINIMUM
    ax.scatter(x[minima], y[minima], s=12, color="C0", label="minimum", zorder=3)
    ax.scatter(x[~minima & (tree.kind != ROOT)], y[~minima & (tree.kind != ROOT)], s=12, color="C1",
               label="saddle", zorder=3)
    ax.scatter(x[tree.kind == ROOT], y[tree.kind == ROOT], s=20, color="C3", marker="^", label="maximum", zorder=3)
    if np.all(y > 0):
        ax.set_yscale("log")
    ax.set_xticks([])
    ax.set_ylabel("loss")
    ax.legend(fontsize=7)
    ax.set_title(title or "merge tree of the loss (sublevel sets)")
    fig.tight_layout()
    return fig


def spectral_density_figure(grid: np.ndarray, density: np.ndarray, *, eigenvalues: np.ndarray | None = None,
                            title: str = "") -> Figure:
    """Eigenvalue spectral density on a log y-axis (PyHessian's plot), top eigenvalues marked."""
    fig = new_figure(figsize=(5.0, 3.5))
    ax = fig.add_subplot()
    ax.semilogy(grid, np.maximum(density, 1e-12), label="spectral density (SLQ)")
    if eigenvalues is not None:
        for i, value in enumerate(np.atleast_1d(eigenvalues)):
            ax.axvline(float(value), color="C3", linestyle=":", linewidth=0.8,
                       label="top eigenvalues (Lanczos)" if i == 0 else None)
    ax.set_ylim(1e-10, None)
    ax.set_xlabel("Hessian eigenvalue")
    ax.set_ylabel("density (per unit eigenvalue)")
    ax.legend(fontsize=7)
    ax.set_title(title or "Hessian eigenvalue spectral density")
    fig.tight_layout()
    return fig
