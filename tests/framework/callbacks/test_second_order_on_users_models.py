"""Issue 20, problem 1: Hessian probes on the models users have (SDPA attention, Transformers, BatchNorm), both HVP
routes, one clear error for an op without a second derivative, and a GPU check (``gpu`` marker)."""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.demos import Transformer
from torch import nn
from torch.autograd.function import once_differentiable

from framework.callbacks.hessian_probe import HessianProbe, hessian_report
from framework.callbacks.landscape.second_order_support import SecondOrderUnsupportedError
from framework.callbacks.loss_landscape_probe import LossLandscapeProbe, landscape_report
from tests.framework.callbacks.users_models import CnnWithBatchNorm, TinyDemoTransformer, TinyLlama

ROUTES = ("double_backward", "func")


def _trainer(tmp_path, callbacks):
    return pl.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      accelerator="cpu", default_root_dir=tmp_path, callbacks=callbacks)


def _nll(module, batch):
    inputs, target = batch
    return nn.functional.nll_loss(module(inputs, target), target.reshape(-1))


def _dense_hessian(module: nn.Module, loss_fn, batch) -> torch.Tensor:
    """Independent reference: the full Hessian by ``torch.autograd.functional.hessian`` (math SDPA, eval mode)."""
    names = [n for n, p in module.named_parameters() if p.requires_grad]
    params = [p.detach() for n, p in module.named_parameters() if p.requires_grad]
    sizes = [p.numel() for p in params]

    def loss(flat):
        pieces = {n: t.reshape(p.shape) for n, t, p in zip(names, torch.split(flat, sizes), params)}
        return torch.func.functional_call(module, pieces, (batch,)) if loss_fn is None else \
            loss_fn(_Swapped(module, pieces), batch)

    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]):
        return torch.autograd.functional.hessian(loss, torch.cat([p.reshape(-1) for p in params]))


class _Swapped:
    """``module`` called with swapped parameters (``functional_call``)."""

    def __init__(self, module, pieces):
        self.module, self.pieces = module, pieces

    def __call__(self, *args):
        return torch.func.functional_call(self.module, self.pieces, args)


def _tiny_transformer():
    torch.manual_seed(0)
    model = Transformer(vocab_size=4, ninp=2, nhead=1, nhid=2, nlayers=1, dropout=0.0).eval()  # P = 144
    generator = torch.Generator().manual_seed(1)
    batch = (torch.randint(0, 4, (2, 3), generator=generator), torch.randint(0, 4, (2, 3), generator=generator))
    return model, batch


@pytest.mark.parametrize("route", ROUTES)
def test_nn_transformer_top_eigenvalue_matches_the_dense_hessian(route):
    # Fails on the old code: "derivative for aten::_scaled_dot_product_flash_attention_for_cpu_backward is not
    # implemented" (double backward) / "Trying to use forward AD with _scaled_dot_product_flash_attention_for_cpu".
    model, batch = _tiny_transformer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nested-tensor notice of nn.Transformer with one head
        report = hessian_report(model, [batch], loss_fn=_nll, top_k=1, eigen_method="lanczos", max_iter=40,
                                trace_samples=0, density_steps=0, hvp_method=route)
    dense = _dense_hessian(model, _nll, batch).double()
    exact = torch.linalg.eigvalsh(dense)
    top = exact[exact.abs().argmax()]
    assert report.hvp_method == route
    assert report.top_eigenvalue == pytest.approx(float(top), rel=2e-3)


def test_hessian_probe_runs_on_the_demo_transformer_in_a_trainer(tmp_path):
    # The issue's reproduction: lightning.pytorch.demos' LightningTransformer + HessianProbe + a plain Trainer.
    probe = HessianProbe(top_k=1, max_iter=5, trace_samples=2, density_steps=3, density_bins=50, log_figures=False)
    landscape = LossLandscapeProbe(dims=1, resolution=3, directions="hessian", hessian_max_iter=3, log_figures=False)
    torch.manual_seed(0)
    _trainer(tmp_path, [probe, landscape]).fit(TinyDemoTransformer())
    assert torch.isfinite(probe.reports[-1].eigenpairs.values).all()
    assert len(landscape.reports[-1].eigenvalues) == 1


class _GPT2Module(pl.LightningModule):
    def __init__(self):
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel

        self.model = GPT2LMHeadModel(GPT2Config(vocab_size=32, n_embd=16, n_layer=2, n_head=2, n_positions=16,
                                                bos_token_id=0, eos_token_id=1))

    def training_step(self, batch, batch_idx):
        return self.model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss


@pytest.mark.parametrize("factory", [TinyLlama, _GPT2Module], ids=["llama", "gpt2"])
def test_transformers_models_give_the_same_hessian_on_both_routes(factory):
    torch.manual_seed(0)
    module = factory()
    batch = {"input_ids": torch.randint(0, 32, (2, 6), generator=torch.Generator().manual_seed(0))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reports = {route: hessian_report(module, [batch], top_k=1, max_iter=8, tol=1e-9, trace_samples=2,
                                         density_steps=0, hvp_method=route, seed=3) for route in ROUTES}
    first, second = (reports[r] for r in ROUTES)
    # Same seed, same start vector: the power iterates agree step by step when both routes compute the same H·v.
    assert first.top_eigenvalue == pytest.approx(second.top_eigenvalue, rel=1e-4)
    # Same Rademacher probes on the same Hessian: the two routes' traces agree to rounding.
    assert first.trace.mean == pytest.approx(second.trace.mean, rel=1e-4, abs=1e-6)


def test_batchnorm_cnn_is_probed_with_running_statistics_and_restored(tmp_path):
    torch.manual_seed(0)
    model = CnnWithBatchNorm()
    _trainer(tmp_path, []).fit(model)  # running statistics away from their initial values
    model.train()
    batch = next(iter(model.train_dataloader()))
    stats = [(b.clone()) for b in model.buffers()]
    with torch.no_grad():
        model.eval()
        eval_loss = float(model.training_step(batch, 0))
        model.train()
        train_loss = float(model.training_step(batch, 0))
        for b, saved in zip(model.buffers(), stats):  # the train-mode forward above moved the statistics
            b.copy_(saved)
    assert abs(eval_loss - train_loss) > 1e-4  # the two modes differ on this batch
    reports = {route: hessian_report(model, [batch], top_k=1, max_iter=6, tol=1e-9, trace_samples=0,
                                     density_steps=0, hvp_method=route) for route in ROUTES}
    assert reports["func"].loss == pytest.approx(eval_loss, rel=1e-6)
    assert reports["double_backward"].top_eigenvalue == pytest.approx(reports["func"].top_eigenvalue, rel=1e-4)
    assert all(m.training for m in model.modules())  # train mode restored
    assert all(torch.equal(b, saved) for b, saved in zip(model.buffers(), stats))  # statistics untouched


class _Prototypes(nn.Module):
    """A user model whose loss uses torch.cdist (its backward has no derivative, it has no forward-mode rule)."""

    def __init__(self):
        super().__init__()
        self.prototypes = nn.Parameter(torch.randn(3, 2, generator=torch.Generator().manual_seed(0)))

    def forward(self, x):
        return torch.cdist(x, self.prototypes)


def _cdist_loss(module, batch):
    return module(batch).pow(2).sum()


@pytest.mark.parametrize(("route", "op"), [("double_backward", "_cdist_backward"), ("func", "_cdist_forward"),
                                           ("auto", "_cdist_backward")])
def test_op_without_second_derivative_gives_one_clear_error(route, op):
    batch = torch.randn(4, 2, generator=torch.Generator().manual_seed(1))
    with pytest.raises(SecondOrderUnsupportedError, match=f"{op}.*remedies") as caught:
        hessian_report(_Prototypes(), [batch], loss_fn=_cdist_loss, top_k=1, max_iter=3, trace_samples=0,
                       density_steps=0, hvp_method=route)
    assert caught.value.op == op
    with pytest.raises(SecondOrderUnsupportedError, match="_cdist"):
        landscape_report(_Prototypes(), [batch], loss_fn=_cdist_loss, dims=1, resolution=3, directions="hessian",
                         hessian_max_iter=2, hvp_method=route)
    # The random-direction landscape needs no second derivative: it works on the same model.
    report = landscape_report(_Prototypes(), [batch], loss_fn=_cdist_loss, dims=1, resolution=3)
    assert report.grid.losses.shape == (3,)


class _SquareOnce(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad


class _OnceModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))

    def forward(self, x):
        return (_SquareOnce.apply(self.weight) * x).sum()


def test_once_differentiable_function_is_named_instead_of_a_silent_zero_hessian():
    # Without the check, double backward reads this Function's second derivative as 0 (its backward has no graph).
    with pytest.raises(SecondOrderUnsupportedError, match="_SquareOnce.*once_differentiable"):
        hessian_report(_OnceModel(), [torch.ones(3)], loss_fn=lambda m, b: m(b), top_k=1, max_iter=3,
                       trace_samples=0, density_steps=0, hvp_method="double_backward")


def test_auto_falls_back_to_the_route_that_works():
    # grid_sample has a double backward but no forward-mode rule: "auto" must not fail on the func route.
    class Warp(nn.Module):
        def __init__(self):
            super().__init__()
            self.grid = nn.Parameter(torch.rand(1, 2, 2, 2, generator=torch.Generator().manual_seed(0)) - 0.5)

        def forward(self, image):
            return nn.functional.grid_sample(image, self.grid.tanh(), align_corners=False).pow(2).sum()

    image = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    report = hessian_report(Warp(), [image], loss_fn=lambda m, b: m(b), top_k=1, max_iter=20, trace_samples=0,
                            density_steps=0, hvp_method="auto")
    assert report.hvp_method == "double_backward" and "grid_sampler" in report.hvp_timing.func_error


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("route", ROUTES)
def test_gpu_transformers_and_batchnorm_models(route):
    # On CUDA, SDPA would pick flash / memory-efficient kernels, which have no double backward.
    device = torch.device("cuda")
    torch.manual_seed(0)
    llama = TinyLlama().to(device)
    batch = {"input_ids": torch.randint(0, 32, (2, 8), device=device)}
    options = dict(top_k=1, eigen_method="lanczos", max_iter=30, trace_samples=0, density_steps=0, hvp_method=route)
    gpu = hessian_report(llama, [batch], **options)
    cpu = hessian_report(llama.cpu(), [{"input_ids": batch["input_ids"].cpu()}], **options)
    assert gpu.top_eigenvalue == pytest.approx(cpu.top_eigenvalue, rel=1e-2)
    cnn = CnnWithBatchNorm().to(device)
    images = (torch.randn(8, 1, 8, 8, device=device), torch.randint(0, 3, (8,), device=device))
    statistics = [b.clone() for b in cnn.buffers()]
    report = hessian_report(cnn, [images], top_k=1, max_iter=20, trace_samples=2, density_steps=3, density_bins=50,
                            hvp_method=route)
    assert torch.isfinite(report.eigenpairs.values).all()
    assert all(torch.equal(b, s) for b, s in zip(cnn.buffers(), statistics))
