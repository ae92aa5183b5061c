"""Figures of the polarization analysis: the distribution of W and η (with errors and bounds) over epochs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure

from framework.loggers import new_figure
from framework.metrics.ensemble_bounds import POLARIZATION_LAW_ETA, EnsembleStatistics

__all__ = ["w_histogram_figure", "polarization_history_figure"]


def w_histogram_figure(stats: EnsembleStatistics, *, title: str = "") -> Figure:
    """Bar chart of ``P(W = k / M)`` on a linear axis (bars start at 0), coloured by what the majority vote does on
    those points (legend), the majority-vote threshold at 1/2, and the key numbers in the title."""
    from matplotlib.patches import Patch

    fig = new_figure(figsize=(6.0, 3.8))
    ax = fig.add_subplot()
    m = stats.num_members
    levels = [k / m for k in range(m + 1)]
    kinds = {"right": ("tab:blue", "W < 1/2: majority right"), "tie": ("tab:orange", "W = 1/2: tie (tie rule decides)"),
             "wrong": ("tab:red", "W > 1/2: majority wrong")}
    kind_of = ["wrong" if 2 * k > m else "tie" if 2 * k == m else "right" for k in range(m + 1)]
    ax.bar(levels, stats.w_distribution, width=0.8 / m, color=[kinds[k][0] for k in kind_of])
    threshold = ax.axvline(0.5, color="k", linestyle="--", linewidth=1)
    ax.set_xlabel("W = fraction of members wrong on a point")
    ax.set_ylabel("fraction of points")
    ax.set_xlim(-0.5 / m - 0.02, 1 + 0.5 / m + 0.02)
    ax.set_ylim(0, max(max(stats.w_distribution), 1e-9) * 1.15)
    handles = [Patch(color=kinds[k][0], label=kinds[k][1]) for k in kinds if k in kind_of]
    threshold.set_label("majority-vote threshold")
    ax.legend(handles=[*handles, threshold], fontsize=7, loc="upper right")
    head = f"{title}: " if title else ""
    ax.set_title(
        f"{head}distribution of W (M={m})\nη={stats.polarization:.3f}  L_MV={stats.majority_vote_error:.4f}  "
        f"L̄={stats.mean_member_error:.4f}  D={stats.disagreement:.4f}",
        fontsize=8,
    )
    fig.tight_layout()
    return fig


def polarization_history_figure(history: Sequence[Mapping[str, float]], *, title: str = "") -> Figure:
    """η per epoch (left axis, with the law's 4/3) and the majority-vote error next to the bounds (right axis).

    ``history`` is a list of records with keys ``epoch``, ``polarization``, ``majority_vote_error``, ``bound_law``.
    """
    fig = new_figure(figsize=(6.0, 3.6))
    ax = fig.add_subplot()
    epochs = [r["epoch"] for r in history]
    ax.plot(epochs, [r["polarization"] for r in history], "o-", color="tab:purple", label="η (measured)")
    ax.axhline(POLARIZATION_LAW_ETA, color="tab:purple", linestyle=":", label="η = 4/3 (law)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("polarization η")
    right = ax.twinx()
    right.plot(epochs, [r["majority_vote_error"] for r in history], "s-", color="tab:green", label="L_MV")
    right.plot(epochs, [r["bound_law"] for r in history], "^--", color="tab:gray", label="4/3 · E[W²]")
    right.set_ylabel("error rate (fraction of points)")
    lines = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="upper center", framealpha=0.85, ncol=2)
    low, high = ax.get_ylim()
    ax.set_ylim(low, high + 0.25 * (high - low))  # room for the legend above the curves
    ax.set_title(f"{title}: polarization and majority-vote error" if title else
                 "polarization and majority-vote error per epoch", fontsize=9)
    fig.tight_layout()
    return fig
