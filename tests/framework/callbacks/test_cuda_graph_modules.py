"""CUDAGraphModules: argument checks, the eager fallback (bit-identical training on CPU), and its capture bookkeeping
(one capture per input signature, buffers restored after the warm-up passes, eager beyond ``max_graphs``) checked
with a stand-in for ``torch.cuda.make_graphed_callables`` (this machine has no GPU; the real capture is exercised by
``benchmarks/training_throughput.py --variants graphed`` on one)."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from framework.callbacks import cuda_graph_modules
from framework.callbacks.cuda_graph_modules import CUDAGraphModules, _GraphedForward


class _Body(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 2))

    def forward(self, x, scale: float = 1.0):
        return self.net(x) * scale


class _Model(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.body = _Body()

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.body(x, scale=2.0), y)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-2)


def _loader():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 3, generator=g), torch.randn(64, 2, generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)


def _fit(callbacks):
    pl.seed_everything(0)
    model = _Model()
    trainer = pl.Trainer(max_steps=8, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks)
    trainer.fit(model, _loader())
    return model


@pytest.mark.parametrize("kwargs, match", [({"modules": []}, "modules"), ({"modules": [""]}, "modules"),
                                           ({"modules": ["body"], "max_graphs": 0}, "max_graphs"),
                                           ({"modules": ["body"], "warmup_iters": True}, "warmup_iters")])
def test_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CUDAGraphModules(**kwargs)


def test_names_missing_modules_hooks_and_several_devices():
    model = _Model()
    trainer = pl.Trainer(accelerator="cpu", logger=False)
    with pytest.raises(ValueError, match="no sub-module 'head'"):
        CUDAGraphModules(modules=["head"]).setup(trainer, model, "fit")
    handle = model.body.register_forward_hook(lambda *a: None)
    with pytest.raises(ValueError, match="hooks"):
        CUDAGraphModules(modules=["body"]).setup(trainer, model, "fit")
    handle.remove()
    ddp = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False)
    with pytest.raises(ValueError, match="world_size=2"):
        CUDAGraphModules(modules=["body"]).setup(ddp, model, "fit")


def test_cpu_training_falls_back_to_the_identical_eager_step_and_teardown_restores_forward():
    callback = CUDAGraphModules(modules=["body"])
    graphed, plain = _fit([callback]), _fit([])
    for (name, a), (_, b) in zip(graphed.state_dict().items(), plain.state_dict().items()):
        assert torch.equal(a, b), name
    assert callback.final_stats == {"body": {"graphs": 0, "replays": 0, "eager_calls": 8}}
    assert "forward" not in vars(graphed.body)  # the class's forward again


def test_capture_bookkeeping_with_a_stand_in_capture(monkeypatch):
    captures = []

    def fake_make_graphed_callables(module, sample, num_warmup_iters, allow_unused_input):
        captures.append(tuple(s.shape for s in sample))
        for _ in range(num_warmup_iters):  # what PyTorch does before capturing: eager passes on the sample
            torch.autograd.grad(module(*sample).sum(), list(module.parameters()), allow_unused=True)
        return module

    monkeypatch.setattr(cuda_graph_modules.torch.cuda, "make_graphed_callables", fake_make_graphed_callables)
    monkeypatch.setattr(_GraphedForward, "device_type", "cpu")
    torch.manual_seed(0)
    body = _Body()
    reference = _Body()
    reference.load_state_dict(body.state_dict())
    wrapper = _GraphedForward(body, max_graphs=2, warmup_iters=3)
    x = torch.randn(16, 3)
    torch.manual_seed(5)
    out = wrapper(x, scale=2.0)
    after_wrapped = torch.rand(1)
    torch.manual_seed(5)
    expected = reference(x, scale=2.0)
    after_eager = torch.rand(1)
    # The three warm-up passes were undone: one BatchNorm update (the real call) and the same dropout mask and RNG
    # stream afterwards as the eager call.
    torch.testing.assert_close(body.net[1].running_mean, reference.net[1].running_mean)
    assert int(body.net[1].num_batches_tracked) == 1
    torch.testing.assert_close(out, expected)
    assert torch.equal(after_wrapped, after_eager)
    wrapper(torch.randn(16, 3), scale=2.0)  # same signature: replayed, no new capture
    wrapper(torch.randn(8, 3), scale=2.0)  # new shape: second capture
    wrapper(torch.randn(4, 3), scale=2.0)  # beyond max_graphs: eager
    wrapper(torch.randn(16, 3), scale=torch.tensor(2.0))  # a tensor keyword: a new signature, beyond max_graphs
    with torch.no_grad():
        wrapper(x)  # no autograd (validation, generation): eager
    body.eval()
    wrapper(x)
    assert captures == [((16, 3),), ((8, 3),)]
    assert (len(wrapper.graphs), wrapper.replays, wrapper.eager_calls) == (2, 3, 4)


class _KeywordOnly(nn.Module):
    """Called like a Hugging Face model: tensors by keyword only, a plain flag, an optional mask."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3, 2)

    def forward(self, *, input_ids, labels, mask=None, reduce: bool = True):
        out = self.proj(input_ids) * (1.0 if mask is None else mask)
        loss = ((out - labels) ** 2)
        return {"loss": loss.mean() if reduce else loss, "logits": out}


def _fake_capture(captures):
    def fake_make_graphed_callables(module, sample, num_warmup_iters, allow_unused_input):
        captures.append(tuple(s.shape for s in sample))
        return module

    return fake_make_graphed_callables


def test_tensor_keyword_arguments_are_graph_inputs(monkeypatch):
    captures = []
    monkeypatch.setattr(cuda_graph_modules.torch.cuda, "make_graphed_callables", _fake_capture(captures))
    monkeypatch.setattr(_GraphedForward, "device_type", "cpu")
    torch.manual_seed(0)
    model = _KeywordOnly()
    wrapper = _GraphedForward(model, max_graphs=4, warmup_iters=1)
    x, y, m = torch.randn(4, 3), torch.randn(4, 2), torch.rand(4, 2)
    got = wrapper(labels=y, input_ids=x, mask=m)  # keyword order does not matter: names are sorted
    want = _KeywordOnly.forward(model, input_ids=x, labels=y, mask=m)
    torch.testing.assert_close(got["loss"], want["loss"])
    torch.testing.assert_close(got["logits"], want["logits"])
    wrapper(input_ids=x, mask=m, labels=y)  # same signature: replayed
    wrapper(input_ids=x, labels=y)  # no mask: another signature (other inputs)
    per_item = wrapper(input_ids=x, labels=y, reduce=False)  # a plain keyword: another signature, passed through
    assert per_item["loss"].shape == (4, 2)
    assert captures == [((4, 3), (4, 2), (4, 2)), ((4, 3), (4, 2)), ((4, 3), (4, 2))]
    assert (len(wrapper.graphs), wrapper.replays, wrapper.eager_calls) == (3, 4, 0)


def test_a_failed_capture_warns_once_and_that_signature_runs_eagerly(monkeypatch):
    calls = []

    def failing_capture(module, sample, num_warmup_iters, allow_unused_input):
        calls.append(1)
        module(*sample)  # a warm-up pass ran (BatchNorm statistics, dropout draws) before the failure
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore detail")

    monkeypatch.setattr(cuda_graph_modules.torch.cuda, "make_graphed_callables", failing_capture)
    monkeypatch.setattr(_GraphedForward, "device_type", "cpu")
    torch.manual_seed(0)
    body, reference = _Body(), _Body()
    reference.load_state_dict(body.state_dict())
    wrapper = _GraphedForward(body, max_graphs=2, warmup_iters=1)
    x = torch.randn(16, 3)
    torch.manual_seed(5)
    message = "capturing _Body failed .*operation not permitted when stream is capturing\\)"
    with pytest.warns(UserWarning, match=message):
        out = wrapper(x, scale=2.0)
    torch.manual_seed(5)
    expected = reference(x, scale=2.0)
    torch.testing.assert_close(out, expected)  # the eager call saw the state it would have seen without the attempt
    assert int(body.net[1].num_batches_tracked) == 1
    wrapper(x, scale=2.0)  # not captured again
    assert len(calls) == 1 and wrapper.eager_calls == 2 and wrapper.replays == 0
