"""The generated-dataset cache: generate once, fingerprint by arguments, atomic writes, shapes preserved."""

from __future__ import annotations

import numpy as np
import pytest

from framework.base.dataset_cache import dataset_fingerprint, load_or_generate

CALLS: list[dict] = []


def _generate(n: int, scale: float = 1.0) -> dict:
    CALLS.append({"n": n, "scale": scale})
    rng = np.random.default_rng(n)
    return {"x": rng.normal(size=(n, 3)).astype(np.float32) * scale, "img": np.ones((n, 2, 4, 4), np.float32),
            "y": np.arange(n)}


def test_generates_once_and_reloads(tmp_path):
    CALLS.clear()
    first = load_or_generate("toy", _generate, cache_dir=tmp_path, n=10)
    second = load_or_generate("toy", _generate, cache_dir=tmp_path, n=10)
    assert len(CALLS) == 1
    np.testing.assert_array_equal(first[:]["x"], second[:]["x"])
    assert second[:]["img"].shape == (10, 2, 4, 4)
    assert second[:]["y"].dtype == np.int64


def test_different_arguments_or_version_regenerate(tmp_path):
    CALLS.clear()
    load_or_generate("toy", _generate, cache_dir=tmp_path, n=10)
    load_or_generate("toy", _generate, cache_dir=tmp_path, n=10, scale=2.0)
    load_or_generate("toy", _generate, cache_dir=tmp_path, version=2, n=10)
    assert len(CALLS) == 3
    assert len([p for p in tmp_path.iterdir() if not p.name.startswith(".")]) == 3


def test_fingerprint_is_order_independent_and_sensitive():
    a = dataset_fingerprint("d", 1, {"a": 1, "b": [1, 2]})
    assert a == dataset_fingerprint("d", 1, {"b": [1, 2], "a": 1})
    assert a != dataset_fingerprint("d", 1, {"a": 1, "b": [1, 3]})
    assert a != dataset_fingerprint("d", 2, {"a": 1, "b": [1, 2]})
    arr = np.arange(4)
    assert dataset_fingerprint("d", 1, {"w": arr}) != dataset_fingerprint("d", 1, {"w": arr + 1})


def test_interrupted_generation_leaves_no_cache(tmp_path):
    def broken(n: int) -> dict:
        raise RuntimeError("generator died")

    with pytest.raises(RuntimeError):
        load_or_generate("toy", broken, cache_dir=tmp_path, n=3)
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith(".")] if tmp_path.exists() else True


def test_unequal_columns_rejected(tmp_path):
    with pytest.raises(ValueError, match="different lengths"):
        load_or_generate("toy", lambda n: {"a": np.zeros(n), "b": np.zeros(n + 1)}, cache_dir=tmp_path, n=3)


def test_unhashable_argument_rejected(tmp_path):
    with pytest.raises(TypeError, match="fingerprint"):
        load_or_generate("toy", _generate, cache_dir=tmp_path, n=3, scale=object())
