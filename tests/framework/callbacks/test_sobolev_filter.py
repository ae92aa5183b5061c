"""SobolevFilter: identity at β = 0, finite-difference gradients, the experimental gradient-only mode, attaching to and
removing from a user-written model, β in its own optimizer group, and β across checkpoint / resume."""

from __future__ import annotations

import copy

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from framework.callbacks.sobolev_filter import SobolevFilter
from framework.models.components.ssm import S4D, SobolevSpectralFilter, frequency_product, sobolev_weights


class UserLongConv(nn.Module):
    """A user's own long-convolution layer following the documented protocol: ``u [B, H, L] -> [B, H, L]``."""

    def __init__(self, h: int, length: int) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.randn(h, length) / length)
        self.skip = nn.Parameter(torch.ones(h))
        self.spectral_filter = None
        self.filter_features = h

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        n = 2 * u.shape[-1]
        y_f = frequency_product(torch.fft.rfft(u, n=n), torch.fft.rfft(self.k, n=n), n, self.spectral_filter)
        return torch.fft.irfft(y_f, n=n)[..., : u.shape[-1]] + self.skip[:, None] * u


class UserModel(pl.LightningModule):
    """A plain LightningModule (not a project class) with the user's layer inside."""

    def __init__(self, h: int = 3, length: int = 16) -> None:
        super().__init__()
        self.inp = nn.Linear(1, h)
        self.conv = UserLongConv(h, length)
        self.out = nn.Linear(h, 1)

    def forward(self, x):  # [B, L] -> [B, L]
        z = self.inp(x[..., None]).transpose(1, 2)
        return self.out(torch.tanh(self.conv(z)).transpose(1, 2))[..., 0]

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-2, weight_decay=0.1)


def _loader(length=16, n=16):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, length, generator=g)
    y = torch.roll(x, 1, dims=1) - 0.5 * x
    return DataLoader(TensorDataset(x, y), batch_size=8)


def _trainer(tmp_path, callbacks, max_steps=3):
    return pl.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=callbacks, default_root_dir=tmp_path,
                      enable_checkpointing=False)


def test_beta_zero_is_the_identity_on_s4d():
    torch.manual_seed(0)
    layer = S4D(d_model=4, state_size=3, bidirectional=True)
    u = torch.randn(2, 24, 4)
    plain = layer(u)
    SobolevFilter(beta=0.0, learnable=True).attach(nn.Sequential(layer))
    assert isinstance(layer.spectral_filter, SobolevSpectralFilter)
    torch.testing.assert_close(layer(u), plain, atol=1e-6, rtol=0)


def test_forward_filter_multiplies_kernel_spectrum_but_not_the_d_skip():
    torch.manual_seed(1)
    layer = S4D(d_model=2, state_size=3)
    u = torch.randn(1, 20, 2)
    with torch.no_grad():
        layer.kernel.c.zero_()  # kernel = 0: only D u remains, which must be untouched by any beta
    plain = layer(u)
    layer.spectral_filter = SobolevSpectralFilter(features=2, beta=3.0)
    torch.testing.assert_close(layer(u), plain)


def test_weights_formula_and_normalisations():
    beta = torch.tensor([1.0, -0.5])
    w = sobolev_weights(beta, n_fft=8)
    k = torch.arange(5.0)
    torch.testing.assert_close(w, torch.stack([(1 + k / 8) ** 1.0, (1 + k / 8) ** -0.5]))
    w_omega = sobolev_weights(beta[:1], n_fft=8, frequency_scale=1 / (2 * torch.pi))
    torch.testing.assert_close(w_omega[0], 1 + 2 * torch.pi * k / 8)  # (1 + ω)^1, ω in rad / sample


def test_gradients_match_finite_differences_in_float64():
    torch.manual_seed(2)
    layer = S4D(d_model=2, state_size=2, dt_min=0.05, dt_max=0.2).double()
    layer.spectral_filter = SobolevSpectralFilter(features=2, beta=0.7, learnable=True).double()
    u = torch.randn(2, 12, 2, dtype=torch.float64)
    params = [layer.spectral_filter.beta, layer.kernel.c, layer.kernel.log_dt, layer.kernel.a_imag]

    def f(*values):
        saved = [p.data for p in params]
        for p, v in zip(params, values):
            p.data = v
        try:
            return (layer(u) ** 2).sum()
        finally:
            for p, v in zip(params, saved):
                p.data = v

    analytic = torch.autograd.grad((layer(u) ** 2).sum(), params)
    eps = 1e-6
    for index, (p, g) in enumerate(zip(params, analytic)):
        flat = p.detach().clone().flatten()
        for j in range(min(flat.numel(), 4)):
            plus, minus = flat.clone(), flat.clone()
            plus[j] += eps
            minus[j] -= eps
            vals = [q.detach() for q in params]
            vals[index] = plus.view_as(p)
            up = f(*vals)
            vals[index] = minus.view_as(p)
            down = f(*vals)
            numeric = (up - down) / (2 * eps)
            assert abs(numeric - g.flatten()[j]) <= 1e-5 * max(1.0, abs(numeric)), (index, j, numeric, g.flatten()[j])


def test_gradient_only_mode_keeps_forward_and_reweights_kernel_gradient():
    torch.manual_seed(3)
    layer = UserLongConv(2, 10).double()
    u = torch.randn(3, 2, 10, dtype=torch.float64)
    target = torch.randn(3, 2, 10, dtype=torch.float64)
    plain_out = layer(u)
    layer.spectral_filter = SobolevSpectralFilter(features=2, beta=1.5, mode="gradient",
                                                  frequency_scale=0.1).double()
    out = layer(u)
    torch.testing.assert_close(out, plain_out)  # forward unchanged
    grad_k = torch.autograd.grad(((out - target) ** 2).sum(), layer.k)[0]
    # Chain rule by hand: G = dL/dk_f of the plain model; expected dL/dk = (drfft/dk)^T (w ⊙ G).
    n = 20
    k_f = torch.fft.rfft(layer.k.detach(), n=n).requires_grad_(True)
    y = torch.fft.irfft(torch.fft.rfft(u, n=n) * k_f, n=n)[..., :10] + layer.skip[:, None].detach() * u
    big_g = torch.autograd.grad(((y - target) ** 2).sum(), k_f)[0]
    w = sobolev_weights(torch.full((2,), 1.5, dtype=torch.float64), n, 0.1)
    k = layer.k.detach().clone().requires_grad_(True)
    expected = torch.autograd.grad(torch.fft.rfft(k, n=n), k, grad_outputs=w * big_g)[0]
    torch.testing.assert_close(grad_k, expected)
    plain_grad = torch.autograd.grad(((plain_out - target) ** 2).sum(), layer.k)[0]
    assert not torch.allclose(grad_k, plain_grad)


def test_callback_on_user_model_trains_beta_in_own_group_and_detaches_cleanly(tmp_path):
    torch.manual_seed(4)
    model = UserModel()
    initial = copy.deepcopy(model.state_dict())
    callback = SobolevFilter(beta=0.0, learnable=True, lr=0.05)
    trainer = _trainer(tmp_path, [callback], max_steps=4)
    trainer.fit(model, _loader())
    beta = model.conv.spectral_filter.beta
    assert beta.requires_grad and not torch.allclose(beta, torch.zeros(3))  # it learned
    groups = [g for g in trainer.optimizers[0].param_groups if g.get("sobolev_beta")]
    assert len(groups) == 1 and groups[0]["lr"] == 0.05 and groups[0]["weight_decay"] == 0.0
    assert groups[0]["params"][0] is beta
    others = [p for g in trainer.optimizers[0].param_groups if not g.get("sobolev_beta") for p in g["params"]]
    assert all(p is not beta for p in others)
    assert set(model.state_dict()) == set(initial) | {"conv.spectral_filter.beta"}

    x = torch.randn(4, 16)
    filtered = model(x)
    assert SobolevFilter.detach(model) == 1
    assert model.conv.spectral_filter is None and set(model.state_dict()) == set(initial)
    plain = UserModel()
    plain.load_state_dict(model.state_dict())
    torch.testing.assert_close(model(x), plain(x))  # exactly the plain model with the trained weights
    assert not torch.allclose(filtered, model(x))


def test_no_filterable_layer_names_the_protocol(tmp_path):
    class NoSSM(UserModel):
        def __init__(self):
            super().__init__()
            self.conv = nn.Identity()

    with pytest.raises(ValueError, match="FilterableConvolution"):
        _trainer(tmp_path, [SobolevFilter(beta=1.0)]).fit(NoSSM(), _loader())


def test_bad_arguments():
    with pytest.raises(ValueError, match="learnable=True needs mode='forward'"):
        SobolevFilter(learnable=True, mode="gradient")
    with pytest.raises(ValueError, match="mode must be one of"):
        SobolevFilter(mode="backward")
    with pytest.raises(ValueError, match="frequency_scale"):
        SobolevFilter(frequency_scale=0.0)
    with pytest.raises(ValueError, match="beta must be a finite"):
        SobolevFilter(beta=float("nan"))


def test_beta_survives_checkpoint_and_resume(tmp_path):
    torch.manual_seed(5)
    model = UserModel()
    trainer = _trainer(tmp_path, [SobolevFilter(learnable=True, lr=0.05)], max_steps=3)
    trainer.fit(model, _loader())
    path = tmp_path / "sobolev.ckpt"
    trainer.save_checkpoint(path)
    saved_beta = model.conv.spectral_filter.beta.detach().clone()
    saved_state = trainer.optimizers[0].state[model.conv.spectral_filter.beta]["exp_avg"].clone()
    checkpoint = torch.load(path, weights_only=False)
    callback_state = next(v for k, v in checkpoint["callbacks"].items() if k.startswith("SobolevFilter"))
    torch.testing.assert_close(callback_state["beta"]["conv"], saved_beta)

    torch.manual_seed(99)
    resumed = UserModel()
    trainer2 = _trainer(tmp_path, [SobolevFilter(learnable=True, lr=0.05)], max_steps=3)
    trainer2.fit(resumed, _loader(), ckpt_path=path)  # restores and stops: already at max_steps
    torch.testing.assert_close(resumed.conv.spectral_filter.beta.detach(), saved_beta)
    beta_param = resumed.conv.spectral_filter.beta
    torch.testing.assert_close(trainer2.optimizers[0].state[beta_param]["exp_avg"], saved_state)


def test_learned_beta_group_follows_the_models_lr_schedule(tmp_path):
    class Scheduled(UserModel):
        def configure_optimizers(self):
            optimizer = torch.optim.AdamW(self.parameters(), lr=1e-2)
            schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 ** step)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    torch.manual_seed(6)
    model = Scheduled()
    trainer = _trainer(tmp_path, [SobolevFilter(learnable=True, lr=0.08)], max_steps=3)
    trainer.fit(model, _loader())
    beta_group = next(g for g in trainer.optimizers[0].param_groups if g.get("sobolev_beta"))
    assert beta_group["lr"] == pytest.approx(0.08 * 0.5 ** 3)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-2 * 0.5 ** 3)
