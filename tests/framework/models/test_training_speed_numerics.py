"""The speed changes of issue 24 against the eager / unpadded path: the S4D kernel in real arithmetic equals the
complex Vandermonde sum; ListOps length buckets and ``torch.compile`` keep the loss curve within the noise of a
change of seed (same data order, same steps)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from framework.datamodules.listops import ListOps, pad_collate
from framework.models.components.cgm_gm import GroundMotionDVAE
from framework.models.components.ssm.s4d_kernel import S4DKernel
from framework.models.ssm_sequence_model import SSMSequenceModel


def test_real_arithmetic_kernel_matches_complex_vandermonde():
    torch.manual_seed(0)
    kernel = S4DKernel(d_model=5, state_size=7, channels=2, alpha=3.0, dt_min=1e-3, dt_max=1e-1)
    length = 300
    got = kernel(length).detach().double()
    # Independent reference: K[l] = 2 Re Σ_n C_n (e^{ΔA_n} − 1)/A_n e^{ΔA_n l}, in complex128 numpy.
    a = kernel.a.detach().numpy().astype(np.complex128)
    dt = kernel.dt.detach().numpy().astype(np.float64)[:, None]
    c = kernel.c_complex.detach().numpy().astype(np.complex128)
    weights = c * (np.exp(dt * a) - 1.0) / a
    steps = np.arange(length)
    expected = 2.0 * np.einsum("chn,hnl->chl", weights, np.exp((dt * a)[..., None] * steps)).real
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_length_buckets_pad_to_the_smallest_bucket_that_fits():
    rows = [(np.arange(1, 9, dtype=np.uint8), 7, 3), (np.arange(1, 9, dtype=np.uint8), 3, 1)]
    tokens, labels, lengths = pad_collate(None, (4, 7, 8))(rows)
    assert tokens.shape == (2, 7) and lengths.tolist() == [7, 3] and labels.tolist() == [3, 1]
    assert pad_collate(None, (4, 8))(rows)[0].shape == (2, 8)
    assert pad_collate(None, None)(rows)[0].shape == (2, 7)
    data = ListOps(num_train=4, num_val=2, num_test=2, max_length=60, min_length=10, max_depth=4, seq_len=64,
                   length_buckets=[32, 48])
    assert data.length_buckets == (32, 48, 64)  # seq_len is always the last bucket
    with pytest.raises(ValueError, match="length_buckets"):
        ListOps(seq_len=64, min_length=10, max_length=60, length_buckets=[16, 128])


def _listops_curve(*, seed: int, buckets, compile: bool = False, steps: int = 40) -> list[float]:
    data = ListOps(num_train=160, num_val=2, num_test=2, max_depth=5, min_length=20, max_length=120, seq_len=128,
                   batch_size=8, length_buckets=buckets, seed=0)
    data.setup("fit")
    torch.manual_seed(seed)
    model = SSMSequenceModel(task="classification", num_classes=10, vocab_size=16, seq_len=128, d_model=16,
                             n_layers=2, state_size=8, bidirectional=True, norm="batch", alpha=3.0, compile=compile)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses, loader = [], data.train_dataloader()
    while len(losses) < steps:
        for tokens, labels, lengths in loader:
            loss = torch.nn.functional.cross_entropy(model(tokens, lengths), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if len(losses) == steps:
                break
    return losses


def _mean_gap(a: list[float], b: list[float]) -> float:
    return float(np.mean(np.abs(np.asarray(a) - np.asarray(b))))


@pytest.mark.slow
def test_listops_length_buckets_stay_within_seed_noise():
    reference = _listops_curve(seed=0, buckets=None)
    other_seed = _listops_curve(seed=1, buckets=None)
    bucketed = _listops_curve(seed=0, buckets=[40, 64, 96])
    assert all(math.isfinite(v) for v in bucketed)
    assert bucketed != reference  # padding does change the numbers (bidirectional kernel, BatchNorm) ...
    assert _mean_gap(bucketed, reference) < 0.5 * _mean_gap(other_seed, reference)  # ... by much less than a seed


@pytest.mark.slow
def test_compiled_ssm_follows_the_eager_loss_curve():
    eager = _listops_curve(seed=0, buckets=[64, 96], steps=12)
    compiled = _listops_curve(seed=0, buckets=[64, 96], compile=True, steps=12)
    np.testing.assert_allclose(compiled, eager, rtol=2e-3)  # same random numbers, float32 rounding only


def _cgm_curve(*, seed: int, compile: bool, steps: int = 25) -> list[float]:
    torch.manual_seed(123)  # the data: fixed, smooth "spectrograms" depending on the condition
    condition = torch.rand(64, 6)
    frames = torch.linspace(0, 1, 12)
    x = torch.sigmoid(4 * condition[:, :1, None] * torch.sin(6 * frames[None, :, None] + torch.arange(9.0)))
    torch.manual_seed(seed)
    net = GroundMotionDVAE(num_conditions=6, num_frequencies=9, embedding_dim=4, z_dim=4, z_rnn_dim=8,
                           posterior_rnn_dim=16, posterior_mlp_hidden=8, decoder_hidden=16, embedding_hidden=8)
    if compile:
        net.compile(dynamic=False)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for step in range(steps):
        batch = slice(16 * (step % 4), 16 * (step % 4 + 1))
        out = net(x[batch], condition[batch])
        loss = ((out.reconstruction - x[batch]) ** 2).sum() / 16 + 0.2 * out.kl.sum() / 16
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.slow
def test_compiled_cgm_gm_follows_the_eager_loss_curve():
    """Compiled random draws come from Inductor's generator, so the curves differ as much as two seeds do - not
    more. The last 10 steps' mean loss is compared against the seed-to-seed spread."""
    eager = [_cgm_curve(seed=s, compile=False) for s in (0, 1, 2)]
    compiled = _cgm_curve(seed=0, compile=True)
    tail = [float(np.mean(c[-10:])) for c in eager]
    spread = max(tail) - min(tail)
    assert all(math.isfinite(v) for v in compiled)
    assert abs(float(np.mean(compiled[-10:])) - float(np.mean(tail))) <= max(2 * spread, 0.05 * float(np.mean(tail)))
