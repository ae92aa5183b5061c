"""2-process CPU DDP (gloo) through ``python -m framework``: every method family's smallest config gives the same
evaluation metrics as one process on the same data, and every evaluation sample is counted exactly once.

The model is evaluated at its seeded initialisation (``test`` / ``validate`` without training), so both runs hold the
same weights and any difference comes from how data and metric states are split and synced.
"""

from __future__ import annotations

import math

import pytest

from tests.helpers.ddp_cli import run_cli_processes

pytestmark = [pytest.mark.ddp, pytest.mark.slow]

# (family, config, subcommand, extra overrides, metric keys that must agree: None = every "<subcommand>/" key; [] = none,
# for evaluations that draw random numbers (flow matching samples t and noise, so ranks draw different streams) - there
# only the exact sample count and the set of reported keys are compared)
FAMILIES = [
    ("foundation", "tests/configs/toy_regression.yaml", "test", ["--data.init_args.n=130"], ["test/mse"]),
    ("polarization", "configs/polarization/digits_mlp_monitor.yaml", "test", [], None),
    ("ssm", "configs/ssm/waves_alpha1_beta0.yaml", "test", [], None),
    ("landscape", "configs/landscape/pinn_convection.yaml", "test", [], None),
    ("spade", "configs/spade/retail_spade.yaml", "test", [], None),
    ("tinymem", "configs/tinymem/train_mult_backdoor_2layer.yaml", "test", [], None),
    ("cgm_gm", "configs/cgm_gm/sfba_synthetic.yaml", "test", [], ["test/loss"]),
    ("flow_matching", "configs/flow_matching/navier_stokes_bridge.yaml", "test",
     ["--data.init_args.num_trajectories=6", "--data.init_args.test_trajectories=2"], []),
    ("squeezed_attention", "configs/squeezed_attention/tiny_llama_qa.yaml", "test", ["--data.init_args.batch_size=2",
                                                                               "--data.init_args.facts_per_context=3"],
     None),
]


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6) or (math.isnan(a) and math.isnan(b))


@pytest.mark.parametrize("family, config, subcommand, extra, keys", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_two_processes_report_the_single_process_metrics(repo_root, tmp_path, family, config, subcommand, extra, keys):
    single = run_cli_processes(repo_root, tmp_path, repo_root / config, subcommand, 1, extra)[0]
    ranks = run_cli_processes(repo_root, tmp_path, repo_root / config, subcommand, 2, extra)
    assert all(r["world_size"] == 2 for r in ranks)
    # Each evaluation sample on exactly one rank (no padding with repeated samples).
    assert sum(r["samples"] for r in ranks) == single["samples"] > 0
    reported = sorted(k for k in single["metrics"] if k.startswith(f"{subcommand}/"))
    assert reported, f"{family}: no {subcommand}/ metrics logged: {sorted(single['metrics'])}"
    for rank in ranks:
        assert sorted(k for k in rank["metrics"] if k.startswith(f"{subcommand}/")) == reported
    keys = reported if keys is None else keys
    for key in keys:
        for rank in ranks:
            assert _close(rank["metrics"][key], single["metrics"][key]), (
                f"{family}: {key} = {rank['metrics'][key]} on 2 processes vs {single['metrics'][key]} on 1")
