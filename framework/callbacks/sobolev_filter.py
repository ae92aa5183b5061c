"""``SobolevFilter``: tune an SSM's frequency bias by filtering its FFT convolution with ``(1 + f/f_0)^β``.

Attach it to *any* ``lightning.pytorch`` model whose SSM layers implement the small
:class:`~framework.models.components.ssm.filter_protocol.FilterableConvolution` protocol (the project's
:class:`~framework.models.components.ssm.S4D` does; a user layer needs an attribute ``spectral_filter = None``, an integer
``filter_features`` and its spectral product computed through ``frequency_product``). The callback puts one
:class:`~framework.models.components.ssm.sobolev.SobolevSpectralFilter` (per-feature β) on every such layer in ``setup``:

* ``mode="forward"`` (the paper's, default): the filter multiplies the product of the spectra in the forward pass,
  D skip unfiltered, so output and every kernel-parameter gradient are reweighted by frequency. β is fixed
  (``learnable=False``, the toy experiments: β in {-1, -0.5, 0, 0.5, 1}) or learned per feature (``learnable=True``,
  the LRA recipe: initialised at ``beta``, its own parameter group with ``lr`` 0.01 and no weight decay).
* ``mode="gradient"``: EXPERIMENTAL and not the paper's method: the forward pass is untouched and only the gradient
  flowing into the kernel spectrum is reweighted (fixed β only; such a reweighting is the gradient of no loss).

β lives in the model (``<layer>.spectral_filter.beta``), so it moves with the model, is synchronised by DDP, and is
saved in and restored from checkpoints; the callback's own state also records it. Filters stay attached after
``fit`` (the trained model includes them); :meth:`SobolevFilter.detach` removes them and restores the plain model
exactly. Learned β joins the optimizer in ``on_fit_start`` as a separate group (base lr ``lr``, no weight decay), and
the model's LR schedulers are extended to it, so it follows the same schedule (warmup, cosine) from its own lr.

YAML::

    trainer:
      callbacks:
        - class_path: framework.callbacks.sobolev_filter.SobolevFilter
          init_args: {beta: 0.0, learnable: true, lr: 0.01}
"""

from __future__ import annotations

import weakref
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from framework.models.components.ssm.filter_protocol import filterable_layers
from framework.models.components.ssm.sobolev import FILTER_MODES, SobolevSpectralFilter

__all__ = ["SobolevFilter"]

_PROTOCOL_HELP = (
    "framework.models.components.ssm.filter_protocol.FilterableConvolution (a module attribute `spectral_filter = None`, an int "
    "attribute `filter_features`, and the spectral product computed by `frequency_product(x_f, k_f, n_fft, "
    "self.spectral_filter)`)"
)


class SobolevFilter(Callback):
    """Attach Sobolev filters to every filterable SSM layer of the model.

    Args:
        beta: initial (or fixed) β for every feature; 0 starts from the plain model.
        learnable: learn β per feature (``mode="forward"`` only).
        lr: learning rate of the β group (learnable only).
        weight_decay: weight decay of the β group (0 as in the paper).
        frequency_scale: ``f_0`` in cycles per sample: 1 is the LRA normalisation ``(1 + k/n_fft)^β``, ``1/(2π)`` the
            waves / denoising one ``(1 + ω)^β``.
        mode: ``"forward"`` or ``"gradient"`` (experimental).
        layers: optional substrings; only layers whose qualified name contains one of them are filtered.
    """

    def __init__(self, *, beta: float = 0.0, learnable: bool = False, lr: float = 0.01, weight_decay: float = 0.0,
                 frequency_scale: float = 1.0, mode: str = "forward", layers: list[str] | None = None) -> None:
        super().__init__()
        if mode not in FILTER_MODES:
            raise ValueError(f"mode must be one of {list(FILTER_MODES)}, got {mode!r}")
        if learnable and mode != "forward":
            raise ValueError("learnable=True needs mode='forward': the experimental gradient-only mode has fixed beta")
        if not isinstance(lr, (int, float)) or not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        if not isinstance(weight_decay, (int, float)) or weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        # Validates beta and frequency_scale with the filter's own messages.
        SobolevSpectralFilter(features=1, beta=beta, frequency_scale=frequency_scale, mode=mode)
        self.beta, self.learnable, self.lr, self.weight_decay = float(beta), bool(learnable), float(lr), weight_decay
        self.frequency_scale, self.mode, self.layers = float(frequency_scale), mode, list(layers) if layers else None
        self._model_ref: weakref.ReferenceType | None = None
        self._pending_state: dict[str, torch.Tensor] | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(mode=self.mode, layers=self.layers)

    # ------------------------------------------------------------------ attach / detach
    def _selected(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        found = filterable_layers(model)
        if self.layers is not None:
            found = [(n, m) for n, m in found if any(s in n for s in self.layers)]
        return found

    def attach(self, model: nn.Module) -> list[str]:
        """Put a filter on every selected filterable layer (keeping filters already there); returns their names."""
        found = self._selected(model)
        if not found:
            where = f" matching layers={self.layers}" if self.layers else ""
            raise ValueError(
                f"SobolevFilter found no filterable SSM layer{where} in {type(model).__name__}: a layer must implement "
                f"{_PROTOCOL_HELP}"
            )
        names = []
        for name, layer in found:
            existing = layer.spectral_filter
            if isinstance(existing, SobolevSpectralFilter):
                if existing.mode != self.mode:
                    raise ValueError(f"layer {name!r} already has a {existing.mode!r}-mode Sobolev filter; "
                                     f"this callback uses mode={self.mode!r}")
            elif existing is not None:
                raise ValueError(f"layer {name!r} already has another spectral filter ({type(existing).__name__})")
            else:
                device = next((p.device for p in layer.parameters()), torch.device("cpu"))
                layer.spectral_filter = SobolevSpectralFilter(
                    features=layer.filter_features, beta=self.beta, learnable=self.learnable,
                    frequency_scale=self.frequency_scale, mode=self.mode,
                ).to(device)
            names.append(name)
        self._model_ref = weakref.ref(model)
        if self._pending_state is not None:
            self._copy_betas_in(model, self._pending_state)
            self._pending_state = None
        return names

    @staticmethod
    def detach(model: nn.Module) -> int:
        """Remove every Sobolev filter from ``model`` (restoring the plain layers); returns how many were removed."""
        removed = 0
        for _, layer in filterable_layers(model):
            if isinstance(layer.spectral_filter, SobolevSpectralFilter):
                layer.spectral_filter = None
                removed += 1
        return removed

    @staticmethod
    def betas(model: nn.Module) -> dict[str, torch.Tensor]:
        """``{layer name: β [H]}`` of the attached filters (detached copies)."""
        return {name: layer.spectral_filter.beta.detach().clone() for name, layer in filterable_layers(model)
                if isinstance(layer.spectral_filter, SobolevSpectralFilter)}

    def _copy_betas_in(self, model: nn.Module, betas: dict[str, torch.Tensor]) -> None:
        layers = dict(filterable_layers(model))
        for name, value in betas.items():
            if name not in layers or not isinstance(layers[name].spectral_filter, SobolevSpectralFilter):
                raise ValueError(f"checkpointed beta for layer {name!r}, which has no Sobolev filter in this model")
            with torch.no_grad():
                layers[name].spectral_filter.beta.copy_(value)

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.attach(pl_module)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.learnable:
            return
        betas = [layer.spectral_filter.beta for _, layer in self._selected(pl_module)
                 if isinstance(layer.spectral_filter, SobolevSpectralFilter)]
        if not trainer.optimizers:
            raise ValueError("SobolevFilter(learnable=True) needs an optimizer: the model's configure_optimizers "
                             "returned none")
        if any(g.get("sobolev_beta") for o in trainer.optimizers for g in o.param_groups):
            return  # already added (a second fit call on the same trainer)
        ids = {id(b) for b in betas}
        target = trainer.optimizers[0]
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                if any(id(p) in ids for p in group["params"]):
                    # The model's own groups (e.g. the default one, with weight decay) must not train beta; groups
                    # are kept (possibly empty) so schedulers' per-group lists stay aligned.
                    target = optimizer
                    group["params"] = [p for p in group["params"] if id(p) not in ids]
        previous_groups = len(target.param_groups)
        target.add_param_group({"params": betas, "lr": self.lr, "initial_lr": self.lr,
                                "weight_decay": self.weight_decay, "sobolev_beta": True})
        for config in trainer.lr_scheduler_configs:
            if getattr(config.scheduler, "optimizer", None) is target:
                self._extend_scheduler(config.scheduler, previous_groups)

    def _extend_scheduler(self, scheduler: Any, previous_groups: int) -> None:
        # Schedulers keep per-group lists (base_lrs, lr_lambdas, min_lrs, ...) sized at construction; the beta group
        # joins them so it follows the same schedule from its own base lr, as an ordinary group does in the paper.
        for name, value in vars(scheduler).items():
            if isinstance(value, list) and len(value) == previous_groups and value:
                value.append(self.lr if name in ("base_lrs", "_last_lr") else value[-1])

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        betas = self.betas(pl_module)
        if self.learnable and betas:
            flat = torch.cat([b.flatten() for b in betas.values()])
            pl_module.log_dict({"sobolev/beta_mean": flat.mean(), "sobolev/beta_min": flat.min(),
                                "sobolev/beta_max": flat.max()})

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        model = self._model_ref() if self._model_ref is not None else None
        return {
            "beta": {k: v.cpu() for k, v in self.betas(model).items()} if model is not None else {},
            "config": {"mode": self.mode, "learnable": self.learnable, "frequency_scale": self.frequency_scale},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        betas = state_dict.get("beta", {})
        model = self._model_ref() if self._model_ref is not None else None
        if model is not None:
            self._copy_betas_in(model, betas)
        else:
            self._pending_state = betas
