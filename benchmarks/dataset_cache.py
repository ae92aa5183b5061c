"""Generated-data cache: time to generate-and-cache vs time to load from the cache, in the same run.

    python benchmarks/dataset_cache.py [--quick] [--out FILE.json]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import benchmark_parser, markdown_table, write_results  # noqa: E402
from framework.base.dataset_cache import load_or_generate  # noqa: E402


def _expensive_series(n_series: int, length: int, seed: int) -> dict:
    """A deliberately costly generator: AR(2) series simulated step by step (stands in for simulators)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n_series, length), np.float32)
    noise = rng.normal(size=(n_series, length)).astype(np.float32)
    for t in range(2, length):
        out[:, t] = 1.6 * out[:, t - 1] - 0.8 * out[:, t - 2] + noise[:, t]
    return {"series": out, "id": np.arange(n_series)}


def main() -> None:
    args = benchmark_parser(__doc__).parse_args()
    sizes = [(256, 2_000), (1_024, 2_000)] if args.quick else [(1_024, 4_000), (4_096, 4_000)]
    rows = []
    for n_series, length in sizes:
        with tempfile.TemporaryDirectory() as cache:
            start = time.perf_counter()
            load_or_generate("ar2", _expensive_series, cache_dir=cache, n_series=n_series, length=length, seed=0)
            cold = time.perf_counter() - start
            start = time.perf_counter()
            data = load_or_generate("ar2", _expensive_series, cache_dir=cache, n_series=n_series, length=length,
                                    seed=0)[:]
            warm = time.perf_counter() - start
            assert data["series"].shape == (n_series, length)
        rows.append({"series": n_series, "length": length, "generate+cache s": cold, "load s": warm,
                     "speedup": cold / warm})
    print(markdown_table(rows))
    write_results(args.out, name="dataset_cache", rows=rows)


if __name__ == "__main__":
    main()
