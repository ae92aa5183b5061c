"""PDETrajectories: trajectory-level splits, windows, standardisation, caching, PDEBench input and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from framework.datamodules.pde_trajectories import SYSTEMS, PDETrajectories


@pytest.fixture(autouse=True)
def _one_thread():
    # small tensors: one intra-op thread is much faster than two on a shared 2-core machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _dm(**kw):
    args = dict(system="linear_ar1", num_trajectories=8, num_frames=12, val_trajectories=2, test_trajectories=2,
                window_length=4, context_length=2, horizon=3, eval_starts=[0, 5], batch_size=4)
    args.update(kw)
    dm = PDETrajectories(**args)
    dm.setup()
    return dm


def test_windows_and_splits_by_trajectory():
    dm = _dm()
    frames = dm._frames
    assert frames.shape == (8, 12, 1, 4, 4)
    train, val, test = dm.datasets["train"], dm.datasets["val"], dm.datasets["test"]
    assert len(train) == 4 * (12 - 4 + 1)
    assert {i for i, _ in train.starts} == set(range(4))
    assert {i for i, _ in val.starts} == {4, 5} and {i for i, _ in test.starts} == {6, 7}
    assert len(val) == 4 and val[1].shape == (5, 1, 4, 4)
    torch.testing.assert_close(val[1], frames[4, 5:10])
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (4, 4, 1, 4, 4)
    assert dm.frame_shape == (1, 4, 4)


def test_standardisation_uses_training_trajectories_only():
    dm = _dm(system="diffusion_reaction", system_options={"resolution": 8, "t_final": 0.5}, num_frames=12)
    train = dm._frames[:4]
    assert torch.allclose(train.mean(dim=(0, 1, 3, 4)), torch.zeros(2), atol=1e-5)
    assert torch.allclose(train.std(dim=(0, 1, 3, 4)), torch.ones(2), atol=1e-4)
    raw = dm.load_frames()
    torch.testing.assert_close(dm.denormalize(dm._frames), torch.from_numpy(raw), atol=1e-4, rtol=1e-4)


def test_generation_is_cached_and_seeded():
    a = _dm(seed=3).load_frames()
    b = _dm(seed=3).load_frames()
    c = _dm(seed=4).load_frames()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("system,options,shape", [
    ("navier_stokes", {"resolution": 8, "dt": 0.05, "frame_interval": 0.1}, (1, 8, 8)),
    ("shallow_water", {"resolution": 8}, (1, 8, 8)),
    ("kuramoto_sivashinsky", {"resolution": 16, "burn_in": 1.0}, (1, 1, 16)),
])
def test_every_generator_through_the_datamodule(system, options, shape):
    dm = _dm(system=system, system_options=options, num_trajectories=5, val_trajectories=1, test_trajectories=1,
             num_frames=6, eval_starts=[0])
    assert dm.frame_shape == shape


def test_pdebench_file(tmp_path):
    import h5py

    path = tmp_path / "2D_rdb_NA_NA.h5"
    with h5py.File(path, "w") as f:
        for i in range(5):
            f.create_dataset(f"{i:04d}/data", data=np.random.default_rng(i).random((10, 8, 8, 1)).astype(np.float32))
    dm = PDETrajectories(system="pdebench", pdebench_path=str(path), num_trajectories=5, val_trajectories=1,
                         test_trajectories=1, window_length=4, context_length=2, horizon=3, batch_size=2)
    dm.setup()
    assert dm.frame_shape == (1, 8, 8) and len(dm.datasets["test"]) == 1
    short = PDETrajectories(system="pdebench", pdebench_path=str(path), num_trajectories=5, val_trajectories=1,
                            test_trajectories=1, window_length=4, context_length=5, horizon=8)
    with pytest.raises(ValueError, match="shorter than the evaluation window"):
        short.setup()


def test_bad_input():
    with pytest.raises(ValueError, match="system must be one of"):
        PDETrajectories(system="lorenz")
    with pytest.raises(ValueError, match="shorter than window_length=8"):
        PDETrajectories(system="linear_ar1", num_frames=6, window_length=8, context_length=2, horizon=2)
    with pytest.raises(ValueError, match="shorter than the evaluation window: eval start 0 \\+ context_length 4 "
                                          "\\+ horizon 10 = 14 frames"):
        PDETrajectories(system="linear_ar1", num_frames=12, window_length=4, context_length=4, horizon=10)
    with pytest.raises(ValueError, match="context_length must be an integer >= 2"):
        PDETrajectories(system="linear_ar1", context_length=1)
    with pytest.raises(ValueError, match="leaves no training trajectory"):
        PDETrajectories(system="linear_ar1", num_trajectories=4, val_trajectories=2, test_trajectories=2)
    with pytest.raises(ValueError, match="needs pdebench_path"):
        PDETrajectories(system="pdebench")
    with pytest.raises(ValueError, match="bad system_options for 'linear_ar1'"):
        _dm(system_options={"viscosity": 1.0})
    assert "pdebench" in SYSTEMS
