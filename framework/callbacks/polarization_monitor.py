"""``PolarizationMonitor``: disagreement / polarization metrics of an ensemble inside any Lightning run.

Two ways to give it an ensemble:

1. **Per-member logits.** The model's ``forward`` returns ``[M, B, K]`` (an ensemble model such as
   ``framework.models.ensemble_classifier.EnsembleClassifier``, or the user's own), or its ``validation_step`` / ``test_step``
   returns a dict holding them under ``outputs_key`` (then no extra forward pass is made).
2. **Checkpoints.** ``checkpoints=[...]`` (paths or one glob pattern) of M trained copies of the *same*
   LightningModule class as the model being run (e.g. M seeds of a plain classifier whose forward returns
   ``[B, K]``); each is loaded into a copy of the model and evaluated on the same batches.

At each validation / test epoch end it logs, under ``<prefix>/<split>/<name>``: polarization η, majority-vote
error, mean member error, disagreement (both pair conventions), T, the bounds (η = 4/3 law, C-bound, competence) and
predicted errors for larger ensembles; plus figures: the W histogram and η (with L_MV and the law's bound) against
epochs. Values are synced over DDP ranks exactly (sum states), every rank computes, rank 0 draws.

Batches must be labelled: ``(x, y, ...)`` tuples / lists, or dicts with ``input_key`` / ``target_key``.

``setup`` checks the model on two samples of the run's first validation (or test) batch and refuses, naming what is
missing, a model that yields no per-member logits (and has no ``checkpoints``), unlabelled batches, or a run with
no data for the monitored stages. ``num_classes`` (K) defaults to the model's ``num_classes`` attribute /
hyper-parameter, else the last dimension of those logits.
"""

from __future__ import annotations

import copy
import glob
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from framework.callbacks.model_requirements import UnsupportedModelError, first_batch, truncate_batch
from framework.loggers import log_figure
from framework.metrics.ensemble_bounds import EnsembleStatistics
from framework.metrics.ensemble_polarization import EnsemblePolarization
from framework.metrics.ensemble_votes import TIE_RULES
from framework.models.components.ensemble.polarization_figures import polarization_history_figure, w_histogram_figure

__all__ = ["PolarizationMonitor", "resolve_checkpoints"]

_STAGES = ("val", "test")


def resolve_checkpoints(checkpoints: str | Sequence[str]) -> list[Path]:
    """Paths from a list (each may be a glob pattern) or one pattern; sorted per pattern; at least 2 files."""
    patterns = [checkpoints] if isinstance(checkpoints, (str, Path)) else list(checkpoints)
    paths: list[Path] = []
    for pattern in patterns:
        matched = sorted(glob.glob(str(Path(pattern).expanduser())))
        if not matched:
            raise FileNotFoundError(f"checkpoints: no file matches {str(pattern)!r}")
        paths.extend(Path(p) for p in matched)
    if len(paths) < 2:
        raise ValueError(f"checkpoints must name at least 2 files (an ensemble), got {[str(p) for p in paths]}")
    return paths


class PolarizationMonitor(pl.Callback):
    """Logs ensemble polarization metrics and figures for per-member logits or a set of checkpoints.

    Args:
        num_classes: K; None (default) infers it in ``setup`` from the model's ``num_classes`` (attribute or
            hyper-parameter), else from the last dimension of the logits on the first batch.
        checkpoints: paths / glob pattern(s) of M >= 2 checkpoints of the model's class; ``None`` = the model
            itself returns per-member logits ``[M, B, K]``.
        stages: any of ``"val"``, ``"test"``.
        outputs_key: key of per-member logits in a step's output dict (used when present).
        input_key, target_key: keys of inputs / labels in dict batches (tuples use positions 0 and 1).
        tie_rule: majority-vote tie rule.
        prefix: logged names start with ``<prefix>/<split>/``.
        predict_for_members: ensemble sizes whose majority-vote error is predicted (law η = 4/3) and logged.
        log_figures: log the W histogram and the η-vs-epoch plot.
        every_n_epochs: compute during validation only every n-th epoch (the checkpoint mode costs M forwards).
    """

    def __init__(
        self,
        *,
        num_classes: int | None = None,
        checkpoints: str | list[str] | None = None,
        stages: Sequence[str] = ("val", "test"),
        outputs_key: str = "member_logits",
        input_key: str = "x",
        target_key: str = "y",
        tie_rule: str = "lowest_class",
        prefix: str = "polarization",
        predict_for_members: list[int] | None = None,
        log_figures: bool = True,
        every_n_epochs: int = 1,
    ) -> None:
        super().__init__()
        if num_classes is not None and (not isinstance(num_classes, int) or isinstance(num_classes, bool)
                                        or num_classes < 2):
            raise ValueError(f"num_classes must be an integer >= 2 or None (inferred), got {num_classes!r}")
        for stage in stages:
            if stage not in _STAGES:
                raise ValueError(f"stages must be a subset of {list(_STAGES)}, got {list(stages)!r}")
        if tie_rule not in TIE_RULES:
            raise ValueError(f"tie_rule must be one of {list(TIE_RULES)}, got {tie_rule!r}")
        if not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be a positive integer, got {every_n_epochs!r}")
        sizes = list(predict_for_members) if predict_for_members is not None else [25, 100]
        for size in sizes:
            if not isinstance(size, int) or size < 1:
                raise ValueError(f"predict_for_members must hold positive integers, got {size!r}")
        self.checkpoint_paths = resolve_checkpoints(checkpoints) if checkpoints is not None else None
        self.num_classes = num_classes
        self.stages = tuple(stages)
        self.outputs_key = outputs_key
        self.input_key = input_key
        self.target_key = target_key
        self.tie_rule = tie_rule
        self.prefix = prefix
        self.predict_for_members = sizes
        self.log_figures = log_figures
        self.every_n_epochs = every_n_epochs
        self.history: list[dict[str, float]] = []  # one record per validation epoch (saved in checkpoints)
        self.last_statistics: dict[str, EnsembleStatistics] = {}
        self._metrics: dict[str, EnsemblePolarization] = {}
        self._members: list[pl.LightningModule] | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(prefix=self.prefix)

    # ------------------------------------------------------------------ setup check
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        splits = {"fit": ["val"], "validate": ["val"], "test": ["test"]}.get(stage, [])
        splits = [s for s in splits if s in self.stages]
        if not splits:
            return  # this run has no stage the monitor works in (e.g. predict)
        name = type(pl_module).__name__
        batch = first_batch(trainer, splits[0])
        if batch is None:
            raise UnsupportedModelError(
                f"PolarizationMonitor(stages={list(self.stages)}) works on {splits[0]} batches, but this {stage} run "
                f"has no {splits[0]} dataloader; pass one (or a datamodule with {splits[0]}_dataloader) or set stages")
        if self.checkpoint_paths is not None:
            self._load_members(pl_module)  # a file that does not fit the model is reported now
        try:
            logits, _ = self._dry_run(pl_module, truncate_batch(batch))
        except UnsupportedModelError:
            raise
        except ValueError as error:
            raise UnsupportedModelError(f"PolarizationMonitor cannot serve {name}: {error}") from None
        inferred = self._infer_num_classes(pl_module, logits)
        if self.num_classes is None:
            self.num_classes = inferred
        elif logits.shape[-1] != self.num_classes:
            raise UnsupportedModelError(f"PolarizationMonitor(num_classes={self.num_classes}): {name}'s logits have "
                                        f"{logits.shape[-1]} classes (shape {list(logits.shape)})")

    @staticmethod
    def _infer_num_classes(pl_module: pl.LightningModule, logits: Tensor) -> int:
        for source in (pl_module, getattr(pl_module, "hparams", {})):
            value = source.get("num_classes") if isinstance(source, dict) else getattr(source, "num_classes", None)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 2:
                return value
        if logits.shape[-1] < 2:
            raise UnsupportedModelError(f"PolarizationMonitor: the logits have {logits.shape[-1]} class(es); "
                                        "it needs K >= 2")
        return int(logits.shape[-1])

    def _dry_run(self, pl_module: pl.LightningModule, batch: Any) -> tuple[Tensor, Tensor]:
        """Per-member logits of ``batch`` as the monitor will get them (forward, or validation_step's output)."""
        from lightning.fabric.utilities.apply_func import move_data_to_device

        from framework.callbacks.landscape.probe_loss import isolated_module

        x, _ = self._split_batch(batch)
        batch = move_data_to_device(batch, pl_module.device)
        if self.checkpoint_paths is not None:
            return self.member_logits(pl_module, batch)
        with isolated_module(pl_module), torch.no_grad():
            try:
                logits = pl_module(move_data_to_device(x, pl_module.device))
                shape = list(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
                failure = f"its forward(x) returns {shape}"
            except Exception as error:  # noqa: BLE001 - reported below with the alternatives
                first_line = str(error).splitlines()[0][:120] if str(error) else ""
                logits, failure = None, f"its forward(x) fails ({type(error).__name__}: {first_line})"
            if not (isinstance(logits, Tensor) and logits.dim() == 3):
                outputs = None
                step = getattr(pl_module, "validation_step", None)
                if callable(step):
                    try:
                        outputs = step(batch, 0)
                    except Exception:  # noqa: BLE001 - only used to look for per-member logits
                        outputs = None
                if isinstance(outputs, dict) and isinstance(outputs.get(self.outputs_key), Tensor) \
                        and outputs[self.outputs_key].dim() == 3:
                    logits = outputs[self.outputs_key]
                else:
                    raise UnsupportedModelError(
                        f"PolarizationMonitor needs per-member logits [M, B, K] from {type(pl_module).__name__}, but "
                        f"{failure} and its validation_step returns no {self.outputs_key!r}; make forward return "
                        f"[M, B, K] (an ensemble), return them under {self.outputs_key!r} from validation_step, or "
                        "pass checkpoints=[...] of M >= 2 trained copies of a single model")
        return logits, batch

    # ------------------------------------------------------------------ helpers
    def _split_batch(self, batch: Any) -> tuple[Any, Tensor]:
        if isinstance(batch, dict):
            if self.input_key not in batch or self.target_key not in batch:
                raise ValueError(f"PolarizationMonitor: dict batches need keys {self.input_key!r} and "
                                 f"{self.target_key!r} (input_key / target_key), got keys {sorted(batch)}")
            return batch[self.input_key], batch[self.target_key]
        if isinstance(batch, (tuple, list)) and len(batch) >= 2:
            return batch[0], batch[1]
        raise ValueError("PolarizationMonitor needs labelled batches: (x, y, ...) or a dict with "
                         f"{self.input_key!r}/{self.target_key!r}; got {type(batch).__name__}")

    def _load_members(self, pl_module: pl.LightningModule) -> list[pl.LightningModule]:
        if self._members is None:
            members = []
            for path in self.checkpoint_paths or []:
                blob = torch.load(path, map_location="cpu", weights_only=False)
                state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
                if not isinstance(state, dict):
                    raise ValueError(f"{str(path)!r} holds neither a Lightning checkpoint nor a state_dict")
                member = copy.deepcopy(pl_module)  # LightningModule.__getstate__ drops the trainer reference
                try:
                    member.load_state_dict(state, strict=True)
                except RuntimeError as error:
                    raise ValueError(f"checkpoint {str(path)!r} does not fit {type(pl_module).__name__}: "
                                     f"{str(error).splitlines()[0]}") from None
                members.append(member.eval().requires_grad_(False))
            self._members = members
        for member in self._members:
            member.to(pl_module.device)
        return self._members

    @torch.no_grad()
    def member_logits(self, pl_module: pl.LightningModule, batch: Any, outputs: Any = None) -> tuple[Tensor, Tensor]:
        """``(logits [M, B, K], labels [B])`` for one batch."""
        x, y = self._split_batch(batch)
        if self.checkpoint_paths is not None:
            logits = torch.stack([member(x) for member in self._load_members(pl_module)])
        elif isinstance(outputs, dict) and self.outputs_key in outputs:
            logits = outputs[self.outputs_key]
        else:
            logits = pl_module(x)
        if not isinstance(logits, Tensor) or logits.dim() != 3:
            shape = list(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(
                f"PolarizationMonitor expects per-member logits [M, B, K] from the model's forward (or under "
                f"{self.outputs_key!r} in the step output), got {shape}; for a single model pass checkpoints=[...]"
            )
        return logits.detach(), y

    def _split_name(self, trainer: pl.Trainer, stage: str, dataloader_idx: int) -> str:
        if dataloader_idx == 0:
            return stage
        names = getattr(getattr(trainer, "datamodule", None), f"{stage}_split_names", None)
        if names is not None and dataloader_idx < len(names):
            return str(names[dataloader_idx])
        return f"{stage}_{dataloader_idx}"

    def _active(self, trainer: pl.Trainer, stage: str) -> bool:
        if stage not in self.stages or trainer.sanity_checking:
            return False
        return stage != "val" or trainer.current_epoch % self.every_n_epochs == 0

    def _update(self, trainer, pl_module, stage, batch, outputs, dataloader_idx) -> None:
        if not self._active(trainer, stage):
            return
        logits, y = self.member_logits(pl_module, batch, outputs)
        split = self._split_name(trainer, stage, dataloader_idx)
        metric = self._metrics.get(split)
        if metric is None:
            if self.num_classes is None:  # used without a Trainer's setup (e.g. hooks called by hand)
                self.num_classes = self._infer_num_classes(pl_module, logits)
            metric = EnsemblePolarization(num_members=logits.shape[0], num_classes=self.num_classes,
                                          tie_rule=self.tie_rule).to(logits.device)
            self._metrics[split] = metric
        metric.update(logits, y.to(logits.device))

    def _epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not self._active(trainer, stage):
            return
        for split in sorted(self._metrics):
            if not split.startswith(stage):
                continue
            metric = self._metrics[split]
            stats = metric.compute_statistics()  # syncs over ranks: every rank calls it
            metric.reset()
            self.last_statistics[split] = stats
            values = dict(stats.as_dict())
            for size in self.predict_for_members:
                values[f"predicted_majority_vote_error_M{size}"] = stats.predict_majority_vote_error(size, "law")
            pl_module.log_dict({f"{self.prefix}/{split}/{k}": float(v) for k, v in values.items()},
                               add_dataloader_idx=False)
            if split == "val":
                self.history.append({"epoch": float(trainer.current_epoch), "polarization": stats.polarization,
                                     "majority_vote_error": stats.majority_vote_error,
                                     "bound_law": values["bound_law"]})
            if self.log_figures and not math.isnan(stats.w_second_moment):
                log_figure(trainer, f"{self.prefix}/{split}/w_histogram", w_histogram_figure(stats, title=split))
                if split == "val" and len(self.history) >= 1:
                    log_figure(trainer, f"{self.prefix}/val/polarization_vs_epoch",
                               polarization_history_figure(self.history, title="validation"))

    # ------------------------------------------------------------------ hooks
    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._update(trainer, pl_module, "val", batch, outputs, dataloader_idx)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._update(trainer, pl_module, "test", batch, outputs, dataloader_idx)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._epoch_end(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._epoch_end(trainer, pl_module, "test")

    def on_fit_end(self, trainer, pl_module) -> None:
        self._members = None  # reload from disk next time (the files may have changed)

    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(r) for r in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(r) for r in state_dict.get("history", [])]

    # ------------------------------------------------------------------ offline use
    @staticmethod
    @torch.no_grad()
    def evaluate_checkpoints(
        module: torch.nn.Module,
        checkpoints: str | Sequence[str],
        batches: Iterable[Any],
        *,
        num_classes: int,
        tie_rule: str = "lowest_class",
        forward: Any = None,
    ) -> EnsembleStatistics:
        """Statistics of the ensemble of ``checkpoints`` (weights for ``module``'s class) on labelled ``batches``.

        ``forward(model, x) -> [B, K]`` overrides ``model(x)`` (e.g. for models whose forward needs more inputs).
        Needs no Trainer; works for any ``nn.Module`` / LightningModule whose ``state_dict`` the files hold.
        """
        paths = resolve_checkpoints(checkpoints)
        members = []
        for path in paths:
            blob = torch.load(path, map_location="cpu", weights_only=False)
            state = blob.get("state_dict", blob) if isinstance(blob, dict) else blob
            member = copy.deepcopy(module)
            member.load_state_dict(state, strict=True)
            members.append(member.eval())
        metric = EnsemblePolarization(num_members=len(members), num_classes=num_classes, tie_rule=tie_rule)
        call = forward or (lambda model, x: model(x))
        for batch in batches:
            x, y = batch[0], batch[1]
            metric.update(torch.stack([call(member, x) for member in members]), y)
        return metric.compute_statistics()
