"""Caching of generated (synthetic) datasets with 🤗 ``datasets``.

Expensive generators run once: the result is stored as an Arrow dataset under
``<cache_dir>/<name>-<fingerprint>``, where the fingerprint hashes the generator's name, its ``version`` and its
keyword arguments. The directory is written to a temporary sibling and renamed into place, so an interrupted run
never leaves a half-written cache behind, and two processes racing to write it both end with a complete copy.

Broken caches repair themselves: a cache that cannot be loaded (a truncated ``.arrow`` file, an empty or garbled
``state.json`` / ``dataset_info.json``, a missing data file) is reported with a :class:`DatasetCacheRegenerated`
warning naming its directory, moved aside and regenerated, automatically (no switch needed). Temporary folders of
runs killed while writing (``.<name>-<fingerprint>.tmp-<host>-<pid>-*``) are deleted by the next call that finds
them: at once when the process that made them is gone (same host), after a day otherwise; unmarked ones of older
versions after an hour.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DatasetCacheRegenerated", "default_cache_dir", "dataset_fingerprint", "load_or_generate",
           "remove_orphaned_temporaries"]

#: Temporary folders: ``.<target>.tmp-<host>-<pid>-<random>`` (writing) and ``.<target>.corrupt-<host>-<pid>-<random>``
#: (a broken cache being deleted).
_TEMPORARY = re.compile(r"^\.(?P<target>.+)\.(?:tmp|corrupt)-(?P<host>[A-Za-z0-9]*)-(?P<pid>\d+)-[^-]*$")
#: Temporary folders of the earlier naming, ``.<target>.<random>``, with no owner recorded.
_LEGACY_TEMPORARY = re.compile(r"^\.(?P<target>.+-[0-9a-f]{16})\.[a-z0-9_]{8}$")
_FOREIGN_AGE_S = 24 * 3600
_LEGACY_AGE_S = 3600


class DatasetCacheRegenerated(UserWarning):
    """A cached dataset could not be read and is being regenerated (the message names its directory)."""


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32]


def _owner_tag() -> str:
    return f"{_host()}-{os.getpid()}-"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_orphaned_temporaries(root: str | Path) -> list[Path]:
    """Delete temporary folders under ``root`` left by killed runs (see the module docstring); returns them."""
    root = Path(root)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        match = _TEMPORARY.match(entry.name)
        if match:
            pid = int(match["pid"])
            if match["host"] == _host():
                orphaned = pid != os.getpid() and not _process_alive(pid)
            else:
                orphaned = age > _FOREIGN_AGE_S
        else:
            orphaned = bool(_LEGACY_TEMPORARY.match(entry.name)) and age > _LEGACY_AGE_S
        if orphaned:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed


def _load_cached(target: Path):
    """The cached dataset at ``target``, or ``None`` after discarding a broken one (with a warning naming it)."""
    import datasets

    try:
        return datasets.load_from_disk(str(target)).with_format("numpy")
    except Exception as error:  # noqa: BLE001 - pyarrow, json and datasets each fail their own way on a broken cache
        reason = (str(error).strip().splitlines() or [""])[0]
        warnings.warn(f"dataset cache {target} is unreadable ({type(error).__name__}: {reason}); deleting it and "
                      "regenerating the dataset", DatasetCacheRegenerated, stacklevel=3)
    # Moved aside first (atomic), so a concurrent reader never sees a half-deleted folder.
    trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.corrupt-{_owner_tag()}", dir=target.parent))
    try:
        os.replace(target, trash / target.name)
    except OSError:
        pass  # another process moved it already
    shutil.rmtree(trash, ignore_errors=True)
    return None


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
    remove_orphaned_temporaries(root)
    if target.exists():
        dataset = _load_cached(target)
        if dataset is not None:
            return dataset
    if not (target / "dataset_info.json").is_file():
        columns = generate(**kwargs)
        lengths = {k: len(v) for k, v in columns.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"generator {name!r} returned columns of different lengths: {lengths}")
        data = {k: (np.asarray(v) if not isinstance(v, list) else v) for k, v in columns.items()}
        dataset = _dataset_from_dict(datasets, data, _features_for(data), fingerprint=target.name)
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{_owner_tag()}", dir=root))
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
