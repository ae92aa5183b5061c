"""Generate the data of `training_throughput.py --configs flow_matching` (24 / 2 / 2 Navier–Stokes trajectories of
configs/flow_matching/navier_stokes_bridge.yaml) into the dataset cache, so a GPU call can carry it instead of
simulating it inside its time limit. Set FRAMEWORK_CACHE_DIR to choose the cache folder."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from framework.datamodules.pde_trajectories import PDETrajectories  # noqa: E402
from training_throughput import BASE, CONFIGS  # noqa: E402


def throughput_data_args() -> dict:
    """The DataModule init args of the throughput child: the config's `data.init_args` with `BASE`'s overrides."""
    init_args = yaml.safe_load((REPO / CONFIGS["flow_matching"]).read_text())["data"]["init_args"]
    for override in BASE["flow_matching"]:  # "--data.init_args.NAME=VALUE"
        name, value = override.removeprefix("--data.init_args.").split("=", 1)
        init_args[name] = yaml.safe_load(value)
    return init_args


def main() -> None:
    start = time.perf_counter()
    data = PDETrajectories(**throughput_data_args())
    data.prepare_data()
    data.setup("fit")
    sizes = {name: len(ds) for name, ds in data.datasets.items()}
    print(f"flow-matching throughput data ready in {time.perf_counter() - start:.1f} s: {sizes} windows")


if __name__ == "__main__":
    main()
