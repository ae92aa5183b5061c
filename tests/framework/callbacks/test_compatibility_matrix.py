"""Compatibility matrix: every callback of ``framework.callbacks`` attached to five kinds of user model.

Each cell is either **runs** — a plain ``Trainer(callbacks=[...], logger=False)`` fit of 2 steps puts the named keys
in ``trainer.callback_metrics``, then a resume from the checkpoint restores the callback's state and repeats no work —
or **refuses** — ``setup`` raises the documented ``ValueError`` (the message names what the model lacks) before any
other callback's ``setup`` and before training. No cell may crash. The README's "Attaching the project's methods to
your own model" section shows :func:`render_matrix` of these expectations (checked by
``test_readme_shows_the_matrix``; regenerate with ``python -m tests.framework.callbacks.test_compatibility_matrix``).
"""

from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

import framework.callbacks
from framework.callbacks.alphapruning import AlphaPruning
from framework.callbacks.forecast_plots import ForecastPlots
from framework.callbacks.frequency_response import FrequencyResponseProbe
from framework.callbacks.hessian_probe import HessianProbe
from framework.callbacks.loss_landscape_probe import LossLandscapeProbe
from framework.callbacks.polarization_monitor import PolarizationMonitor
from framework.callbacks.rollout_plots import RolloutPlots
from framework.callbacks.sobolev_filter import SobolevFilter
from tests.framework.callbacks.users_models import MODEL_FACTORIES, make_model

README = Path(__file__).resolve().parents[3] / "README.md"
BEGIN, END = "<!-- compatibility-matrix:begin -->", "<!-- compatibility-matrix:end -->"

MODELS = {
    "boring": "BoringModel",
    "demo_transformer": "demo Transformer",
    "llama": "LlamaForCausalLM",
    "cnn_batchnorm": "CNN + BatchNorm",
    "ensemble": "user ensemble",
}


@dataclass(frozen=True)
class Runs:
    """The cell trains, logs ``keys`` into ``trainer.callback_metrics`` and resumes without repeating work."""

    keys: tuple[str, ...]


@dataclass(frozen=True)
class Refuses:
    """``setup`` raises a ValueError whose message matches ``match``; ``reason`` is the README's short text."""

    match: str
    reason: str


def _work(callback) -> int:
    """How much work the callback did in this process (not restored from a checkpoint)."""
    if isinstance(callback, AlphaPruning):
        return int(callback.report is not None)
    if isinstance(callback, PolarizationMonitor):
        return len(callback.last_statistics)
    return len(callback.reports)


PROBE_KEYS = ("hessian/eigenvalue_1", "hessian/trace", "hessian/loss")
LANDSCAPE_KEYS = ("landscape/center_loss", "landscape/n_minima", "landscape/loss_range")
PRUNING_KEYS = ("alphapruning/achieved_sparsity", "alphapruning/capped_layers", "alphapruning/max_layer_sparsity")
NO_SSM = Refuses(r"no (filterable )?SSM layer", "no SSM layer")

CALLBACKS: dict[str, tuple[Callable[[], pl.Callback], dict[str, Runs | Refuses]]] = {
    "PolarizationMonitor": (
        lambda: PolarizationMonitor(log_figures=False),
        {"boring": Refuses("needs labelled batches", "unlabelled batches"),
         "demo_transformer": Refuses("has no val dataloader", "no validation data"),
         "llama": Refuses("dict batches need keys 'x' and 'y'", "no labels in the dict batches"),
         "cnn_batchnorm": Refuses(r"needs per-member logits \[M, B, K\]", "one model: pass `checkpoints`"),
         "ensemble": Runs(("polarization/val/polarization", "polarization/val/majority_vote_error"))},
    ),
    "AlphaPruning": (
        lambda: AlphaPruning(target_sparsity=0.5, epsilon=0.2, esd_plot_layers=0),
        {"boring": Refuses("no prunable module selected", "only an output head: pass `include`"),
         **{name: Runs(PRUNING_KEYS) for name in ("demo_transformer", "llama", "cnn_batchnorm", "ensemble")}},
    ),
    "HessianProbe": (
        lambda: HessianProbe(top_k=1, max_iter=2, trace_samples=1, trace_min_samples=1, density_steps=2,
                             density_bins=50, log_figures=False),  # hvp_method="auto": both routes run
        {name: Runs(PROBE_KEYS) for name in MODELS},
    ),
    "LossLandscapeProbe": (
        lambda: LossLandscapeProbe(dims=1, resolution=3, log_figures=False),
        {name: Runs(LANDSCAPE_KEYS) for name in MODELS},
    ),
    "LossLandscapeProbe(directions='hessian')": (
        lambda: LossLandscapeProbe(dims=1, resolution=3, directions="hessian", hessian_max_iter=2,
                                   hvp_method="double_backward", log_figures=False),
        {name: Runs(LANDSCAPE_KEYS + ("landscape/direction_eigenvalue_1",)) for name in MODELS},
    ),
    "SobolevFilter": (SobolevFilter, {name: NO_SSM for name in MODELS}),
    "FrequencyResponseProbe": (FrequencyResponseProbe, {name: NO_SSM for name in MODELS}),
    "RolloutPlots": (
        RolloutPlots,
        {name: Refuses(r"lacks `rollout\(\.\.\.\)`", "no `rollout`")
         for name in MODELS},
    ),
    "ForecastPlots": (
        ForecastPlots,
        {name: Refuses(r"lacks `forecast\(\.\.\.\)`", "no `forecast`")
         for name in MODELS},
    ),
}

CELLS = [(callback, model) for callback in CALLBACKS for model in MODELS]


class _SetupSpy(pl.Callback):
    """Placed after the tested callback: its ``setup`` runs only if the tested one's did not raise."""

    def __init__(self) -> None:
        self.setup_called = False

    def setup(self, trainer, pl_module, stage) -> None:
        self.setup_called = True


def _trainer(tmp_path: Path, callbacks: list[pl.Callback]) -> pl.Trainer:
    return pl.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0,
                      logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                      default_root_dir=tmp_path,
                      callbacks=[*callbacks, ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)])


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if hasattr(a, "shape") and hasattr(b, "shape"):
        return bool((a == b).all())
    return a == b


def run_cell(callback_name: str, model_name: str, tmp_path: Path) -> None:
    factory, expectations = CALLBACKS[callback_name]
    expected = expectations[model_name]
    callback, spy = factory(), _SetupSpy()
    trainer = _trainer(tmp_path, [callback, spy])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny layers: power-law fallbacks, few batches
        if isinstance(expected, Refuses):
            with pytest.raises(ValueError, match=expected.match):
                trainer.fit(make_model(model_name))
            assert not spy.setup_called, "the error must come from the callback's setup"
            assert trainer.global_step == 0
            return
        trainer.fit(make_model(model_name))
        missing = [key for key in expected.keys if key not in trainer.callback_metrics]
        assert not missing, f"not in trainer.callback_metrics: {missing}"
        assert _work(callback) >= 1
        checkpoint = tmp_path / "ckpt" / "last.ckpt"
        saved = torch.load(checkpoint, weights_only=False)["callbacks"][callback.state_key]
        # Resume the finished run with a fresh callback: state comes back, nothing is done twice.
        resumed = factory()
        _trainer(tmp_path, [resumed]).fit(make_model(model_name), ckpt_path=checkpoint)
    assert _same(resumed.state_dict(), saved), "callback state not restored from the checkpoint"
    assert _work(resumed) == 0, "the resumed run repeated the callback's work"


@pytest.mark.parametrize(("callback_name", "model_name"), CELLS, ids=[f"{c}-{m}" for c, m in CELLS])
def test_matrix_cell(callback_name, model_name, tmp_path):
    run_cell(callback_name, model_name, tmp_path)


#: Training-infrastructure callbacks that ask nothing of the model (any LightningModule): covered by their own tests
#: (tests/framework/callbacks/test_chunked_resume.py, test_compile_modules.py, test_cuda_graph_modules.py), not by the
#: method matrix.
INFRASTRUCTURE = {"CompileModules", "CUDAGraphModules", "EpochBoundaryTimeLimit", "RNGStateCheckpoint"}


def _callback_classes() -> set[str]:
    names = set()
    for info in pkgutil.walk_packages(framework.callbacks.__path__, "framework.callbacks."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, pl.Callback) and obj.__module__ == module.__name__ \
                    and not name.startswith("_") and not inspect.isabstract(obj) and name != "ProbeCallback":
                names.add(name)
    return names - INFRASTRUCTURE


def test_matrix_covers_every_callback():
    rows = {re.sub(r"\(.*\)$", "", name) for name in CALLBACKS}
    assert _callback_classes() <= rows, f"callbacks missing from the matrix: {_callback_classes() - rows}"
    assert all(set(cells) == set(MODELS) for _, cells in CALLBACKS.values())
    assert set(MODELS) == set(MODEL_FACTORIES)


def render_matrix() -> str:
    """The README table: one row per callback, one column per model."""
    header = "| callback | " + " | ".join(MODELS.values()) + " |"
    lines = [header, "|" + "---|" * (len(MODELS) + 1)]
    for callback_name, (_, cells) in CALLBACKS.items():
        row = []
        for model in MODELS:
            cell = cells[model]
            row.append("runs" if isinstance(cell, Runs) else f"refuses ({cell.reason})")
        lines.append(f"| `{callback_name}` | " + " | ".join(row) + " |")
    return "\n".join(lines)


def test_readme_shows_the_matrix():
    text = README.read_text()
    assert BEGIN in text and END in text, f"README.md lacks the {BEGIN} ... {END} block"
    shown = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert shown == render_matrix(), \
        "README matrix differs from the expectations: run python -m tests.framework.callbacks.test_compatibility_matrix"


if __name__ == "__main__":
    text = README.read_text()
    head, rest = text.split(BEGIN, 1)
    README.write_text(f"{head}{BEGIN}\n{render_matrix()}\n{END}{rest.split(END, 1)[1]}")
    print(render_matrix())
