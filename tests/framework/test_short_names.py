"""Short class names resolve through a static index, and a command imports only the modules it needs."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import subprocess
import sys

import pytest

from framework.class_index import CLASS_INDEX
from framework.short_names import PROJECT_PACKAGES, build_class_index, short_name_candidates

DIGITS = "configs/polarization/digits_ensemble.yaml"
#: Modules a CNN-ensemble command must not import (other methods' heavy stacks; W&B before a logger exists).
UNNEEDED = ("wandb", "framework.models.components.squeezed", "framework.models.squeezed_attention_eval",
            "framework.kernels.squeezed_attention", "framework.models.tinymem_lm", "framework.models.cgm_gm",
            "framework.callbacks.alphapruning", "framework.models.components.smollm2")


def test_index_is_up_to_date():
    """The committed index equals a fresh static walk (regenerate: python -m framework.short_names --write)."""
    assert {k: list(v) for k, v in CLASS_INDEX.items()} == build_class_index()


def test_index_is_complete_against_an_import_walk():
    """Every public class defined in an importable project module is in the index under that module."""
    missing = []
    for name in PROJECT_PACKAGES:
        package = importlib.import_module(name)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{name}."):
            if any(part.startswith("_") for part in info.name.split(".")):
                continue
            try:
                module = importlib.import_module(info.name)
            except ImportError:
                continue
            for cls_name, cls in inspect.getmembers(module, inspect.isclass):
                if cls.__module__ == module.__name__ and not cls_name.startswith("_"):
                    if module.__name__ not in CLASS_INDEX.get(cls_name, ()):
                        missing.append(f"{module.__name__}.{cls_name}")
    assert not missing, f"not in framework/class_index.py (run python -m framework.short_names --write): {missing}"


def test_candidates_come_from_args_and_config_files(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("model:\n  class_path: EnsembleClassifier\n  init_args:\n    member: {class_path: SmallCNN}\n")
    found = short_name_candidates(["fit", "--config", str(config), "--data=DigitsClassification", "--x.lr=0.1"])
    assert {"EnsembleClassifier", "SmallCNN", "DigitsClassification"} <= found
    assert "0.1" not in found and "fit" not in found


def _imported_after(repo_root, *args: str) -> tuple[dict, str]:
    """Run the CLI in a fresh interpreter; returns which of UNNEEDED got imported, and stdout."""
    script = (
        "import atexit, json, sys\n"
        f"names = {UNNEEDED!r}\n"
        "atexit.register(lambda: sys.stderr.write('IMPORTED=' + json.dumps("
        "sorted(n for n in names if n in sys.modules)) + '\\n'))\n"
        "from framework.cli import main\n"
        "main()\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, *args], cwd=repo_root, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stderr.splitlines() if x.startswith("IMPORTED="))
    return json.loads(line.removeprefix("IMPORTED=")), proc.stdout


@pytest.mark.slow
def test_cnn_ensemble_config_imports_only_what_it_needs(repo_root):
    imported, out = _imported_after(repo_root, "fit", "--config", DIGITS, "--print_config")
    assert "framework.models.ensemble_classifier.EnsembleClassifier" in out
    assert imported == [], f"--print_config of {DIGITS} imported {imported}"


@pytest.mark.slow
def test_short_names_resolve_without_importing_other_methods(repo_root, tmp_path):
    text = (repo_root / DIGITS).read_text()
    text = (text.replace("framework.models.ensemble_classifier.EnsembleClassifier", "EnsembleClassifier")
            .replace("framework.models.components.ensemble.SmallCNN", "SmallCNN")
            .replace("framework.datamodules.digits_classification.DigitsClassification", "DigitsClassification"))
    assert "class_path: EnsembleClassifier" in text
    config = tmp_path / "short.yaml"
    config.write_text(text)
    imported, out = _imported_after(repo_root, "fit", "--config", str(config), "--print_config")
    for full in ("framework.models.ensemble_classifier.EnsembleClassifier",
                 "framework.models.components.ensemble.SmallCNN",
                 "framework.datamodules.digits_classification.DigitsClassification"):
        assert f"class_path: {full}" in out
    assert imported == []
