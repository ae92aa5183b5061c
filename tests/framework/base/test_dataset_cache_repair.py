"""Broken dataset caches are reported with their path and regenerated; orphaned temporary folders are cleaned
(issue 19, problem 3)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from framework.base.dataset_cache import DatasetCacheRegenerated, load_or_generate

CALLS: list[int] = []


def _generate(n: int) -> dict:
    CALLS.append(n)
    rng = np.random.default_rng(n)
    return {"x": rng.normal(size=(n, 3)).astype(np.float32), "y": np.arange(n)}


def _cache_folder(root):
    (folder,) = [p for p in root.iterdir() if not p.name.startswith(".")]
    return folder


def _truncate_arrow(folder):
    (arrow,) = folder.glob("*.arrow")
    data = arrow.read_bytes()
    arrow.write_bytes(data[: len(data) // 2])


def _garble_json(folder, name):
    (folder / name).write_text("{\"_data_files\": [{\"filename\": ")


BREAKAGES = {
    "truncated_arrow": _truncate_arrow,
    "empty_state_json": lambda folder: (folder / "state.json").write_text(""),
    "garbled_state_json": lambda folder: _garble_json(folder, "state.json"),
    "empty_dataset_info": lambda folder: (folder / "dataset_info.json").write_text(""),
    "missing_arrow": lambda folder: next(folder.glob("*.arrow")).unlink(),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_broken_cache_is_reported_with_its_path_and_regenerated(breakage, tmp_path):
    expected = load_or_generate("toy", _generate, cache_dir=tmp_path, n=64)[:]["x"]
    folder = _cache_folder(tmp_path)
    BREAKAGES[breakage](folder)
    CALLS.clear()
    with pytest.warns(DatasetCacheRegenerated, match=str(folder)):
        repaired = load_or_generate("toy", _generate, cache_dir=tmp_path, n=64)
    assert CALLS == [64], "the dataset must be generated again"
    np.testing.assert_array_equal(repaired[:]["x"], expected)
    # Repaired for good: the next call loads it without generating or warning, and nothing is left behind.
    CALLS.clear()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", DatasetCacheRegenerated)
        load_or_generate("toy", _generate, cache_dir=tmp_path, n=64)
    assert CALLS == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]


def test_run_killed_while_writing_leaves_a_folder_the_next_run_deletes(tmp_path):
    # A child process dies (os._exit, as under SIGKILL) in the middle of writing the cache.
    script = textwrap.dedent(f"""
        import os, numpy as np, datasets
        from framework.base.dataset_cache import load_or_generate
        def die(self, path, *a, **k):
            open(os.path.join(path, "data-00000-of-00001.arrow"), "wb").write(b"x" * 1000)
            os._exit(9)
        datasets.Dataset.save_to_disk = die
        load_or_generate("toy", lambda n: {{"x": np.arange(n)}}, cache_dir={str(tmp_path)!r}, n=8)
    """)
    repo_root = str(Path(__file__).resolve().parents[3])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [repo_root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert len(leftovers) == 1 and (leftovers[0] / "data-00000-of-00001.arrow").is_file()
    load_or_generate("other", _generate, cache_dir=tmp_path, n=4)  # any later use of the cache root
    assert not leftovers[0].exists(), "the orphaned temporary folder must be deleted"


def test_temporary_folders_of_live_processes_are_kept(tmp_path):
    from framework.base.dataset_cache import _owner_tag, remove_orphaned_temporaries

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".toy-0123456789abcdef.tmp-{_owner_tag().split('-')[0]}-{sleeper.pid}-abc"
        own = tmp_path / f".toy-0123456789abcdef.tmp-{_owner_tag()}xyz"
        foreign_young = tmp_path / ".toy-0123456789abcdef.tmp-otherhost-1-q"
        legacy_old = tmp_path / ".toy-0123456789abcdef.ab12cd_9"
        legacy_young = tmp_path / ".toy-fedcba9876543210.zz12cd_9"
        for folder in (live, own, foreign_young, legacy_old, legacy_young):
            folder.mkdir()
        old = time.time() - 2 * 3600
        os.utime(legacy_old, (old, old))
        removed = remove_orphaned_temporaries(tmp_path)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert removed == [legacy_old]
    assert live.exists() and own.exists() and foreign_young.exists() and legacy_young.exists()
    # Once its process is gone, the live one is an orphan too.
    assert remove_orphaned_temporaries(tmp_path) == [live]
