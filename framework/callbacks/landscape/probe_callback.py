"""Lightning plumbing shared by the Hessian and landscape probes: schedule, fixed probe batches, logging, state.

* Schedule: at the end of the training epochs listed in ``epochs`` and/or every ``every_n_epochs`` epochs, and at
  fit end (``at_fit_end``). Probes run on global rank 0 only and use ``pl_module`` itself (never the DDP wrapper), so
  no collective is hidden behind the rank check; the other ranks wait at a barrier.
* Probe set: ``probe_batches`` batches taken once, in order, from the training (or validation) dataset through a
  non-shuffling loader with the original batch size and collate function — the same samples at every probe and
  after a resume — or the batches the user passes as ``probe_data``.
* Logging: scalars go to every logger (``logger.log_metrics``), to ``self.log`` where Lightning allows it (the
  epoch-end probes) and to ``trainer.callback_metrics`` (always, also at fit end and with ``logger=False``), so
  ``EarlyStopping`` / ``ModelCheckpoint(monitor="hessian/eigenvalue_1")`` can use them (set
  ``check_on_train_epoch_end=True`` / ``save_on_train_epoch_end=True``: probes run at train-epoch end); settings go
  to the run config (``log_hyperparams``), figures through :func:`framework.loggers.log_figure`.
* Setup: a model the probe cannot serve (no ``training_step`` and no ``loss_fn``, manual optimization) is refused in
  ``setup`` with the reason and the remedy, before any training.
* Resume: ``history`` is checkpointed; a probe whose (tag, global step) is already in it is not run again. The fit-end
  probe runs after the last checkpoint is written, so a run resumed from a finished run's checkpoint that trains no
  further step skips it (the original run made it) and says so.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch.utils.data import DataLoader

from framework.callbacks.landscape.probe_loss import LossFunction
from framework.callbacks.metric_publishing import broadcast_scalars, publish_metrics

__all__ = ["ProbeCallback"]


def _clone_batch(batch: Any) -> Any:
    # Batches collected under inference mode cannot take part in autograd; clone them outside it.
    if isinstance(batch, torch.Tensor):
        return batch.clone()
    if isinstance(batch, dict):
        return {k: _clone_batch(v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        cloned = [_clone_batch(v) for v in batch]
        return type(batch)(cloned) if not hasattr(batch, "_fields") else type(batch)(*cloned)
    return batch


class ProbeCallback(pl.Callback):
    """Base class; subclasses implement :meth:`probe` and return a report with ``scalars()``."""

    #: Prefix of logged keys; set by subclasses.
    prefix = "probe"

    #: Checked by the CLI before training (``framework.distributed.check_callback_strategies``).
    unsupported_strategies = {
        "fsdp": "the probe evaluates the loss at perturbed copies of the full parameter vector, which FSDP shards",
        "deepspeed": "the probe needs the full, unsharded parameters",
        "model_parallel": "the probe needs the full, unsharded parameters",
    }

    def __init__(
        self,
        *,
        probe_batches: int = 1,
        dataloader: str = "train",
        probe_data: Sequence[Any] | None = None,
        loss_fn: LossFunction | None = None,
        epochs: Iterable[int] | None = None,
        every_n_epochs: int | None = None,
        at_fit_end: bool = True,
        eval_mode: bool = True,
        log_figures: bool = True,
        output_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        if not isinstance(probe_batches, int) or isinstance(probe_batches, bool) or probe_batches < 1:
            raise ValueError(f"probe_batches must be a positive integer (the probe set may not be empty), "
                             f"got {probe_batches!r}")
        if dataloader not in ("train", "val"):
            raise ValueError(f"dataloader must be 'train' or 'val', got {dataloader!r}")
        if probe_data is not None and len(probe_data) == 0:
            raise ValueError("probe_data is empty: pass at least one batch, or None to use the dataloader")
        if loss_fn is not None and not callable(loss_fn):
            raise ValueError(f"loss_fn must be callable(module, batch) -> scalar loss or None, got {loss_fn!r}")
        epoch_list = sorted(set(epochs)) if epochs is not None else []
        if any(not isinstance(e, int) or e < 0 for e in epoch_list):
            raise ValueError(f"epochs must be non-negative integers, got {list(epochs or [])!r}")
        if every_n_epochs is not None and (not isinstance(every_n_epochs, int) or every_n_epochs < 1):
            raise ValueError(f"every_n_epochs must be a positive integer or None, got {every_n_epochs!r}")
        if not epoch_list and every_n_epochs is None and not at_fit_end:
            raise ValueError("the probe never runs: set epochs, every_n_epochs or at_fit_end=True")
        self.probe_batches = probe_batches
        self.dataloader = dataloader
        self.probe_data = list(probe_data) if probe_data is not None else None
        self.loss_fn = loss_fn
        self.epochs = epoch_list
        self.every_n_epochs = every_n_epochs
        self.at_fit_end = at_fit_end
        self.eval_mode = eval_mode
        self.log_figures = log_figures
        self.output_dir = output_dir
        self.seed = seed
        self.history: list[dict[str, Any]] = []
        self.reports: list[Any] = []
        self._batches: list[Any] | None = None
        self._logged_settings = False
        self._resumed = False
        self._trained = False

    # ------------------------------------------------------------------ subclass API
    def probe(self, pl_module: torch.nn.Module, batches: list[Any]) -> Any:
        """Run the probe on ``batches`` (already on the module's device); return a report with ``scalars()``."""
        raise TypeError(f"{type(self).__name__} must define probe(pl_module, batches)")

    def settings(self) -> dict[str, Any]:
        """Settings logged once to the run config under ``<prefix>/``."""
        return {"probe_batches": self.probe_batches, "dataloader": self.dataloader, "eval_mode": self.eval_mode,
                "seed": self.seed, "loss": "training_step" if self.loss_fn is None else getattr(
                    self.loss_fn, "__qualname__", type(self.loss_fn).__name__)}

    def log_report_figures(self, trainer: pl.Trainer, report: Any, step: int) -> None:
        """Subclasses send their figures here."""

    def report_payload(self, report: Any) -> dict[str, Any] | None:
        """JSON content written for a report (None: no file)."""
        return None

    # ------------------------------------------------------------------ probe set
    def _source_loader(self, trainer: pl.Trainer) -> DataLoader | Iterable:
        loader = trainer.train_dataloader if self.dataloader == "train" else trainer.val_dataloaders
        if loader is None:
            datamodule = trainer.datamodule
            owner = datamodule if datamodule is not None else trainer.lightning_module
            method = f"{self.dataloader}_dataloader"
            loader = getattr(owner, method)() if owner is not None and hasattr(owner, method) else None
        if isinstance(loader, (list, tuple)):
            loader = loader[0] if loader else None
        if isinstance(loader, dict):
            loader = next(iter(loader.values()), None)
        if loader is None:
            raise ValueError(f"dataloader={self.dataloader!r}: the trainer has no {self.dataloader} dataloader; "
                             "pass probe_data=[batch, ...] instead")
        return loader

    def collect_batches(self, trainer: pl.Trainer) -> list[Any]:
        """The fixed probe batches (collected on first use)."""
        if self._batches is not None:
            return self._batches
        if self.probe_data is not None:
            batches = list(self.probe_data)
        else:
            loader = self._source_loader(trainer)
            dataset = getattr(loader, "dataset", None)
            map_style = dataset is not None and hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")
            if map_style and getattr(loader, "batch_size", None):
                loader = DataLoader(dataset, batch_size=loader.batch_size, shuffle=False,
                                    collate_fn=loader.collate_fn, num_workers=0)
            batches = []
            # Iterating a DataLoader draws its base seed from the global RNG: keep the run's RNG stream intact.
            with torch.inference_mode(False), torch.random.fork_rng(devices=[]):
                for batch in loader:
                    batches.append(_clone_batch(batch))
                    if len(batches) == self.probe_batches:
                        break
        if not batches:
            raise ValueError(f"the probe set is empty: the {self.dataloader} dataloader yielded no batches")
        self._batches = batches
        return batches

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trained = False
        if self.loss_fn is not None:
            return
        from lightning.pytorch.utilities.model_helpers import is_overridden

        name = type(self).__name__
        if not is_overridden("training_step", pl_module, pl.LightningModule):
            raise ValueError(f"{name} probes the training loss, but {type(pl_module).__name__} has no training_step; "
                             "pass loss_fn=callable(module, batch) -> scalar loss")
        if not pl_module.automatic_optimization:
            raise ValueError(f"{name}: {type(pl_module).__name__} uses manual optimization, so its training_step "
                             "steps the optimizers and cannot serve as the probe loss; pass "
                             "loss_fn=callable(module, batch) -> scalar loss")

    def _scheduled(self, epoch: int) -> bool:
        return epoch in self.epochs or (self.every_n_epochs is not None and (epoch + 1) % self.every_n_epochs == 0)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not self._scheduled(trainer.current_epoch):
            return
        self.run(trainer, pl_module, tag=f"epoch{trainer.current_epoch}")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._trained = True  # Lightning skips the training loop (and this hook) when nothing is left to train

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.at_fit_end:
            return
        if self._resumed and not self._trained:
            from lightning.pytorch.utilities import rank_zero_info

            rank_zero_info(f"{type(self).__name__}: resumed at global step {trainer.global_step} and trained no "
                           "further step; the fit-end probe of this step was made by the original run")
            return
        self.run(trainer, pl_module, tag="fit_end")

    def run(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *, tag: str) -> Any:
        """Probe now (rank 0), log everything, append to ``history``; returns the report (None on other ranks)."""
        report = None
        step = trainer.global_step
        if any(r.get("tag") == tag and r.get("global_step") == step for r in self.history):
            return None  # already probed at this point (a resumed run): no double work
        scalars = None
        # trainer.log_dir broadcasts (a collective): resolve the output folder on every rank, not inside rank 0's branch.
        json_root = self._json_root(trainer)
        if trainer.is_global_zero:
            batches = [move_data_to_device(b, pl_module.device) for b in self.collect_batches(trainer)]
            start = time.perf_counter()
            report = self.probe(pl_module, batches)
            seconds = time.perf_counter() - start
            scalars = {f"{self.prefix}/{k}": float(v) for k, v in report.scalars().items()}
            scalars[f"{self.prefix}/seconds"] = seconds
            record = {"tag": tag, "epoch": trainer.current_epoch, "global_step": step, **scalars}
            self.history.append(record)
            self.reports.append(report)
            if not self._logged_settings:
                for logger in trainer.loggers:
                    logger.log_hyperparams({f"{self.prefix}/{k}": v for k, v in self.settings().items()})
            self._logged_settings = True
            if self.log_figures:
                self.log_report_figures(trainer, report, step)
            payload = self.report_payload(report)
            if payload is not None:
                from framework.atomic_files import write_json_atomic

                payload = {"tag": tag, "epoch": trainer.current_epoch, "global_step": step,
                           "settings": self.settings(), **payload}
                write_json_atomic(json_root / f"{self.prefix.replace('/', '_')}-{tag}-step{step}.json", payload)
        # Every rank gets rank 0's numbers (monitors run on every rank); the broadcast also synchronises the ranks.
        publish_metrics(trainer, pl_module, broadcast_scalars(trainer, scalars), step=step)
        return report

    def _json_root(self, trainer: pl.Trainer) -> Path:
        if self.output_dir is not None:
            return Path(self.output_dir)
        base = trainer.log_dir or trainer.default_root_dir
        version = getattr(trainer.logger, "version", None) if trainer.logger is not None else None
        return Path(base) / "probes" / (str(version) if isinstance(version, (str, int)) else "")

    # ------------------------------------------------------------------ state
    @property
    def state_key(self) -> str:
        # Several probes of one type may coexist (e.g. a random and a Hessian plane): key the state by settings.
        return self._generate_state_key(**{k: v for k, v in self.settings().items() if k != "loss"})

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
        self._resumed = True
