"""Train-time regularizers: spectral norms against torch.linalg, the penalty's gradient, loss-truncation quantiles,
example-tied dropout masks."""

from __future__ import annotations

import pytest
import torch

from framework.models.components.tinymem.gpt2 import build_tinymem_gpt2
from framework.models.components.tinymem.regularizers import (
    ExampleTiedDropout,
    LossTruncation,
    SpectralNormRegularizer,
    _weight_blocks,
)


@pytest.fixture
def tiny():
    return build_tinymem_gpt2(n_layers=2, n_embd=32, n_head=4, context_length=20, seed=0)


def test_blocks_are_per_head_and_cover_attention_and_mlp(tiny):
    blocks = dict(_weight_blocks(tiny))
    assert len(blocks) == 2 * (3 * 4 + 4 + 2)
    assert blocks["h0.attn.q0"].shape == (32, 8) and blocks["h1.attn.proj3"].shape == (8, 32)
    assert torch.equal(blocks["h0.attn.v2"], tiny.transformer.h[0].attn.c_attn.weight[:, 64 + 16:64 + 24])


def test_power_iteration_converges_to_the_spectral_norm(tiny):
    reg = SpectralNormRegularizer(strength=0.1, power_iterations=1)
    reg.attach(tiny)
    for _ in range(200):
        sigmas = reg.spectral_norms(tiny)
    for name, block in _weight_blocks(tiny):
        assert sigmas[name].item() == pytest.approx(torch.linalg.matrix_norm(block.detach(), ord=2).item(), rel=1e-3)


def test_penalty_value_and_gradient(tiny):
    reg = SpectralNormRegularizer(strength=0.2, power_iterations=50)
    reg.attach(tiny)
    loss, logs = reg.training_loss(tiny, torch.zeros(3, requires_grad=True))
    blocks = _weight_blocks(tiny)
    exact = sum(torch.linalg.matrix_norm(b.detach(), ord=2) for _, b in blocks)
    assert logs["spectral_penalty"].item() == pytest.approx(0.1 * exact.item(), rel=1e-3)
    loss.backward()
    # d sigma / d W = u v^T for the MLP c_fc (a whole-matrix block)
    w = tiny.transformer.h[0].mlp.c_fc.weight
    u_svd, s, vh = torch.linalg.svd(w.detach())
    expected = 0.1 * torch.outer(u_svd[:, 0], vh[0])
    assert torch.allclose(w.grad.abs(), expected.abs(), atol=1e-4)
    squared = SpectralNormRegularizer(strength=0.2, power_iterations=50, squared=True)
    squared.attach(tiny)
    _, logs2 = squared.training_loss(tiny, torch.zeros(3))
    exact_sq = sum(torch.linalg.matrix_norm(b.detach(), ord=2) ** 2 for _, b in blocks)
    assert logs2["spectral_penalty"].item() == pytest.approx(0.1 * exact_sq.item(), rel=1e-3)


def test_loss_truncation_drops_the_top_quantile():
    reg = LossTruncation(drop_fraction=0.1, window=1000, recompute_every=1000)
    g = torch.Generator().manual_seed(0)
    first = torch.rand(1000, generator=g)
    loss, logs = reg.training_loss(None, first)
    assert logs["dropped_fraction"].item() == 0.0  # nothing dropped before the buffer is full
    assert loss.item() == pytest.approx(first.mean().item())
    assert reg.threshold.item() == pytest.approx(torch.quantile(first.double(), 0.9).item())
    batch = torch.rand(5000, generator=g)
    keep = reg.keep_mask(batch)
    assert (1 - keep.float().mean()).item() == pytest.approx(0.1, abs=0.03)
    loss, _ = reg.training_loss(None, batch)
    assert loss.item() == pytest.approx((batch * keep).sum().item() / 5000, rel=1e-6)  # divided by B


def test_loss_truncation_state_is_saved():
    reg = LossTruncation(drop_fraction=0.2, window=10, recompute_every=10)
    reg.observe(torch.arange(10.0))
    other = LossTruncation(drop_fraction=0.2, window=10, recompute_every=10)
    other.load_state_dict(reg.state_dict())
    assert other.threshold.item() == reg.threshold.item() and int(other.seen) == 10


def test_example_tied_dropout_masks(tiny):
    reg = ExampleTiedDropout(p_fixed=0.25, p_mem=0.5, seed=1)
    reg.attach(tiny)
    assert reg.hidden == 128 and reg.num_fixed == 32
    act = tiny.transformer.h[0].mlp.act
    x = torch.ones(3, 4, 128)
    tiny.train()
    reg.begin_batch(torch.tensor([7, 8, 7]))
    out = act(x)
    assert (out[..., :32] == 1).all()  # generalization units always on
    assert torch.equal(out[0], out[2])  # same example id -> same mask
    assert not torch.equal(out[0], out[1])
    assert torch.equal(out[0, 0, 32:].bool(), reg.example_mask(7))
    assert (out[0] == out[0, :1]).all()  # one mask for all positions: units, not tokens, are dropped
    reg.end_batch()
    with pytest.raises(RuntimeError, match="example ids"):
        act(x)
    tiny.eval()
    out = act(x)
    assert (out[..., 32:] == 0).all() and torch.allclose(out[..., :32], torch.full_like(out[..., :32], 0.75 / 0.25))
    rate = torch.stack([reg.example_mask(i) for i in range(200)]).float().mean().item()
    assert rate == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize("factory,match", [
    (lambda: SpectralNormRegularizer(strength=0), "strength"),
    (lambda: LossTruncation(drop_fraction=1.0), "drop_fraction"),
    (lambda: ExampleTiedDropout(p_fixed=0), "p_fixed"),
    (lambda: ExampleTiedDropout(p_mem=1.5), "p_mem"),
])
def test_bad_arguments(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()
