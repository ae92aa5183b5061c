"""An ensemble of M classifiers of one architecture, trained jointly (vmap) or collected from checkpoints.

Logs per epoch, per split: mean member error, majority-vote and mean-probability error, disagreement (both pair
conventions), T, polarization η, the polarization bound with the law's η = 4/3, the C-bound and the competence bound,
the predicted majority-vote error for larger ensembles, and a histogram of the point-wise error rate W.

Config example (members given by ``class_path``; M copies re-initialised with seeds ``base_seed + i``)::

    model:
      class_path: framework.models.ensemble_classifier.EnsembleClassifier
      init_args:
        num_members: 7
        member:
          class_path: framework.models.components.ensemble.SmallCNN
          init_args: {in_channels: 1, num_classes: 10, width: 16, depth: 2}
        optimizer: {class_path: torch.optim.AdamW, init_args: {lr: 3.0e-3, weight_decay: 0.0}}
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from framework.base import FrameworkModule
from framework.loggers import log_figure
from framework.metrics.ensemble_polarization import EnsemblePolarization
from framework.metrics.ensemble_votes import TIE_RULES, majority_vote
from framework.models.components.ensemble.member_stack import (
    LoopedMembers,
    StackedMembers,
    load_member_weights,
    seeded_member_copies,
)
from framework.models.components.ensemble.polarization_figures import w_histogram_figure

__all__ = ["EnsembleClassifier"]

_JOINT = ("vmap", "loop")


class EnsembleClassifier(FrameworkModule):
    """M members of one architecture, evaluated together; ``forward`` returns per-member logits ``[M, B, K]``.

    Training minimises the *sum* of the members' mean cross-entropies, so each member receives exactly the gradient
    it would get alone (members never see each other); with an elementwise optimizer (SGD, Adam, AdamW...) the M
    members follow their separate training trajectories. Gradient clipping by global norm would couple them.

    Args:
        member: the member architecture (an ``nn.Module``, e.g. ``framework.models.components.ensemble.SmallCNN``); its
            weights are re-initialised per member, so its own initial values do not matter.
        num_classes: K (linked from the DataModule by the CLI).
        num_members: M (>= 2). Ignored when ``member_checkpoints`` is given (M = number of checkpoints).
        base_seed: member i is initialised under ``torch.manual_seed(base_seed + i)`` unless ``seeds`` is given.
        seeds: explicit per-member seeds (length M, distinct).
        member_checkpoints: paths of M checkpoints (Lightning or plain ``state_dict``) holding trained members of
            the ``member`` architecture; the ensemble is built from them instead of seeds.
        joint: ``"vmap"`` (stacked weights, one vectorized call; default) or ``"loop"`` (one member after another;
            for modules ``torch.func.vmap`` cannot batch).
        tie_rule: majority-vote tie rule (``"lowest_class"``, ``"pessimistic"``, ``"expected_random"``).
        predict_for_members: ensemble sizes whose majority-vote error is predicted and logged each epoch (law η).
        log_histogram: log the W histogram figure at every validation / test epoch end.

    Checkpoints: from a config run, ``EnsembleClassifier.load_from_checkpoint(path)`` rebuilds everything (the
    hyperparameters hold the member's ``class_path``); for a model built in Python, pass the architecture again:
    ``load_from_checkpoint(path, member=SmallCNN(...))``.
        optimizer, scheduler, scheduler_interval, scheduler_monitor: see ``FrameworkModule``.
    """

    def __init__(
        self,
        *,
        member: nn.Module,
        num_classes: int,
        num_members: int = 5,
        base_seed: int = 0,
        seeds: list[int] | None = None,
        member_checkpoints: list[str] | None = None,
        joint: str = "vmap",
        tie_rule: str = "lowest_class",
        predict_for_members: list[int] | None = None,
        log_histogram: bool = True,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "epoch",
        scheduler_monitor: str | None = None,
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, scheduler_interval=scheduler_interval,
                         scheduler_monitor=scheduler_monitor)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Attribute 'member' is an instance of `nn.Module`")
            self.save_hyperparameters()
        if isinstance(self.hparams.get("member"), nn.Module):
            # Built in Python rather than from a config (where hparams hold the member's class_path/init_args): a
            # pickled module would need weights_only=False to load, so keep it out; pass member= when loading.
            self.save_hyperparameters(ignore=["member"])
        if not isinstance(member, nn.Module):
            raise ValueError(f"member must be an nn.Module (given by class_path), got {type(member).__name__}")
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        if joint not in _JOINT:
            raise ValueError(f"joint must be one of {list(_JOINT)}, got {joint!r}")
        if tie_rule not in TIE_RULES:
            raise ValueError(f"tie_rule must be one of {list(TIE_RULES)}, got {tie_rule!r}")
        sizes = list(predict_for_members) if predict_for_members is not None else [25, 100]
        for size in sizes:
            if not isinstance(size, int) or size < 1:
                raise ValueError(f"predict_for_members must hold positive integers, got {size!r}")
        if member_checkpoints is not None:
            if len(member_checkpoints) < 2:
                raise ValueError(f"member_checkpoints must list at least 2 checkpoints, got {len(member_checkpoints)}")
            members = [load_member_weights(member, path) for path in member_checkpoints]
            num_members = len(members)
            self.member_seeds: list[int] | None = None
        else:
            if not isinstance(num_members, int) or isinstance(num_members, bool) or num_members < 2:
                raise ValueError(f"num_members must be an integer >= 2, got {num_members!r}")
            if seeds is None:
                seeds = [base_seed + i for i in range(num_members)]
            if len(seeds) != num_members or len(set(seeds)) != len(seeds):
                raise ValueError(f"seeds must list {num_members} distinct seeds (one per member), got {seeds!r}")
            members = seeded_member_copies(member, seeds)
            self.member_seeds = list(seeds)
        self.members = StackedMembers(members) if joint == "vmap" else LoopedMembers(members)
        self.num_members = num_members
        self.num_classes = num_classes
        self.tie_rule = tie_rule
        self.predict_for_members = sizes
        self.log_histogram = log_histogram
        self.register_stage_metrics(self._new_metrics())
        # Extra evaluation splits (e.g. a shifted test set given as a second test dataloader) get their own copies.
        self.extra_metrics = nn.ModuleDict()

    # ------------------------------------------------------------------ model
    def _new_metrics(self) -> MetricCollection:
        return MetricCollection(
            {
                "ensemble": EnsemblePolarization(
                    num_members=self.num_members, num_classes=self.num_classes, tie_rule=self.tie_rule
                ),
                "mean_probability_accuracy": MulticlassAccuracy(num_classes=self.num_classes, average="micro"),
            },
            compute_groups=False,
        )

    def forward(self, x: Tensor) -> Tensor:
        """Per-member logits: ``[B, ...] -> [M, B, K]``."""
        return self.members(x)

    def member(self, index: int) -> nn.Module:
        """Member ``index`` as a standalone module (a copy with its weights)."""
        return self.members.member(index)

    @staticmethod
    def mean_probabilities(member_logits: Tensor) -> Tensor:
        """Mean of the members' softmax probabilities: ``[M, B, K] -> [B, K]``."""
        return member_logits.softmax(dim=-1).mean(dim=0)

    def majority_vote(self, member_logits: Tensor) -> Tensor:
        """Majority vote ``[M, B, K] -> [B]`` (ties -> lowest class index)."""
        return majority_vote(member_logits.argmax(dim=-1), self.num_classes)

    # ------------------------------------------------------------------ steps
    def _split_name(self, stage: str, dataloader_idx: int) -> str:
        if dataloader_idx == 0:
            return stage
        names = getattr(getattr(self.trainer, "datamodule", None), f"{stage}_split_names", None)
        if names is not None and dataloader_idx < len(names):
            return str(names[dataloader_idx])
        return f"{stage}_{dataloader_idx}"

    def _metrics(self, split: str) -> MetricCollection:
        if split in self.stage_metrics:
            return self.metrics_for(split)
        if split not in self.extra_metrics:
            self.extra_metrics[split] = self._new_metrics().to(self.device)
        return self.extra_metrics[split]

    def _check_batch(self, x: Tensor, y: Tensor) -> None:
        if y.dim() != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(f"expected a batch (x [B, ...], y [B]), got x {list(x.shape)} and y {list(y.shape)}")

    def _member_losses(self, logits: Tensor, y: Tensor) -> Tensor:
        m, b, k = logits.shape
        if k != self.num_classes:
            raise ValueError(f"the member architecture outputs {k} classes but num_classes={self.num_classes}")
        losses = F.cross_entropy(logits.reshape(m * b, k), y.repeat(m), reduction="none")
        return losses.view(m, b).mean(dim=1)

    def training_step(self, batch: Sequence[Tensor], batch_idx: int) -> Tensor:
        x, y = batch[0], batch[1]
        self._check_batch(x, y)
        logits = self(x)
        member_losses = self._member_losses(logits, y)
        self.log("train/loss", member_losses.mean(), prog_bar=True, batch_size=len(y))
        self._update(self.metrics_for("train"), logits.detach(), y)
        return member_losses.sum()

    def _eval_step(self, batch: Sequence[Tensor], stage: str, dataloader_idx: int) -> None:
        x, y = batch[0], batch[1]
        self._check_batch(x, y)
        logits = self(x)
        split = self._split_name(stage, dataloader_idx)
        self.log(f"{split}/loss", self._member_losses(logits, y).mean(), batch_size=len(y), add_dataloader_idx=False)
        self._update(self._metrics(split), logits, y)

    def _update(self, metrics: MetricCollection, logits: Tensor, y: Tensor) -> None:
        metrics["ensemble"].update(logits, y)
        metrics["mean_probability_accuracy"].update(self.mean_probabilities(logits), y)

    def validation_step(self, batch: Sequence[Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, "val", dataloader_idx)

    def test_step(self, batch: Sequence[Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, "test", dataloader_idx)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        """``{"member_logits" [M,B,K], "member_predictions" [M,B], "majority_vote" [B], "mean_probabilities" [B,K],
        "mean_probability_prediction" [B]}``."""
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        logits = self(x)
        probs = self.mean_probabilities(logits)
        return {
            "member_logits": logits,
            "member_predictions": logits.argmax(dim=-1),
            "majority_vote": self.majority_vote(logits),
            "mean_probabilities": probs,
            "mean_probability_prediction": probs.argmax(dim=-1),
        }

    # ------------------------------------------------------------------ epoch ends
    def _log_split(self, split: str, metrics: MetricCollection, *, figure: bool) -> None:
        if metrics["ensemble"].update_count == 0:
            return
        stats = metrics["ensemble"].compute_statistics()  # synced over ranks; every rank calls it
        accuracy = float(metrics["mean_probability_accuracy"].compute())
        values = dict(stats.as_dict())
        values["mean_probability_error"] = 1.0 - accuracy
        values["max_member_error"] = max(stats.member_error)
        for size in self.predict_for_members:
            values[f"predicted_majority_vote_error_M{size}"] = stats.predict_majority_vote_error(size, "law")
        self.log_dict({f"{split}/{k}": float(v) for k, v in values.items()}, add_dataloader_idx=False,
                      prog_bar=False)
        if split != "train":
            self.log(f"{split}/mv_error", stats.majority_vote_error, prog_bar=True, add_dataloader_idx=False)
        if figure and self.log_histogram and not self.trainer.sanity_checking and not math.isnan(stats.w_second_moment):
            log_figure(self.trainer, f"{split}/w_histogram", w_histogram_figure(stats, title=split))
        metrics.reset()

    def _epoch_end(self, stage: str, *, figure: bool) -> None:
        self._log_split(stage, self.metrics_for(stage), figure=figure)
        for split, metrics in self.extra_metrics.items():
            if split.startswith(stage):
                self._log_split(split, metrics, figure=figure)

    def on_train_epoch_end(self) -> None:
        self._epoch_end("train", figure=False)

    def on_validation_epoch_end(self) -> None:
        self._epoch_end("val", figure=True)

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test", figure=True)
