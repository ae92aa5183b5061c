"""``AlphaPruning``: heavy-tailed-metric layer-wise sparsity for any ``lightning.pytorch`` model.

AlphaPruning (Lu et al., NeurIPS 2024) measures the power-law exponent α of each weight matrix's ESD and gives layers
with smaller α (heavier tails, better trained) less sparsity; a base pruner (magnitude, Wanda, SparseGPT) then
chooses the weights. Masks go through ``torch.nn.utils.prune`` so fine-tuning keeps them and checkpoints hold them.

Example::

    trainer:
      callbacks:
        - class_path: framework.callbacks.alphapruning.AlphaPruning
          init_args: {target_sparsity: 0.6, epsilon: 0.3, pruner: wanda, prune_at: fit_start}

``prune_at``:

* ``"fit_start"`` — before training (one-shot pruning, then fine-tuning with the masks fixed);
* ``"epoch"`` — at the start of training epoch ``prune_epoch`` (train dense, prune, fine-tune);
* ``"fit_end"`` — when training ends (post-training pruning; evaluate with a later ``validate``/``test``);
* ``"evaluation_start"`` — at the start of ``validate`` / ``test`` / ``predict`` runs (one-shot evaluation).

Resuming: the pruned layers' ``weight_orig`` / ``weight_mask`` are in the checkpoint; before the trainer loads a
state dict, the callback re-creates the reparametrisation of every layer the checkpoint has a mask for, and its own
state (already pruned, the allocation) comes back, so a resumed run neither re-prunes nor loses masks.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from framework.callbacks.pruning.esd_figure import esd_figure
from framework.callbacks.pruning.masking import make_permanent, pruned_modules, restore_pruning_state
from framework.callbacks.metric_publishing import publish_metrics
from framework.callbacks.pruning.calibration import check_calibration_support
from framework.callbacks.pruning.module_selection import select_prunable_modules
from framework.callbacks.pruning.prune_model import (DEFAULT_MAX_SPARSITY, PruningReport, alpha_prune, default_forward,
                                                     validate_pruning_arguments)

__all__ = ["AlphaPruning", "PRUNE_AT"]

PRUNE_AT = ("fit_start", "epoch", "fit_end", "evaluation_start")
CALIBRATION_SPLITS = ("train", "val", "test", "predict")
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class AlphaPruning(Callback):
    """Prune a LightningModule with AlphaPruning's layer-wise allocation (see the module docstring).

    Args:
        target_sparsity: S in [0, 1): parameter-weighted mean sparsity of the pruned layers.
        epsilon: ε in [0, 1): relative spread of the per-layer sparsities ((1+ε)/(1−ε) between extremes).
        max_sparsity: cap on any one layer's sparsity, in [S, 1] (default 0.99, so no matrix is zeroed whole); layers
            the formula puts above it are set to it, the excess goes to the other layers (the mean stays S), and the
            warning and the logged ``alphapruning/capped_layers`` count name / count them.
        metric: ``alpha_peak`` (default), ``alpha``, ``alpha_mid``, ``alpha_hat``, ``stable_rank``, ``entropy``,
            ``log_spectral_norm`` or ``log_norm``.
        pruner: ``magnitude``, ``wanda`` or ``sparsegpt``.
        allocation: ``alpha`` (metric-based) or ``uniform`` (every layer at S: the baseline).
        mapping: ``layer`` or ``block`` (one sparsity per ModuleList child, as the public code for LLMs).
        include, exclude: regexes (``re.search``) on module names overriding the default selection (every
            Linear/Conv inside the model's ModuleList blocks, or all but the output head without blocks).
        prune_at: ``fit_start``, ``epoch``, ``fit_end`` or ``evaluation_start``.
        prune_epoch: the epoch of ``prune_at="epoch"``.
        calibration_split: which dataloader of the datamodule (or LightningModule) feeds Wanda / SparseGPT.
        num_calibration_batches: batches of calibration data.
        calibration_forward: ``forward(pl_module, batch)``; default: dict → ``**batch``, tensor → ``(batch)``, tuple
            → ``(batch[0])`` or ``(*batch)``.
        sequential: ``auto`` / True / False: prune block after block on the pruned blocks' outputs.
        wanda_comparison: ``row`` (per output, LLM default) or ``layer``.
        sparsegpt_blocksize, percdamp: SparseGPT settings.
        eigenvalue_method: ``gram`` (eigvalsh of WᵀW) or ``svd``. eigen_dtype: ``float32`` or ``float64``.
        faithful_window: reproduce the public code's x_min window for ``alpha_peak``.
        min_eigenvalues: smaller layers cannot be fitted; their metric falls back to the median (warned, logged).
        make_permanent: fold masks into the weights when the run ends (``teardown``).
        esd_plot_layers: number of layers (evenly spaced) or a list of names to plot; 0 disables the figure.

    The model is checked in ``setup``: a selection that matches no Linear / Conv module, or a module Wanda /
    SparseGPT cannot calibrate, is refused there (before training) with the reason and the remedy.

    Logged (to the loggers, ``trainer.callback_metrics`` and, where Lightning allows, ``self.log``):
    ``alphapruning/achieved_sparsity``, ``target_sparsity``, ``max_layer_sparsity``, ``capped_layers``,
    ``fallback_layers``, ``metric_seconds``, ``pruning_seconds`` and per layer ``alpha/<name>``,
    ``allocated/<name>``, ``achieved/<name>``. Pruning in ``on_fit_start`` publishes again in ``on_train_start``
    (Lightning resets its metrics after the sanity check).
    """

    #: Checked by the CLI before training (``framework.distributed.check_callback_strategies``).
    unsupported_strategies = {
        "fsdp": "the ESD needs each whole weight matrix and masks are applied to unsharded weights",
        "deepspeed": "the ESD needs each whole weight matrix",
        "model_parallel": "the ESD needs each whole weight matrix",
    }


    def __init__(
        self,
        *,
        target_sparsity: float = 0.5,
        epsilon: float = 0.3,
        max_sparsity: float = DEFAULT_MAX_SPARSITY,
        metric: str = "alpha_peak",
        pruner: str = "magnitude",
        allocation: str = "alpha",
        mapping: str = "layer",
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        prune_at: str = "fit_start",
        prune_epoch: int | None = None,
        calibration_split: str = "train",
        num_calibration_batches: int = 8,
        calibration_forward: Callable[[nn.Module, Any], Any] | None = None,
        sequential: bool | str = "auto",
        wanda_comparison: str = "row",
        sparsegpt_blocksize: int = 128,
        percdamp: float = 0.01,
        eigenvalue_method: str = "gram",
        eigen_dtype: str = "float32",
        faithful_window: bool = True,
        min_eigenvalues: int = 10,
        make_permanent: bool = False,
        esd_plot_layers: int | Sequence[str] = 6,
    ) -> None:
        super().__init__()
        validate_pruning_arguments(target_sparsity=target_sparsity, epsilon=epsilon, metric=metric, pruner=pruner,
                                   allocation=allocation, mapping=mapping, wanda_comparison=wanda_comparison,
                                   max_sparsity=max_sparsity)
        if prune_at not in PRUNE_AT:
            raise ValueError(f"prune_at must be one of {list(PRUNE_AT)}, got {prune_at!r}")
        if prune_at == "epoch" and (not isinstance(prune_epoch, int) or prune_epoch < 0):
            raise ValueError(f"prune_at='epoch' needs prune_epoch >= 0, got {prune_epoch!r}")
        if calibration_split not in CALIBRATION_SPLITS:
            raise ValueError(f"calibration_split must be one of {list(CALIBRATION_SPLITS)}, got {calibration_split!r}")
        if not isinstance(num_calibration_batches, int) or num_calibration_batches < 1:
            raise ValueError(f"num_calibration_batches must be a positive integer, got {num_calibration_batches!r}")
        if eigen_dtype not in _DTYPES:
            raise ValueError(f"eigen_dtype must be one of {list(_DTYPES)}, got {eigen_dtype!r}")
        if sequential not in ("auto", True, False):
            raise ValueError(f"sequential must be 'auto', true or false, got {sequential!r}")
        self.target_sparsity = target_sparsity
        self.epsilon = epsilon
        self.max_sparsity = float(max_sparsity)
        self.metric = metric
        self.pruner = pruner
        self.allocation = allocation
        self.mapping = mapping
        self.include = list(include) if include else None
        self.exclude = list(exclude) if exclude else None
        self.prune_at = prune_at
        self.prune_epoch = prune_epoch
        self.calibration_split = calibration_split
        self.num_calibration_batches = num_calibration_batches
        self.calibration_forward = calibration_forward or default_forward
        self.sequential = sequential
        self.wanda_comparison = wanda_comparison
        self.sparsegpt_blocksize = sparsegpt_blocksize
        self.percdamp = percdamp
        self.eigenvalue_method = eigenvalue_method
        self.eigen_dtype = _DTYPES[eigen_dtype]
        self.faithful_window = faithful_window
        self.min_eigenvalues = min_eigenvalues
        self.make_permanent = make_permanent
        self.esd_plot_layers = esd_plot_layers
        self.pruned = False
        self.report: PruningReport | None = None
        self.summary: dict[str, Any] = {}
        self._published: dict[str, float] = {}

    # ------------------------------------------------------------------ state
    @property
    def state_key(self) -> str:
        return self._generate_state_key(target_sparsity=self.target_sparsity, pruner=self.pruner,
                                        prune_at=self.prune_at)

    def state_dict(self) -> dict[str, Any]:
        return {"pruned": self.pruned, "summary": self.summary}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pruned = bool(state_dict.get("pruned", False))
        self.summary = dict(state_dict.get("summary", {}))

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Refuse a model this configuration cannot prune now, not after training. A model that already carries masks
        # (resumed, or pruned before) counts its masked layers.
        modules = select_prunable_modules(pl_module, include=self.include, exclude=self.exclude)
        if self.pruner != "magnitude":
            for name, module in modules.items():
                check_calibration_support(name, module)

        # Before the trainer loads a checkpoint's state dict, give every layer the checkpoint has a mask for its
        # pruning reparametrisation, so weight_orig / weight_mask load (and fine-tuning keeps the masks).
        def restore_masks(module, state_dict, *args, **kwargs):
            restored = restore_pruning_state(module, state_dict)
            if restored:
                self.pruned = True

        if not getattr(pl_module, "_alphapruning_restore_hook", None):
            pl_module._alphapruning_restore_hook = pl_module.register_load_state_dict_pre_hook(restore_masks)

    # ------------------------------------------------------------------ triggers
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.prune_at == "fit_start":
            self._prune_once(trainer, pl_module)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Values published in on_fit_start are wiped by the sanity check's metric reset: publish them again.
        if self._published:
            publish_metrics(trainer, pl_module, self._published, to_loggers=False)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.prune_at == "epoch" and trainer.current_epoch >= self.prune_epoch:
            self._prune_once(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.prune_at == "fit_end":
            self._prune_once(trainer, pl_module)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.prune_at == "evaluation_start" and not trainer.training and trainer.state.fn == "validate":
            self._prune_once(trainer, pl_module)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.prune_at == "evaluation_start":
            self._prune_once(trainer, pl_module)

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.prune_at == "evaluation_start":
            self._prune_once(trainer, pl_module)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.make_permanent and pruned_modules(pl_module):
            names = make_permanent(pl_module)
            rank_zero_info(f"AlphaPruning: made the masks of {len(names)} layers permanent")

    # ------------------------------------------------------------------ pruning
    def _calibration_batches(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> list[Any] | None:
        if self.pruner == "magnitude":
            return None
        split = self.calibration_split
        method = f"{split}_dataloader"
        loader = getattr(trainer, method, None) if split == "train" else None  # loaded once the fit loop started
        if loader is None:
            loader = self._loader_from_sources(trainer, pl_module, split, method)
        if isinstance(loader, (list, tuple)):
            loader = loader[0]
        batches = []
        for i, batch in enumerate(loader):
            if i >= self.num_calibration_batches:
                break
            batches.append(batch)
        if not batches:
            raise ValueError(f"AlphaPruning(pruner={self.pruner!r}) needs calibration data, but the {split} "
                             "dataloader is empty")
        return batches

    def _loader_from_sources(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str, method: str):
        from lightning.pytorch.utilities.exceptions import MisconfigurationException

        missing = ValueError(
            f"AlphaPruning(pruner={self.pruner!r}) needs calibration data, but neither the datamodule nor "
            f"{type(pl_module).__name__} provides {method}(); pass a datamodule, set calibration_split, or use "
            "pruner='magnitude'"
        )
        if trainer.datamodule is not None and hasattr(trainer.datamodule, method):
            loader_fn = getattr(trainer.datamodule, method)
            try:
                return loader_fn()
            except (AttributeError, KeyError, RuntimeError):
                # The split was not set up in this stage (e.g. "train" while testing): set it up, then retry.
                trainer.datamodule.setup("fit" if split in ("train", "val") else split)
                return loader_fn()
            except MisconfigurationException as error:
                raise missing from error
        # What the fit loop will train on (loaders passed to trainer.fit(...) take precedence over module hooks).
        source = getattr(getattr(trainer, "fit_loop", None), "_data_source", None) if split == "train" else None
        try:
            if source is not None and source.is_defined():
                return source.dataloader()
            return getattr(pl_module, method)()
        except MisconfigurationException as error:
            raise missing from error

    def _prune_once(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.pruned:
            return
        report = alpha_prune(
            pl_module,
            target_sparsity=self.target_sparsity, epsilon=self.epsilon, max_sparsity=self.max_sparsity,
            metric=self.metric, pruner=self.pruner,
            allocation=self.allocation, mapping=self.mapping, include=self.include, exclude=self.exclude,
            calibration=self._calibration_batches(trainer, pl_module), forward=self.calibration_forward,
            sequential=self.sequential, wanda_comparison=self.wanda_comparison,
            sparsegpt_blocksize=self.sparsegpt_blocksize, percdamp=self.percdamp,
            eigenvalue_method=self.eigenvalue_method, eigen_dtype=self.eigen_dtype,
            faithful_window=self.faithful_window, min_eigenvalues=self.min_eigenvalues,
            keep_eigenvalues=bool(self.esd_plot_layers),
        )
        self.pruned = True
        self.report = report
        self.summary = {
            "achieved_sparsity": report.achieved_sparsity,
            "fallback_layers": list(report.fallbacks),
            "capped_layers": list(report.allocation.clipped) if report.allocation else [],
            "layers": {name: {"metric": layer.metric, "allocated": layer.allocated, "achieved": layer.achieved,
                              "size": layer.size} for name, layer in report.layers.items()},
        }
        rank_zero_info(
            f"AlphaPruning: pruned {len(report.layers)} layers with {self.pruner} ({self.allocation} allocation) to "
            f"{report.achieved_sparsity:.4f} sparsity (target {self.target_sparsity}); metrics "
            f"{report.seconds.get('metrics', 0):.1f} s, pruning {report.seconds.get('pruning', 0):.1f} s"
        )
        self._log(trainer, pl_module, report)

    # ------------------------------------------------------------------ logging
    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule, report: PruningReport) -> None:
        step = trainer.global_step
        values: dict[str, float] = {
            "alphapruning/achieved_sparsity": report.achieved_sparsity,
            "alphapruning/target_sparsity": report.target_sparsity,
            "alphapruning/fallback_layers": float(len(report.fallbacks)),
            "alphapruning/capped_layers": float(len(report.allocation.clipped)) if report.allocation else 0.0,
            "alphapruning/max_layer_sparsity": max(layer.achieved for layer in report.layers.values()),
            "alphapruning/metric_seconds": report.seconds.get("metrics", 0.0),
            "alphapruning/pruning_seconds": report.seconds.get("pruning", 0.0),
        }
        for name, layer in report.layers.items():
            if layer.spectral is not None and math.isfinite(layer.spectral.alpha):
                values[f"alphapruning/alpha/{name}"] = layer.spectral.alpha
            values[f"alphapruning/allocated/{name}"] = layer.allocated
            values[f"alphapruning/achieved/{name}"] = layer.achieved
        if report.fallbacks:
            warnings.warn(f"AlphaPruning: {len(report.fallbacks)} layer(s) too small for a power-law fit used the "
                          f"median metric: {report.fallbacks[:5]}", stacklevel=2)
        publish_metrics(trainer, pl_module, values, step=step)
        self._published = values
        if trainer.loggers and self.esd_plot_layers and report.eigenvalues:
            from framework.loggers import log_figure

            log_figure(trainer, "alphapruning/esd", esd_figure(self._plot_selection(report), self._plot_metrics(report)),
                       step=step)
            log_figure(trainer, "alphapruning/allocation", self._allocation_figure(report), step=step)

    def _plot_names(self, report: PruningReport) -> list[str]:
        names = list(report.eigenvalues)
        if isinstance(self.esd_plot_layers, int):
            count = min(self.esd_plot_layers, len(names))
            return [names[round(i * (len(names) - 1) / max(count - 1, 1))] for i in range(count)]
        return [n for n in self.esd_plot_layers if n in report.eigenvalues]

    def _plot_selection(self, report: PruningReport):
        return {n: report.eigenvalues[n] for n in self._plot_names(report)}

    def _plot_metrics(self, report: PruningReport):
        return {n: report.layers[n].spectral for n in self._plot_names(report) if report.layers[n].spectral}

    @staticmethod
    def _allocation_figure(report: PruningReport):
        from framework.loggers import new_figure

        names = list(report.layers)
        fig = new_figure(figsize=(max(6.0, 0.08 * len(names) + 4), 4.0))
        ax = fig.add_subplot(111)
        x = range(len(names))
        ax.plot(x, [report.layers[n].allocated for n in names], ".-", label="allocated sparsity")
        ax.plot(x, [report.layers[n].achieved for n in names], "x", markersize=3, label="achieved sparsity")
        ax.axhline(report.target_sparsity, color="grey", linestyle=":", label="target")
        ax.set_xlabel("layer (model order)")
        ax.set_ylabel("sparsity")
        alphas = [report.layers[n].spectral.alpha if report.layers[n].spectral else float("nan") for n in names]
        if any(math.isfinite(a) for a in alphas):
            twin = ax.twinx()
            twin.plot(x, alphas, color="tab:red", alpha=0.5, linewidth=1, label="α")
            twin.set_ylabel("α (metric)", color="tab:red")
        ax.legend(fontsize=8, loc="upper left")
        fig.tight_layout()
        return fig
