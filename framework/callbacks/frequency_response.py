"""``FrequencyResponseProbe``: plot each S4D layer's transfer function |G(e^{iω})| (at initialisation and now) and the
model's per-frequency error, to W&B (or any image-taking logger) through ``framework.loggers.log_figure``.

* ``ssm/transfer_function``: per layer, the feature-averaged |G| (kernel + D, with an attached forward-mode Sobolev
  filter included) against ω in radians per sample, log-log, the initial curve dashed. Works on any model whose
  layers hold an ``S4DKernel`` as ``.kernel`` (the project's ``S4D``), or expose ``convolution_kernel(length)``
  (numerical FFT of the causal kernel, ``fft_length`` samples).
* ``ssm/per_frequency_error``: when the model reports per-output errors (``per_output_error("val")``, e.g.
  ``SSMSequenceModel`` on the waves task) and the DataModule names the outputs' frequencies
  (``output_frequencies``, radians per sample), the validation MAE of each output against its frequency.
  Scalars ``ssm/gain_at_output_<i>`` (mean |G| of the first layer at output i's frequency) are logged too.

A model with neither kind of layer is refused in ``setup`` (naming both protocols); a model that cannot report
per-frequency errors gets the transfer functions only, and the callback says so once.

The initial responses are part of the callback state, so a resumed run still compares with initialisation.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.callbacks import Callback

from framework.callbacks.metric_publishing import publish_metrics
from framework.callbacks.model_requirements import UnsupportedModelError
from framework.loggers import log_figure, new_figure
from framework.models.components.ssm.frequency_response import (
    FrequencyResponse,
    error_figure,
    kernel_frequency_response,
    layer_frequency_response,
)
from framework.models.components.ssm.s4d_kernel import S4DKernel

__all__ = ["FrequencyResponseProbe"]


class FrequencyResponseProbe(Callback):
    """Args:
        every_n_epochs: log at the end of every n-th validation epoch (and at fit end).
        num_frequencies: ω grid size on [0, π] (analytic responses).
        fft_length: kernel length for layers without an analytic transfer function.
        max_layers: plot at most this many layers (first ones).
    """

    def __init__(self, *, every_n_epochs: int = 1, num_frequencies: int = 512, fft_length: int = 1024,
                 max_layers: int = 6) -> None:
        super().__init__()
        for name, value in (("every_n_epochs", every_n_epochs), ("num_frequencies", num_frequencies),
                            ("fft_length", fft_length), ("max_layers", max_layers)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.every_n_epochs, self.num_frequencies = every_n_epochs, num_frequencies
        self.fft_length, self.max_layers = fft_length, max_layers
        self.initial: dict[str, dict[str, list]] = {}

    # ------------------------------------------------------------------ responses
    def responses(self, model) -> dict[str, FrequencyResponse]:
        """``{layer name: response}`` for the model's SSM layers (at most ``max_layers``)."""
        out: dict[str, FrequencyResponse] = {}
        for name, module in model.named_modules():
            if len(out) >= self.max_layers:
                break
            if isinstance(getattr(module, "kernel", None), S4DKernel) and hasattr(module, "d"):
                out[name] = layer_frequency_response(module, self.num_frequencies)
            elif callable(getattr(module, "convolution_kernel", None)) and hasattr(module, "spectral_filter"):
                out[name] = kernel_frequency_response(module, self.fft_length)
        return out

    def _figure(self, current: dict[str, FrequencyResponse], epoch: int):
        fig = new_figure(figsize=(6.5, 4.0))
        ax = fig.add_subplot(1, 1, 1)
        colors = [f"C{i}" for i in range(10)]
        for i, (name, response) in enumerate(current.items()):
            color = colors[i % len(colors)]
            ax.plot(response.omega[1:], response.mean_over_features()[1:], color=color, label=f"{name or 'layer'}")
            if name in self.initial:
                init = self.initial[name]
                ax.plot(np.asarray(init["omega"])[1:], np.asarray(init["magnitude"])[1:], color=color, ls="--",
                        alpha=0.6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("ω (rad / sample)")
        ax.set_ylabel("mean |G(e^{iω})|  (dashed: initialisation)")
        ax.set_title(f"SSM transfer functions, epoch {epoch}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        return fig

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not self.responses(pl_module):
            raise UnsupportedModelError(
                f"FrequencyResponseProbe found no SSM layer in {type(pl_module).__name__}: it plots layers that hold "
                "an S4DKernel as `.kernel` and a skip `.d` (framework.models.components.ssm.S4D), or implement "
                "framework.models.components.ssm.filter_protocol.FilterableConvolution plus "
                "`convolution_kernel(length) -> [H, length]`; add such layers or remove the callback")
        if not callable(getattr(pl_module, "per_output_error", None)):
            from lightning.pytorch.utilities import rank_zero_info

            rank_zero_info(f"FrequencyResponseProbe: {type(pl_module).__name__} has no per_output_error(stage); only "
                           "the transfer functions are plotted (no per-frequency error)")

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.initial:
            self.initial = {name: {"omega": r.omega.tolist(), "magnitude": r.mean_over_features().tolist()}
                            for name, r in self.responses(pl_module).items()}

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        current = self.responses(pl_module)
        if not current:
            return
        log_figure(trainer, "ssm/transfer_function", self._figure(current, trainer.current_epoch))
        errors = pl_module.per_output_error("val") if callable(getattr(pl_module, "per_output_error", None)) else None
        frequencies = getattr(trainer.datamodule, "output_frequencies", None) if trainer.datamodule else None
        if errors and frequencies is not None and len(frequencies) == len(errors):
            first = next(iter(current.values()))
            gains = np.interp(frequencies, first.omega, first.mean_over_features())
            publish_metrics(trainer, pl_module, {f"ssm/gain_at_output_{i}": float(g) for i, g in enumerate(gains)})
            fig = error_figure({"val MAE": (np.asarray(frequencies), np.asarray(list(errors.values())))},
                               xlabel="output frequency (rad / sample)", ylabel="mean absolute error",
                               title=f"per-frequency error, epoch {trainer.current_epoch}")
            log_figure(trainer, "ssm/per_frequency_error", fig)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After the module's own epoch-end hook, so this epoch's per-output errors are available.
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self._log(trainer, pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {"initial": self.initial}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.initial = state_dict.get("initial", {})
