"""The data the flow-matching throughput call carries must be the data its CLI child looks up: the same
generation arguments (so the same cache fingerprint) as the DataModule the CLI builds from the config + BASE."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from flow_matching_throughput_data import throughput_data_args  # noqa: E402
from training_throughput import BASE, CONFIGS  # noqa: E402

from framework.cli import main  # noqa: E402
from framework.datamodules.pde_trajectories import PDETrajectories  # noqa: E402

FINGERPRINTED = ("system", "num_trajectories", "num_frames", "seed", "system_options")


def test_generated_data_matches_the_cli_childs_datamodule(monkeypatch):
    monkeypatch.setattr(sys, "argv", sys.argv[:1])
    # the model part is irrelevant to the data: end-to-end mode needs no autoencoder checkpoint
    cli = main(["--config", str(ROOT / CONFIGS["flow_matching"]), *BASE["flow_matching"],
                "--model.init_args.mode=end_to_end", "--model.init_args.autoencoder_checkpoint=null",
                "--trainer.logger=false"], run=False)
    ours = PDETrajectories(**throughput_data_args())
    for name in FINGERPRINTED:
        assert getattr(cli.datamodule, name) == getattr(ours, name), name
    assert ours.num_trajectories == 24 and ours.val_trajectories == ours.test_trajectories == 2
