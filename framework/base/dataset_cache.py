"""Caching of generated (synthetic) datasets with 🤗 ``datasets``.

Expensive generators run once: the result is stored as an Arrow dataset under
``<cache_dir>/<name>-<fingerprint>``, where the fingerprint hashes the generator's name, its ``version`` and its
keyword arguments. The directory is written to a temporary sibling and renamed into place, so an interrupted run
never leaves a half-written cache behind, and two processes racing to write it both end with a complete copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["default_cache_dir", "dataset_fingerprint", "load_or_generate"]


def default_cache_dir() -> Path:
    """``$FRAMEWORK_CACHE_DIR`` if set, else ``~/.cache/framework/datasets``."""
    return Path(os.environ.get("FRAMEWORK_CACHE_DIR", Path.home() / ".cache" / "framework" / "datasets"))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return {"__ndarray__": hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest(), "shape": value.shape}
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot fingerprint generator argument of type {type(value).__name__}: {value!r}")


def dataset_fingerprint(name: str, version: str | int, kwargs: Mapping[str, Any]) -> str:
    """Stable 16-hex-digit hash of ``(name, version, kwargs)``."""
    payload = json.dumps({"name": name, "version": str(version), "kwargs": _jsonable(kwargs)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _features_for(data: Mapping[str, Any]):
    """Fixed-shape Arrow features for numeric arrays, so ``dataset[:]`` returns real ndarrays (not nested lists).

    1-d columns become scalars, 2-d a fixed-length sequence per row, 3-d to 6-d ``datasets.Array{2..5}D``; anything
    else (lists, strings) makes the whole schema inferred by ``datasets``.
    """
    import datasets

    features = {}
    for key, value in data.items():
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
            return None
        dtype = "bool" if value.dtype == np.bool_ else str(value.dtype)
        if value.ndim == 1:
            features[key] = datasets.Value(dtype)
        elif value.ndim == 2:
            features[key] = datasets.Sequence(datasets.Value(dtype), length=value.shape[1])
        elif 3 <= value.ndim <= 6:
            features[key] = getattr(datasets, f"Array{value.ndim - 1}D")(shape=value.shape[1:], dtype=dtype)
        else:
            return None
    return datasets.Features(features)


def _dataset_from_dict(datasets, data: Mapping[str, Any], features, *, fingerprint: str):
    """``datasets.Dataset.from_dict`` with our fingerprint instead of one hashed by ``datasets``.

    ``datasets`` would fingerprint the new in-memory table by pickling it with dill, which costs seconds for large
    tables and fails outright on some Python / pyarrow combinations (Python 3.12 + pyarrow 26: "Can't pickle <class
    'MonthDayNano'>"). Our cache key already identifies the content, so it is passed through instead.
    """

    class _Fingerprinted(datasets.Dataset):
        def __init__(self, arrow_table, info=None, split=None, indices_table=None, fingerprint=None):
            super().__init__(arrow_table, info=info, split=split, indices_table=indices_table,
                             fingerprint=fingerprint or preset)

    preset = fingerprint
    return _Fingerprinted.from_dict(data, features=features)


def load_or_generate(
    name: str,
    generate: Callable[..., Mapping[str, Any]],
    *,
    version: str | int = 1,
    cache_dir: str | Path | None = None,
    **kwargs: Any,
):
    """Return the cached ``datasets.Dataset`` for ``generate(**kwargs)``, generating and caching it on first use.

    Args:
        name: dataset name, used in the directory name.
        generate: function returning a mapping ``column -> array/list`` with equal first dimensions.
        version: bump when the generator's code changes meaning, so old caches are not reused.
        cache_dir: root directory (default :func:`default_cache_dir`).
        **kwargs: passed to ``generate`` and hashed into the fingerprint (must be JSON-like or numpy arrays).

    Returns:
        A ``datasets.Dataset`` with numpy formatting: ``dataset[:]`` is a dict of full ndarrays, ``dataset[i]`` one row.
    """
    import datasets

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / f"{name}-{dataset_fingerprint(name, version, kwargs)}"
    if not (target / "dataset_info.json").is_file():
        columns = generate(**kwargs)
        lengths = {k: len(v) for k, v in columns.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"generator {name!r} returned columns of different lengths: {lengths}")
        data = {k: (np.asarray(v) if not isinstance(v, list) else v) for k, v in columns.items()}
        dataset = _dataset_from_dict(datasets, data, _features_for(data), fingerprint=target.name)
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
        try:
            datasets.disable_progress_bars()
            dataset.save_to_disk(str(tmp))
            try:
                os.replace(tmp, target)
            except OSError:
                # Another process finished first (target exists and is non-empty): keep theirs.
                if not (target / "dataset_info.json").is_file():
                    raise
        finally:
            datasets.enable_progress_bars()
            shutil.rmtree(tmp, ignore_errors=True)
    return datasets.load_from_disk(str(target)).with_format("numpy")
