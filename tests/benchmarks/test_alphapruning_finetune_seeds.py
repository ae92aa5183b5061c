"""Gathering and summarising the prune/fine-tune seed sweep, on synthetic run directories: accuracies read back from
the files, paired t-intervals against scipy, verdicts, and the consistency checks; and the stage probe on a tiny
ensemble (it records the three stages and does not change training)."""

from __future__ import annotations

import json
import math

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from scipy import stats

from benchmarks.alphapruning_finetune_seeds import gather_run, summarise
from benchmarks.pruning_stage_accuracy import PruningStageAccuracy
from framework.callbacks.alphapruning import AlphaPruning

SPLITS = ("test", "test_shifted")


def _write_jsonl(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _run_dir(root, name, *, dense, pruned, tuned, layers, cli_offset=0.0):
    """A run directory as the sweep leaves it; accuracies per stage given for the ``test`` split (shifted: -0.1)."""
    run = root / name
    run.mkdir(parents=True)
    stages = {}
    for stage, acc in (("before_pruning", dense), ("after_pruning", pruned), ("after_finetuning", tuned)):
        stages[stage] = {"epoch": 0, "global_step": 0, "splits": {
            split: {"items": 100, "majority_vote_accuracy": acc - shift, "mean_probability_accuracy": acc - shift,
                    "member_accuracy": [acc - shift - 0.01, acc - shift, acc - shift - 0.02]}
            for split, shift in zip(SPLITS, (0.0, 0.1))}}
    (run / "stages.json").write_text(json.dumps(stages))
    fit_records = [{"step": 10, "time": 1.0, "val/majority_vote_error": 0.5},
                   {"step": 20, "time": 2.0, "alphapruning/achieved_sparsity": 0.6,
                    **{f"alphapruning/achieved/{k}": v for k, v in layers.items()}},
                   {"step": 30, "time": 3.0, "val/majority_vote_error": 0.03}]
    _write_jsonl(run / "fit" / "wandb" / "offline-run-1-a" / "files" / "metrics.jsonl", fit_records)
    test = {}
    for split, shift in zip(SPLITS, (0.0, 0.1)):
        acc = tuned - shift + cli_offset
        test.update({f"{split}/majority_vote_error": 1 - acc, f"{split}/mean_probability_error": 1 - acc,
                     f"{split}/mean_member_error": 1 - (acc - 0.01)})
    _write_jsonl(run / "test" / "wandb" / "offline-run-2-b" / "files" / "metrics.jsonl", [{"step": 0, **test}])
    return run


def _rows(tmp_path, values, **kwargs):
    rows = []
    for allocation, per_seed in values.items():
        for seed, (dense, pruned, tuned) in per_seed.items():
            layers = {"a": 0.5, "b": 0.7} if allocation == "alpha" else {"a": 0.6, "b": 0.6}
            run = _run_dir(tmp_path, f"{allocation}{seed}", dense=dense, pruned=pruned, tuned=tuned, layers=layers,
                           **kwargs)
            rows.append({"allocation": allocation, "seed": seed, **gather_run(run)})
    return rows


def _entry(summary, stage, metric="majority_vote_accuracy", split="test"):
    return next(e for e in summary["comparisons"]
                if (e["stage"], e["metric"], e["split"]) == (stage, metric, split))


def test_gather_run_reads_stages_layers_and_the_cli_test(tmp_path):
    run = _run_dir(tmp_path, "r", dense=0.9, pruned=0.8, tuned=0.85, layers={"x": 0.55, "y": 0.65})
    record = gather_run(run)
    assert record["stages"]["after_pruning"]["test"]["majority_vote_accuracy"] == pytest.approx(0.8)
    assert record["stages"]["before_pruning"]["test_shifted"]["mean_member_accuracy"] == pytest.approx(0.8 - 0.01)
    assert record["cli_test"]["test"]["majority_vote_accuracy"] == pytest.approx(0.85)
    assert record["cli_test"]["test_shifted"]["mean_member_accuracy"] == pytest.approx(0.74)
    assert record["layer_sparsity"] == {"x": 0.55, "y": 0.65}
    assert record["achieved_sparsity"] == 0.6
    assert record["val_majority_vote_accuracy_last"] == pytest.approx(0.97)  # the last logged value


def test_gather_run_refuses_an_unfinished_run(tmp_path):
    run = _run_dir(tmp_path, "r", dense=0.9, pruned=0.8, tuned=0.85, layers={"x": 0.5})
    stages = json.loads((run / "stages.json").read_text())
    del stages["after_finetuning"]
    (run / "stages.json").write_text(json.dumps(stages))
    with pytest.raises(ValueError, match="after_finetuning"):
        gather_run(run)


def test_paired_interval_matches_scipy_and_verdicts(tmp_path):
    alpha = {1: (0.95, 0.90, 0.94), 2: (0.96, 0.93, 0.95), 3: (0.94, 0.91, 0.93)}
    uniform = {1: (0.95, 0.80, 0.94), 2: (0.96, 0.82, 0.96), 3: (0.94, 0.79, 0.92)}
    summary = summarise(_rows(tmp_path, {"alpha": alpha, "uniform": uniform}))
    pruned = _entry(summary, "after_pruning")
    differences = np.array([alpha[s][1] - uniform[s][1] for s in (1, 2, 3)])
    low, high = stats.t.interval(0.95, df=2, loc=differences.mean(), scale=stats.sem(differences))
    assert pruned["alpha_minus_uniform"]["estimate"] == pytest.approx(differences.mean())
    assert (pruned["alpha_minus_uniform"]["low"], pruned["alpha_minus_uniform"]["high"]) == pytest.approx((low, high))
    assert pruned["verdict"] == "AlphaPruning better"
    assert pruned["alpha"]["se"] == pytest.approx(stats.sem([0.90, 0.93, 0.91]))
    assert _entry(summary, "cli_test")["verdict"].startswith("tie")  # differences 0, -0.01, +0.01
    assert _entry(summary, "before_pruning")["verdict"].startswith("tie")
    assert summary["dense_identical"] and summary["cli_test_matches_probe"]
    assert summary["layer_sparsity"]["alpha"]["b"] == pytest.approx({"mean": 0.7, "min": 0.7, "max": 0.7})
    worse = summarise(_rows(tmp_path / "w", {"alpha": uniform, "uniform": alpha}))
    assert _entry(worse, "after_pruning")["verdict"] == "uniform better"


def test_consistency_checks_and_bad_rows(tmp_path):
    alpha = {1: (0.95, 0.90, 0.94), 2: (0.96, 0.93, 0.95)}
    uniform = {1: (0.94, 0.80, 0.94), 2: (0.96, 0.82, 0.96)}  # seed 1 trained a different dense model
    summary = summarise(_rows(tmp_path, {"alpha": alpha, "uniform": uniform}, cli_offset=0.01))
    assert not summary["dense_identical"] and summary["max_dense_gap"] == pytest.approx(0.01)
    assert not summary["cli_test_matches_probe"] and summary["max_cli_test_probe_gap"] == pytest.approx(0.01)
    rows = _rows(tmp_path / "d", {"alpha": {1: (0.9, 0.9, 0.9)}})
    with pytest.raises(ValueError, match="given twice"):
        summarise(rows + rows)
    one = summarise(rows)  # one allocation, one seed: means, no interval
    assert "verdict" not in _entry(one, "after_pruning") and math.isnan(_entry(one, "after_pruning")["alpha"]["se"])


class _Ensemble(pl.LightningModule):
    """Two linear members on 2-D points: logits ``[M=2, B, 3]``; the API the probe needs."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.members = torch.nn.ModuleList([torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(),
                                                                torch.nn.Linear(16, 3)) for _ in range(2)])

    def forward(self, x):
        return torch.stack([m(x) for m in self.members])

    def majority_vote(self, logits):
        return logits.argmax(-1).mode(dim=0).values

    def mean_probabilities(self, logits):
        return logits.softmax(-1).mean(0)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return sum(torch.nn.functional.cross_entropy(l, y) for l in self(x))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _Data(pl.LightningDataModule):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        x = torch.randn(96, 2, generator=g)
        y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
        self.train, self.test = torch.utils.data.TensorDataset(x[:64], y[:64]), torch.utils.data.TensorDataset(
            x[64:], y[64:])
        self.test_split_names = ("test",)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.train, batch_size=16, shuffle=True)

    def test_dataloader(self):
        return torch.utils.data.DataLoader(self.test, batch_size=10)


def _fit(tmp_path, probe):
    pl.seed_everything(0)
    model = _Ensemble()
    pruning = AlphaPruning(target_sparsity=0.5, epsilon=0.2, pruner="magnitude", allocation="uniform",
                           prune_at="epoch", prune_epoch=2, include=[r"members\.\d\.0$"], esd_plot_layers=0)
    trainer = pl.Trainer(max_epochs=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                         callbacks=[pruning, *([probe] if probe else [])])
    trainer.fit(model, datamodule=_Data())
    return model


def test_stage_probe_records_three_stages_and_leaves_training_unchanged(tmp_path):
    path = tmp_path / "stages.json"
    with_probe = _fit(tmp_path, PruningStageAccuracy(path=str(path)))
    without = _fit(tmp_path, None)
    for a, b in zip(with_probe.state_dict().values(), without.state_dict().values()):
        assert torch.equal(a, b)  # the probe only observes
    stages = json.loads(path.read_text())
    # current_epoch: the last dense epoch, the pruning epoch, and (training ended) the number of epochs run
    assert [stages[s]["epoch"] for s in ("before_pruning", "after_pruning", "after_finetuning")] == [1, 2, 4]
    assert stages["before_pruning"]["global_step"] == stages["after_pruning"]["global_step"] == 8
    data = _Data()
    with torch.no_grad():
        logits = with_probe(data.test.tensors[0])
    y = data.test.tensors[1]
    final = stages["after_finetuning"]["splits"]["test"]
    assert final["items"] == 32
    assert final["majority_vote_accuracy"] == pytest.approx(float((with_probe.majority_vote(logits) == y).float().mean()))
    assert final["member_accuracy"] == pytest.approx([float((l.argmax(-1) == y).float().mean()) for l in logits])


def test_stage_probe_needs_epoch_pruning(tmp_path):
    probe = PruningStageAccuracy(path=str(tmp_path / "s.json"))
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, callbacks=[AlphaPruning(prune_at="fit_end"), probe])
    with pytest.raises(ValueError, match="prune_at='epoch'"):
        trainer.fit(_Ensemble(), datamodule=_Data())
    with pytest.raises(ValueError, match="path"):
        PruningStageAccuracy(path="")
