"""Guards against the import-shadowing class of breakage (issue 18).

The project installs exactly one top-level import name, ``framework``. These tests fail if a generic top-level
package (``models``, ``callbacks``, ``datamodules``, ``kernels``) comes back: it would shadow Hugging Face's
``kernels`` distribution that Transformers imports, collide with distributions of the same name in site-packages,
and collide with the ``models/`` and ``callbacks/`` packages of users' own repositories.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
GENERIC_NAMES = ("models", "callbacks", "datamodules", "kernels")


def test_repository_root_has_no_generic_packages():
    present = [name for name in GENERIC_NAMES if (REPO_ROOT / name / "__init__.py").exists()]
    assert present == [], f"generic top-level packages at the repository root: {present} (move them under framework/)"


def test_huggingface_kernels_is_the_kernels_that_imports():
    """With HF's ``kernels`` distribution installed (dev extra), ``import kernels`` must reach it, not a package of
    ours: Transformers ≥ 5.25 imports it when GPT-2 or Llama is imported."""
    distribution = importlib.metadata.distribution("kernels")
    kernels = importlib.import_module("kernels")
    kernels_file = Path(kernels.__file__).resolve()
    installed = Path(distribution.locate_file("kernels")).resolve()
    assert kernels_file.parent == installed, f"`import kernels` resolved to {kernels_file}, not to {installed}"


def test_transformers_gpt2_and_llama_forward_with_hf_kernels_installed():
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=32, n_positions=16, n_embd=16, n_layer=1, n_head=2)).eval()
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1,
                                         max_position_embeddings=16)).eval()
    tokens = torch.randint(0, 32, (2, 8))
    with torch.no_grad():
        for model in (gpt2, llama):
            logits = model(input_ids=tokens).logits
            assert logits.shape == (2, 8, 32)
            assert torch.isfinite(logits).all()


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory) -> Path:
    """The project's wheel, built with ``pip wheel --no-deps`` from a copy of what the wheel is made of (so the
    repository gets no build/ or egg-info litter)."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    shutil.copytree(REPO_ROOT / "framework", source / "framework",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in GENERIC_NAMES:  # a stray copy of an old package in the tree must not be picked up either
        if (REPO_ROOT / name).is_dir():
            shutil.copytree(REPO_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    wheel_dir = tmp_path / "wheels"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(wheel_dir), str(source)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = wheel_dir.glob("framework-*.whl")
    return wheel


@pytest.mark.slow
def test_built_wheel_has_one_top_level_name(built_wheel):
    """``pip wheel`` of the project holds ``framework`` (and its metadata) and nothing else at its top level."""
    with zipfile.ZipFile(built_wheel) as archive:
        names = archive.namelist()
    top_level = {name.split("/", 1)[0] for name in names}
    assert {name for name in top_level if not name.endswith(".dist-info")} == {"framework"}
    assert "framework/kernels/squeezed_attention/ops.py" in names


USER_SCRIPT = textwrap.dedent('''
    """A user's own repository: its own models/, callbacks/, datamodules/ and kernels/ packages, and one of the
    project's callbacks attached to a model of its own."""
    import json
    import sys

    import lightning.pytorch as pl
    import torch

    import callbacks
    import datamodules
    import kernels
    import models
    from framework.callbacks.hessian_probe import HessianProbe

    assert models.OWNER == callbacks.OWNER == datamodules.OWNER == kernels.OWNER == "user", "user packages shadowed"

    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", devices=1,
                         callbacks=[callbacks.CountEpochs(), HessianProbe(top_k=1, max_iter=20, trace_samples=10,
                                                                          density_steps=10, every_n_epochs=1,
                                                                          log_figures=False)])
    module = models.UserRegression()
    trainer.fit(module, datamodule=datamodules.UserData())
    keys = sorted(k for k in trainer.callback_metrics if "hessian" in k.lower() or "eig" in k.lower())
    json.dump({"epochs_counted": trainer.callbacks[0].epochs,
               "framework_file": sys.modules["framework"].__file__,
               "user_models_file": models.__file__}, sys.stdout)
''')

USER_PACKAGES = {
    "models": '''
        import lightning.pytorch as pl
        import torch
        OWNER = "user"

        class UserRegression(pl.LightningModule):
            def __init__(self):
                super().__init__()
                self.net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))

            def forward(self, x):
                return self.net(x)

            def training_step(self, batch, batch_idx):
                x, y = batch
                loss = torch.nn.functional.mse_loss(self(x).squeeze(-1), y)
                self.log("train_loss", loss)
                return loss

            def validation_step(self, batch, batch_idx):
                x, y = batch
                self.log("val_loss", torch.nn.functional.mse_loss(self(x).squeeze(-1), y))

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.05)
    ''',
    "callbacks": '''
        import lightning.pytorch as pl
        OWNER = "user"

        class CountEpochs(pl.Callback):
            epochs = 0

            def on_train_epoch_end(self, trainer, pl_module):
                self.epochs += 1
    ''',
    "datamodules": '''
        import lightning.pytorch as pl
        import torch
        from torch.utils.data import DataLoader, TensorDataset
        OWNER = "user"

        class UserData(pl.LightningDataModule):
            def setup(self, stage=None):
                g = torch.Generator().manual_seed(0)
                x = torch.randn(64, 3, generator=g)
                y = x.sum(-1)
                self.train, self.val = TensorDataset(x[:48], y[:48]), TensorDataset(x[48:], y[48:])

            def train_dataloader(self):
                return DataLoader(self.train, batch_size=16)

            def val_dataloader(self):
                return DataLoader(self.val, batch_size=16)
    ''',
    "kernels": '''
        OWNER = "user"
    ''',
}


@pytest.mark.slow
def test_user_repository_with_its_own_generic_packages(tmp_path, built_wheel):
    """From a directory holding a user's own ``models/``, ``callbacks/``, ``datamodules/`` and ``kernels/``, a user
    script imports one of our callbacks and trains its own model with it — with the project installed from its
    wheel, as users install it (an editable install's import hooks would hide a collision)."""
    site = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                             str(site), str(built_wheel)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    user = tmp_path / "user_repo"
    user.mkdir()
    for name, source in USER_PACKAGES.items():
        (user / name).mkdir()
        (user / name / "__init__.py").write_text(textwrap.dedent(source))
    (user / "train.py").write_text(USER_SCRIPT)
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    # `python train.py` puts the user's directory first on sys.path; the installed wheel comes next.
    env["PYTHONPATH"] = str(site)
    result = subprocess.run([sys.executable, "train.py"], cwd=user, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["epochs_counted"] == 2
    assert Path(report["user_models_file"]).resolve() == (user / "models" / "__init__.py").resolve()
    assert Path(report["framework_file"]).resolve().is_relative_to(site.resolve())
