"""Send matplotlib figures to whatever loggers a Trainer has (W&B, TensorBoard, CSV), then close them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["new_figure", "figure_to_array", "log_figure"]


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
