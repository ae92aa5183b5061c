"""``PruningStageAccuracy``: test accuracy of an ``EnsembleClassifier`` just before and just after ``AlphaPruning``
prunes it during ``fit``, and at the end of fine-tuning — the three numbers of a train/prune/fine-tune run.

Attached from the command line, after the config's callbacks (so it runs after ``AlphaPruning`` in each hook)::

    python -m framework fit --config configs/alphapruning/digits_ensemble_prune_finetune.yaml \
        --trainer.callbacks+=benchmarks.pruning_stage_accuracy.PruningStageAccuracy \
        --trainer.callbacks.init_args.path=stages.json

Stages written to ``path`` (JSON, atomically, after each stage):

* ``before_pruning``: at the end of training epoch ``prune_epoch - 1`` (the dense model ``AlphaPruning`` will prune);
* ``after_pruning``: at the start of epoch ``prune_epoch``, after ``AlphaPruning`` pruned (before any fine-tuning step);
* ``after_finetuning``: when training ends.

Each stage holds, per test split of the datamodule (``test``, ``test_shifted``...): the majority-vote accuracy (ties
to the lowest class, as the model's own metric), the mean-probability accuracy, each member's accuracy and the number
of items. It observes only: evaluation runs under ``torch.no_grad`` in eval mode with the global RNG states forked, and
the train/eval mode of every module is restored, so the run trains exactly as without it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from framework.atomic_files import write_json_atomic  # noqa: E402
from framework.callbacks.alphapruning import AlphaPruning  # noqa: E402

__all__ = ["PruningStageAccuracy", "STAGES"]

STAGES = ("before_pruning", "after_pruning", "after_finetuning")


class PruningStageAccuracy(pl.Callback):
    """Test accuracies of an ensemble before / after ``AlphaPruning(prune_at="epoch")`` and after fine-tuning.

    Args:
        path: JSON file the stages are written to (rewritten after each stage).
    """

    def __init__(self, *, path: str) -> None:
        if not isinstance(path, str) or not path:
            raise ValueError(f"path must be a non-empty file path, got {path!r}")
        self.path = Path(path)
        self.stages: dict[str, Any] = {}

    def _pruning_callback(self, trainer: pl.Trainer) -> AlphaPruning:
        found = [c for c in trainer.callbacks if isinstance(c, AlphaPruning)]
        if len(found) != 1 or found[0].prune_at != "epoch" or found[0].prune_epoch < 1:
            raise ValueError("PruningStageAccuracy needs exactly one AlphaPruning callback with prune_at='epoch' and "
                             f"prune_epoch >= 1; found {[(c.prune_at, c.prune_epoch) for c in found]}")
        return found[0]

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._pruning_callback(trainer)
            for method in ("majority_vote", "mean_probabilities"):
                if not callable(getattr(pl_module, method, None)):
                    raise ValueError(f"PruningStageAccuracy needs an ensemble model with {method}(); got "
                                     f"{type(pl_module).__name__}")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self._pruning_callback(trainer).prune_epoch - 1:
            self._record("before_pruning", trainer, pl_module)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pruning_callback(trainer).pruned and "after_pruning" not in self.stages:
            self._record("after_pruning", trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._record("after_finetuning", trainer, pl_module)

    def _record(self, stage: str, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = trainer.datamodule
        datamodule.setup("test")
        loaders = datamodule.test_dataloader()
        loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
        names = list(getattr(datamodule, "test_split_names", [f"test_{i}" for i in range(len(loaders))]))
        modes = {module: module.training for module in pl_module.modules()}
        splits = {}
        try:
            pl_module.eval()
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                for name, loader in zip(names, loaders):
                    splits[name] = _accuracies(pl_module, loader)
        finally:
            for module, training in modes.items():
                module.train(training)
        self.stages[stage] = {"epoch": trainer.current_epoch, "global_step": trainer.global_step, "splits": splits}
        write_json_atomic(self.path, self.stages, indent=2)


def _accuracies(model: pl.LightningModule, loader) -> dict[str, Any]:
    """Majority-vote, mean-probability and per-member accuracy of ``model`` (logits ``[M, B, K]``) on ``loader``."""
    correct_vote = correct_mean = items = 0
    correct_members: torch.Tensor | None = None
    for x, y in loader:
        x, y = x.to(model.device), y.to(model.device)
        logits = model(x)
        correct_vote += int((model.majority_vote(logits) == y).sum())
        correct_mean += int((model.mean_probabilities(logits).argmax(dim=-1) == y).sum())
        members = (logits.argmax(dim=-1) == y).sum(dim=1).cpu()
        correct_members = members if correct_members is None else correct_members + members
        items += len(y)
    if not items:
        raise ValueError("PruningStageAccuracy: a test dataloader is empty")
    return {"items": items, "majority_vote_accuracy": correct_vote / items,
            "mean_probability_accuracy": correct_mean / items,
            "member_accuracy": [int(c) / items for c in correct_members]}
