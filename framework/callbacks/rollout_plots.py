"""Log forecast rollouts and error-vs-lead-time curves of a ``FlowMatchingForecaster`` to W&B (or any image logger).

After every ``every_n_validations``-th validation epoch the callback rolls out the first validation window (one
ensemble member plus the ensemble mean of ``ensemble_size`` members), and logs

- ``rollout/frames``: rows truth / forecast / |error| of channel 0 at ``num_leads`` lead times spread over the
  horizon;
- ``rollout/error_vs_lead``: the validation RFNE and CRPS per lead time from the epoch's ``ForecastSkill``.

Works with any LightningModule that has ``rollout(context, ensemble_size=...)``, ``context_length``, ``horizon``
and (for the curves) ``last_skill`` — :data:`ROLLOUT_REQUIREMENTS`; a model without them is refused in ``setup``
with the missing members named (:class:`~framework.callbacks.model_requirements.UnsupportedModelError`). Figures
need an image-capable logger (with ``logger=False`` there is nothing to draw to).
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from framework.callbacks.model_requirements import require_members
from framework.loggers import log_figure, new_figure

__all__ = ["ROLLOUT_REQUIREMENTS", "RolloutPlots"]

#: What RolloutPlots needs from the LightningModule (``name()`` = a method), e.g. ``FlowMatchingForecaster``.
ROLLOUT_REQUIREMENTS = {
    "rollout()": "rollout(context [B, context_length, C, H, W], *, ensemble_size) -> [B, M, horizon, C, H, W]",
    "context_length": "int, frames that condition a forecast",
    "horizon": "int, frames forecast",
}


class RolloutPlots(pl.Callback):
    """Args:
        every_n_validations: plot after every n-th validation epoch (>= 1).
        ensemble_size: members rolled out for the plot.
        num_leads: lead times shown (spread evenly over the horizon).
    """

    def __init__(self, *, every_n_validations: int = 1, ensemble_size: int = 2, num_leads: int = 4) -> None:
        super().__init__()
        for name, value in (("every_n_validations", every_n_validations), ("ensemble_size", ensemble_size),
                            ("num_leads", num_leads)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.every, self.ensemble_size, self.num_leads = every_n_validations, ensemble_size, num_leads
        self._count = 0

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        require_members("RolloutPlots", pl_module, ROLLOUT_REQUIREMENTS, what=type(pl_module).__name__,
                        remedy="Implement them (as framework.models.flow_matching_forecaster.FlowMatchingForecaster "
                               "does) or remove the callback.")

    def state_dict(self) -> dict:
        return {"validations": self._count}

    def load_state_dict(self, state_dict: dict) -> None:
        self._count = int(state_dict.get("validations", 0))

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._count += 1
        if self._count % self.every or not trainer.is_global_zero:
            return
        loaders = trainer.val_dataloaders
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        if loader is None:
            return
        batch = next(iter(loader))
        frames = (batch[0] if isinstance(batch, (tuple, list)) else batch)[:1].to(pl_module.device)
        k, horizon = pl_module.context_length, pl_module.horizon
        preds = pl_module.rollout(frames[:, :k], ensemble_size=self.ensemble_size)[0]  # [M, L, C, H, W]
        truth = frames[0, k:k + horizon]
        self._plot_frames(trainer, truth, preds)
        skill = getattr(pl_module, "last_skill", None)
        if skill:
            self._plot_curves(trainer, skill)

    def _plot_frames(self, trainer, truth: torch.Tensor, preds: torch.Tensor) -> None:
        horizon = truth.shape[0]
        leads = sorted({round(i * (horizon - 1) / max(1, self.num_leads - 1)) for i in range(self.num_leads)})
        member, mean = preds[0], preds.mean(0)
        rows = [("truth", truth), ("member 0", member), ("ensemble mean", mean), ("|error| of mean", (mean - truth).abs())]
        fig = new_figure(figsize=(2.2 * len(leads), 2.0 * len(rows)), dpi=80)
        vmin, vmax = float(truth[:, 0].min()), float(truth[:, 0].max())
        for r, (label, data) in enumerate(rows):
            for c, lead in enumerate(leads):
                ax = fig.add_subplot(len(rows), len(leads), r * len(leads) + c + 1)
                image = data[lead, 0].detach().float().cpu().numpy()
                if image.shape[0] == 1:  # 1-D systems: show the line
                    ax.plot(image[0])
                else:
                    ax.imshow(image, cmap="RdBu_r", vmin=None if r == 3 else vmin, vmax=None if r == 3 else vmax)
                    ax.set_xticks([])
                    ax.set_yticks([])
                if r == 0:
                    ax.set_title(f"lead {lead + 1}", fontsize=8)
                if c == 0:
                    ax.set_ylabel(label, fontsize=8)
        fig.suptitle("rollout: truth, one member, ensemble mean and its error per lead time "
                     "(rows 1-3 share one colour scale)", fontsize=8)
        fig.tight_layout()
        log_figure(trainer, "rollout/frames", fig)

    def _plot_curves(self, trainer, skill: dict) -> None:
        fig = new_figure(figsize=(6, 3), dpi=80)
        for i, key in enumerate(("val/rfne", "val/crps")):
            if key not in skill:
                continue
            ax = fig.add_subplot(1, 2, i + 1)
            curve = skill[key].float().numpy()
            ax.plot(range(1, len(curve) + 1), curve, marker="o")
            name = key.split("/")[1]
            ax.set_title(f"validation {name.upper()} vs lead time", fontsize=8)
            ax.set_xlabel("lead time (steps)")
            ax.set_ylabel(f"{name.upper()} (field units)" if name == "crps" else f"{name.upper()} (relative)")
        fig.tight_layout()
        log_figure(trainer, "rollout/error_vs_lead", fig)
