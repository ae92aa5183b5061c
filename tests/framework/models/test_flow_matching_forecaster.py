"""FlowMatchingForecaster and FrameAutoencoder: training signal, rollouts, modes, an exact-field rollout, bad input,
and the CLI."""

from __future__ import annotations

import functools

import pytest
import torch

from framework.models.components.flow_matching import PATHS
from framework.models.flow_matching_forecaster import FlowMatchingForecaster
from framework.models.frame_autoencoder import FrameAutoencoder


@pytest.fixture(autouse=True)
def _one_thread():
    # small tensors: one intra-op thread is much faster than two on a shared 2-core machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(**kw):
    args = dict(input_shape=[1, 4, 4], context_length=2, horizon=3, mode="pixel", d_model=16, num_heads=2,
                sampling_intervals=2)
    args.update(kw)
    torch.manual_seed(0)
    return FlowMatchingForecaster(**args)


def _windows(b=4, t=6, shape=(1, 4, 4), seed=0):
    return torch.randn(b, t, *shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("path", PATHS)
def test_loss_backpropagates_for_every_path(path):
    model = _model(path=path)
    loss, recon = model.flow_matching_loss(_windows())
    assert recon is None and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.vector_field.parameters() if p.requires_grad)


def test_rollout_shapes_and_reproducibility():
    model = _model(path="lipman_ot").eval()
    context = _windows(b=2, t=2)
    a = model.rollout(context, ensemble_size=3, generator=torch.Generator().manual_seed(1))
    b = model.rollout(context, ensemble_size=3, generator=torch.Generator().manual_seed(1))
    assert a.shape == (2, 3, 3, 1, 4, 4)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a[:, 0], a[:, 1])  # noise source: members differ


class _ExactAR1Field(torch.nn.Module):
    """Outputs the bridge target for the deterministic map z_{k+1} = 0.5 z_k at the path mean: z_{k+1} − z_k."""

    def forward(self, x_t, t, z_ref, z_cond, distance):
        return -0.5 * z_ref


def test_rollout_with_the_exact_field_reaches_the_next_state():
    model = _model(path="bridge", horizon=4, solver="euler", sampling_intervals=1).eval()
    model.vector_field = _ExactAR1Field()
    context = _windows(b=2, t=2)
    out = model.rollout(context, ensemble_size=1)[:, 0]
    expected = torch.stack([context[:, -1] * 0.5 ** (k + 1) for k in range(4)], dim=1)
    torch.testing.assert_close(out, expected)


def test_state_source_without_noise_gives_identical_members_except_conditioning():
    model = _model(path="bridge", sigma_sam=0.0).eval()
    model.vector_field = _ExactAR1Field()  # ignores the conditioning frame, so members must coincide
    out = model.rollout(_windows(b=1, t=3), ensemble_size=4)
    assert torch.allclose(out[0, 0], out[0, 3])
    noisy = model.rollout(_windows(b=1, t=3), ensemble_size=4, sigma_sam=0.1)
    assert not torch.allclose(noisy[0, 0], noisy[0, 3])


def test_training_reduces_the_loss_on_ar1():
    from framework.datamodules.pde.linear_ar1 import simulate_linear_ar1

    data = torch.from_numpy(simulate_linear_ar1(num_trajectories=16, num_frames=6, seed=0))
    model = _model(path="bridge", path_options={"sigma": 0.1, "sigma_min": 0.01})
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    first = float(model.flow_matching_loss(data)[0])
    for _ in range(30):
        loss, _ = model.flow_matching_loss(data)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.manual_seed(0)
    assert float(model.flow_matching_loss(data)[0]) < 0.5 * first


def _autoencoder():
    torch.manual_seed(0)
    return FrameAutoencoder(in_channels=1, latent_channels=2, base_channels=8, channel_mults=[1, 2])


def test_latent_mode_is_frozen_and_end_to_end_trains_the_autoencoder(tmp_path):
    ae = _autoencoder()
    frames = _windows(b=2, t=5, shape=(1, 8, 8))
    latent = _model(input_shape=[1, 8, 8], mode="latent", autoencoder=ae)
    assert latent.state_shape == (2, 4, 4)
    loss, recon = latent.flow_matching_loss(frames)
    loss.backward()
    assert recon is None and all(p.grad is None for p in latent.autoencoder.parameters())
    assert latent.rollout(frames[:, :2], ensemble_size=2).shape == (2, 2, 3, 1, 8, 8)

    e2e = _model(input_shape=[1, 8, 8], mode="end_to_end", autoencoder=ae)
    loss, recon = e2e.flow_matching_loss(frames)
    (loss + recon).backward()
    assert all(p.grad is not None for p in e2e.e2e_network.parameters())

    # a checkpoint round trip of the autoencoder
    import lightning.pytorch as pl

    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    ae.requires_grad_(True)  # the latent forecaster froze it in place
    ae.optimizer_factory = functools.partial(torch.optim.Adam, lr=1e-3)
    trainer.fit(ae, train_dataloaders=torch.utils.data.DataLoader(frames, batch_size=2))
    ckpt = tmp_path / "ae.ckpt"
    trainer.save_checkpoint(ckpt)
    loaded = _model(input_shape=[1, 8, 8], mode="latent", autoencoder_checkpoint=str(ckpt))
    x = frames[:, 0]
    torch.testing.assert_close(loaded.encode(x), ae.encode(x))


def test_autoencoder_latent_statistics():
    ae = _autoencoder()
    frames = torch.randn(16, 1, 8, 8)
    ae.fit_latent_statistics(frames)
    z = ae.encode(frames)
    assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(2), atol=1e-5)
    assert torch.allclose(z.std(dim=(0, 2, 3)), torch.ones(2), atol=1e-3)
    torch.testing.assert_close(ae.decode(z), ae(frames), atol=1e-5, rtol=1e-5)


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"unknown probability path 'flow'; choose one of \['bridge'"):
        _model(path="flow")
    with pytest.raises(ValueError, match="sigma must be a positive number, got 0.0"):
        _model(path="bridge", path_options={"sigma": 0.0})
    with pytest.raises(ValueError, match="sampling_intervals must be an integer >= 1, got 0"):
        _model(sampling_intervals=0)
    with pytest.raises(ValueError, match="intervals must be an integer >= 1, got 0"):
        _model().rollout(_windows(b=1, t=2), intervals=0)
    with pytest.raises(ValueError, match="mode='latent' needs autoencoder_checkpoint"):
        _model(mode="latent")
    with pytest.raises(FileNotFoundError, match="autoencoder_checkpoint must be an existing file"):
        _model(mode="latent", autoencoder_checkpoint=str(tmp_path / "none.ckpt"))
    with pytest.raises(ValueError, match="windows of 2 frames are shorter than the 3 needed"):
        _model().flow_matching_loss(_windows(t=2))
    with pytest.raises(ValueError, match="context_length must be an integer >= 2"):
        _model(context_length=1)
    with pytest.raises(ValueError, match="solver must be one of"):
        _model(solver="dopri5")
    with pytest.raises(ValueError, match="must be divisible by the autoencoder's downsampling"):
        _model(input_shape=[1, 7, 7], mode="latent", autoencoder=_autoencoder())


def test_cli_fit_and_test_pixel_config(run_cli, repo_root):
    config = repo_root / "configs/flow_matching/linear_ar1_bridge_pixel.yaml"
    small = ["--model.init_args.d_model=16", "--model.init_args.num_heads=2", "--model.init_args.ensemble_size=2",
             "--data.init_args.num_trajectories=6", "--data.init_args.val_trajectories=1",
             "--data.init_args.test_trajectories=1", "--data.init_args.num_frames=8",
             "--data.init_args.window_length=4", "--data.init_args.horizon=3", "--data.init_args.eval_starts=[0]",
             "--data.init_args.batch_size=4", "--trainer.max_steps=3", "--trainer.val_check_interval=3",
             "--trainer.logger=false", "--trainer.callbacks=[]", "--trainer.enable_progress_bar=false"]
    cli = run_cli("fit", "--config", str(config), *small)
    assert cli.trainer.state.finished
    assert cli.model.horizon == 3  # linked from the DataModule
    assert "val/rfne" in cli.trainer.callback_metrics and "val/crps" in cli.trainer.callback_metrics
