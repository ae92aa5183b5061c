"""Vector-field U-ViT and frame autoencoder: shapes, patching is a bijection, dependence on every input, bad input."""

from __future__ import annotations

import pytest
import torch

from framework.models.components.flow_matching import FrameAutoencoderNetwork, VectorFieldNetwork


def _net(**kw):
    args = dict(channels=2, height=4, width=8, patch_size=(2, 4), d_model=16, num_heads=2)
    args.update(kw)
    torch.manual_seed(0)
    return VectorFieldNetwork(**args).eval()


def test_patching_round_trip():
    net = _net()
    x = torch.randn(3, 2, 4, 8)
    tokens = net._tokens(x)
    assert tokens.shape == (3, 4, 2 * 2 * 4)
    torch.testing.assert_close(net._untokens(tokens), x)


def test_output_depends_on_every_input():
    net = _net()
    g = torch.Generator().manual_seed(1)
    x, ref, cond = (torch.randn(2, 2, 4, 8, generator=g) for _ in range(3))
    t, d = torch.tensor([0.2, 0.7]), torch.tensor([1.0, 3.0])
    base = net(x, t, ref, cond, d)
    assert base.shape == (2, 2, 4, 8)
    for changed in ((x + 1, t, ref, cond, d), (x, t + 0.1, ref, cond, d), (x, t, ref + 1, cond, d),
                    (x, t, ref, cond + 1, d), (x, t, ref, cond, d + 1)):
        assert not torch.allclose(net(*changed), base)
    # samples do not interact
    torch.testing.assert_close(net(x[:1], t[:1], ref[:1], cond[:1], d[:1]), base[:1], atol=1e-5, rtol=1e-5)


def test_vector_field_bad_input():
    with pytest.raises(ValueError, match="divisible by patch_size"):
        _net(height=5)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        _net(d_model=10, num_heads=4)
    with pytest.raises(ValueError, match=r"states must have shape \[B, 2, 4, 8\]"):
        _net()(torch.zeros(1, 1, 4, 8), torch.zeros(1), torch.zeros(1, 1, 4, 8), torch.zeros(1, 1, 4, 8), torch.ones(1))


def test_autoencoder_shapes_and_errors():
    torch.manual_seed(0)
    ae = FrameAutoencoderNetwork(in_channels=3, latent_channels=4, base_channels=8, channel_mults=[1, 2, 2])
    x = torch.randn(2, 3, 16, 16)
    assert ae.downsampling == 4 and ae.latent_shape(16, 16) == (4, 4, 4)
    assert ae.encode(x).shape == (2, 4, 4, 4) and ae(x).shape == x.shape
    with pytest.raises(ValueError, match="divisible by the autoencoder's downsampling 4"):
        ae.encode(torch.randn(1, 3, 10, 10))
    with pytest.raises(ValueError, match=r"encode expects frames \[B, 3, H, W\]"):
        ae.encode(torch.randn(1, 2, 16, 16))
    with pytest.raises(ValueError, match="channel_mults must be a non-empty list"):
        FrameAutoencoderNetwork(in_channels=1, channel_mults=[])


def test_autoencoder_can_learn_identity_on_smooth_frames():
    torch.manual_seed(0)
    ae = FrameAutoencoderNetwork(in_channels=1, latent_channels=4, base_channels=8, channel_mults=[1, 2])
    grid = torch.linspace(0, 6.28, 8)
    frames = torch.stack([torch.sin(a * grid[:, None] + grid[None]) for a in torch.linspace(0.5, 1.5, 8)])[:, None]
    opt = torch.optim.Adam(ae.parameters(), lr=3e-3)
    first = float(torch.nn.functional.mse_loss(ae(frames), frames))
    for _ in range(60):
        loss = torch.nn.functional.mse_loss(ae(frames), frames)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.2 * first
