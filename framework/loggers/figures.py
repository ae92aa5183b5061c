"""Send matplotlib figures to whatever loggers a Trainer has (W&B, TensorBoard, CSV), then close them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["new_figure", "figure_problems", "figure_to_array", "log_figure"]


def new_figure(*, figsize: tuple[float, float] = (6.0, 4.0), dpi: int = 100) -> Figure:
    """A figure bound to the Agg canvas: no pyplot, no GUI backend, nothing global to close."""
    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render ``fig`` to an RGB ``uint8`` array of shape ``[H, W, 3]``."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def log_figure(trainer, key: str, fig: Figure, *, step: int | None = None, caption: str | None = None) -> None:
    """Log ``fig`` under ``key`` to every logger of ``trainer`` that can take images, then close it.

    W&B gets a ``wandb.Image`` (through ``WandbLogger.log_image``), TensorBoard an image summary, and loggers with a
    ``log_dir`` (CSV) a PNG under ``<log_dir>/figures/``. Only global rank 0 writes; safe to call on every rank.
    """
    try:
        if trainer is None or not trainer.is_global_zero:
            return
        step = trainer.global_step if step is None else step
        image = figure_to_array(fig)
        for logger in trainer.loggers:
            name = type(logger).__name__
            if name == "WandbLogger" or hasattr(logger, "log_image"):
                extra = {"caption": [caption]} if caption else {}
                logger.log_image(key=key, images=[image], step=step, **extra)
            elif name == "TensorBoardLogger":
                logger.experiment.add_image(key, image, global_step=step, dataformats="HWC")
            elif getattr(logger, "log_dir", None):
                out = Path(logger.log_dir) / "figures"
                out.mkdir(parents=True, exist_ok=True)
                fig.savefig(out / f"{key.replace('/', '_')}_step{step}.png")
    finally:
        fig.clf()


def _is_colorbar(ax) -> bool:
    return getattr(ax, "_colorbar", None) is not None or ax.get_label() == "<colorbar>"


def _data_colors(ax) -> set[tuple]:
    """Distinct colours of an axes' data (lines, bars, scatter points); reference lines count too."""
    from matplotlib.colors import to_rgba

    colors: set[tuple] = set()
    for line in ax.get_lines():
        colors.add(tuple(round(c, 3) for c in to_rgba(line.get_color())))
    for patch in ax.patches:
        colors.add(tuple(round(c, 3) for c in to_rgba(patch.get_facecolor())))
    for collection in ax.collections:
        if collection.get_array() is not None:  # colour-mapped: explained by a colorbar, not a legend
            continue
        for face in collection.get_facecolors():
            colors.add(tuple(round(float(c), 3) for c in face))
    return colors


def figure_problems(fig: Figure) -> list[str]:
    """What a reader of ``fig`` would miss: a title per panel (or one for the figure), axis labels where there are
    ticks, and a legend wherever several colours are drawn (or a colorbar for colour-mapped data). Empty when fine."""
    problems = []
    suptitle = fig._suptitle.get_text() if getattr(fig, "_suptitle", None) is not None else ""
    has_figure_legend = bool(fig.legends)
    axes = [ax for ax in fig.axes if not _is_colorbar(ax)]
    has_colorbar = len(axes) < len(fig.axes)
    # Twin axes (twinx) share their host's position: a legend or title on either serves both.
    groups: dict[tuple, list] = {}
    for ax in axes:
        groups.setdefault(tuple(round(v, 4) for v in ax.get_position().bounds), []).append(ax)
    for index, group in enumerate(groups.values()):
        name = f"panel {index + 1}"
        if not (suptitle or any(ax.get_title() or ax.get_title("left") or ax.get_title("right") for ax in group)):
            problems.append(f"{name}: no title")
        for ax in group:
            if not ax.get_visible() or not ax.has_data():
                continue
            if ax.get_xticks().size and not ax.get_xlabel() and ax is group[0]:
                problems.append(f"{name}: no x label")
            if ax.get_yticks().size and not ax.get_ylabel():
                problems.append(f"{name}: no y label")
            if hasattr(ax, "get_zlabel") and not ax.get_zlabel():
                problems.append(f"{name}: no z label")
        colors = set().union(*(_data_colors(ax) for ax in group))
        legend = has_figure_legend or any(ax.get_legend() is not None for ax in group)
        if len(colors) > 1 and not legend and not has_colorbar:
            problems.append(f"{name}: {len(colors)} colours but no legend")
    return problems
