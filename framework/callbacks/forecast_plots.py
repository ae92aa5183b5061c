"""Forecast plots around a peak event, logged to W&B (or any image-capable logger) after validation.

For a few validation forecasts whose history ends shortly after a peak event (the "most affected" forecasts, where
carry-over shows), one panel each: the last weeks of history, the truth over the horizon, the P50 forecast and the
P10–P90 band (or the widest band the model's quantiles give), peak-event days shaded. Works with any
``framework.models.components.forecasting.lit_base.QuantileForecasterModule`` and ``framework.datamodules.retail``
DataModule — precisely, :data:`FORECAST_MODEL_REQUIREMENTS` on the model and :data:`FORECAST_DATA_REQUIREMENTS`
on the DataModule; anything else is refused in ``setup`` with the missing members named.
"""

from __future__ import annotations

import numpy as np
import torch
from lightning.pytorch import Callback

from framework.callbacks.model_requirements import UnsupportedModelError, require_members
from framework.loggers import log_figure, new_figure

__all__ = ["FORECAST_DATA_REQUIREMENTS", "FORECAST_MODEL_REQUIREMENTS", "ForecastPlots"]

FORECAST_MODEL_REQUIREMENTS = {
    "forecast()": "forecast(batch dict with 'target' [B, T], 'features' [B, T, F], 'peak' [B, T]) -> [B, horizon, Q]",
    "quantiles": "list of the Q quantile levels",
    "context_length": "int, days of history per window",
}
FORECAST_DATA_REQUIREMENTS = {
    "datasets": "dict with a 'val' dataset of windows (dicts with 'target', 'features', 'peak') and a boolean "
                "`most_affected` per window",
}


def _nearest(levels: list[float], q: float) -> int:
    return min(range(len(levels)), key=lambda i: abs(levels[i] - q))


class ForecastPlots(Callback):
    """Plot ``num_series`` most-affected validation forecasts every ``every_n_validations`` validations.

    Args:
        num_series: panels per figure (>= 1).
        history_days: days of history shown before the forecast creation date.
        every_n_validations: plot at every n-th validation run.
        key: logged image key.
    """

    def __init__(self, *, num_series: int = 4, history_days: int = 56, every_n_validations: int = 1,
                 key: str = "val/forecast_around_peak") -> None:
        for name, value in (("num_series", num_series), ("history_days", history_days),
                            ("every_n_validations", every_n_validations)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.num_series, self.history_days = num_series, history_days
        self.every_n_validations, self.key = every_n_validations, key
        self._validations = 0

    def setup(self, trainer, pl_module, stage: str) -> None:
        remedy = ("Use a framework.models.components.forecasting.lit_base.QuantileForecasterModule with a "
                  "framework.datamodules.retail DataModule, implement these members, or remove the callback.")
        require_members("ForecastPlots", pl_module, FORECAST_MODEL_REQUIREMENTS, what=type(pl_module).__name__,
                        remedy=remedy)
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None:
            raise UnsupportedModelError("ForecastPlots plots validation windows of a DataModule, but the run has "
                                        "none (dataloaders were passed directly); pass datamodule=... with "
                                        "`datasets['val']` (e.g. framework.datamodules.retail_demand.RetailDemand)")
        require_members("ForecastPlots", datamodule, FORECAST_DATA_REQUIREMENTS,
                        what=f"the DataModule {type(datamodule).__name__}", remedy=remedy)

    def state_dict(self) -> dict:
        return {"validations": self._validations}

    def load_state_dict(self, state_dict: dict) -> None:
        self._validations = int(state_dict.get("validations", 0))

    def select(self, dataset) -> list[int]:
        """Indices of the first ``num_series`` most-affected windows (any windows if there are none)."""
        affected = np.flatnonzero(np.asarray(dataset.most_affected))
        chosen = affected if len(affected) else np.arange(len(dataset))
        step = max(1, len(chosen) // self.num_series)
        return [int(i) for i in chosen[::step][: self.num_series]]

    @torch.no_grad()
    def figure(self, pl_module, dataset):
        """The matplotlib figure (also used by tests)."""
        indices = self.select(dataset)
        batch = {k: torch.stack([dataset[i][k] for i in indices]).to(pl_module.device)
                 for k in ("target", "features", "peak")}
        was_training = pl_module.training
        pl_module.eval()
        forecasts = pl_module.forecast(batch).float().cpu().numpy()
        pl_module.train(was_training)
        levels = pl_module.quantiles
        lo, mid, hi = _nearest(levels, 0.1), _nearest(levels, 0.5), _nearest(levels, 0.9)
        L = pl_module.context_length
        fig = new_figure(figsize=(8.0, 2.2 * len(indices)), dpi=90)
        axes = fig.subplots(len(indices), 1, squeeze=False)[:, 0]
        for ax, row, f in zip(axes, range(len(indices)), forecasts):
            y = batch["target"][row].cpu().numpy()
            peak = batch["peak"][row].cpu().numpy()
            start = max(0, L - self.history_days)
            days = np.arange(start, len(y)) - L
            ax.plot(days, y[start:], color="black", lw=1, label="truth")
            horizon_days = np.arange(len(f))
            ax.fill_between(horizon_days, f[:, lo], f[:, hi], color="tab:blue", alpha=0.25,
                            label=f"P{round(levels[lo] * 100)}–P{round(levels[hi] * 100)}")
            ax.plot(horizon_days, f[:, mid], color="tab:blue", lw=1.5, label="P50")
            for d in np.flatnonzero(peak[start:]):
                ax.axvspan(days[d] - 0.5, days[d] + 0.5, color="tab:orange", alpha=0.2, lw=0)
            ax.axvline(-0.5, color="grey", ls="--", lw=0.8)
            ax.set_ylabel("demand (units)")
        from matplotlib.patches import Patch

        handles, labels = axes[0].get_legend_handles_labels()
        handles.append(Patch(color="tab:orange", alpha=0.2, label="peak-event day"))
        for ax in axes:
            ax.set_xlabel("days from forecast creation (dashed line)", fontsize=7)
        fig.suptitle("quantile forecasts vs truth on validation series", fontsize=9)
        fig.tight_layout(rect=(0, 0, 1, 0.93))
        fig.legend(handles=handles, loc="upper right", fontsize=7, ncol=4)  # one legend: same colours in all panels
        return fig

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        self._validations += 1
        if (self._validations - 1) % self.every_n_validations:
            return
        datamodule = getattr(trainer, "datamodule", None)
        dataset = getattr(datamodule, "datasets", {}).get("val") if datamodule is not None else None
        if dataset is None or len(dataset) == 0:
            raise UnsupportedModelError(f"ForecastPlots: the DataModule {type(datamodule).__name__} has no "
                                        "validation windows (datasets['val'] is missing or empty)")
        log_figure(trainer, self.key, self.figure(pl_module, dataset))
