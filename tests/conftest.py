"""Shared CPU fixtures: an isolated dataset cache and output directory per test, and a CLI runner."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # One dataset cache per test session (generation is deterministic, so sharing it is safe and fast).
    cache = tmp_path_factory.getbasetemp() / "dataset-cache"
    monkeypatch.setenv("FRAMEWORK_CACHE_DIR", str(cache))


@pytest.fixture
def run_cli(tmp_path, monkeypatch):
    """Call ``framework.cli.main`` from inside ``tmp_path`` (so ``outputs/`` lands there); returns the CLI object."""
    from framework.cli import main

    def _run(*args: str):
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(sys, "argv", ["framework"])  # LightningCLI warns when sys.argv also has flags
        return main([str(a) for a in args])

    return _run


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT
