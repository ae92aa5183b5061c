"""Frame autoencoder for latent flow matching: trained first on reconstruction, then loaded frozen by the forecaster.

Trains :class:`~framework.models.components.flow_matching.FrameAutoencoderNetwork` with the MSE between frames and their
reconstructions, on every frame of the window batches ``[B, T, C, H, W]`` of ``framework.datamodules.pde_trajectories``.
At every validation epoch it also measures the per-channel mean and standard deviation of the latents of the
validation frames and stores them (buffers ``latent_mean`` / ``latent_std``, saved in the checkpoint), so the
forecaster can work on standardised latents, where the paths' noise scales (σ, σ_min, a N(0, I) source) mean
the same thing on every system. (The public code feeds raw latents; standardising them is our choice.)

Logged: ``<stage>/loss`` (reconstruction MSE) and ``<stage>/rfne`` (relative Frobenius error of reconstructions).

Config example::

    model:
      class_path: framework.models.frame_autoencoder.FrameAutoencoder
      init_args:
        in_channels: 2
        latent_channels: 4
        channel_mults: [1, 2, 2]
        optimizer: {class_path: torch.optim.AdamW, init_args: {lr: 1.0e-3}}
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor

from framework.base import FrameworkModule
from framework.models.components.flow_matching.frame_autoencoder import FrameAutoencoderNetwork

__all__ = ["FrameAutoencoder"]


class FrameAutoencoder(FrameworkModule):
    """``encode(frames [N, C, H, W]) -> standardised latents [N, c, h, w]``; ``decode`` inverts it.

    Args:
        in_channels, latent_channels, base_channels, channel_mults, decoder_base_channels: see
            ``FrameAutoencoderNetwork``.
        optimizer, scheduler, scheduler_interval, scheduler_monitor: see ``FrameworkModule``.
    """

    def __init__(self, *, in_channels: int, latent_channels: int = 4, base_channels: int = 32,
                 channel_mults: list[int] = (1, 2, 2), decoder_base_channels: int | None = None,
                 optimizer: OptimizerCallable | None = None, scheduler: LRSchedulerCallable | None = None,
                 scheduler_interval: str = "epoch", scheduler_monitor: str | None = None) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, scheduler_interval=scheduler_interval,
                         scheduler_monitor=scheduler_monitor)
        self.save_hyperparameters()
        self.network = FrameAutoencoderNetwork(in_channels=in_channels, latent_channels=latent_channels,
                                               base_channels=base_channels, channel_mults=tuple(channel_mults),
                                               decoder_base_channels=decoder_base_channels)
        self.register_buffer("latent_mean", torch.zeros(latent_channels))
        self.register_buffer("latent_std", torch.ones(latent_channels))
        self._stats: list[Tensor] = []

    # ------------------------------------------------------------------ encode / decode
    def encode(self, frames: Tensor) -> Tensor:
        """``[N, C, H, W] -> [N, c, h, w]``, standardised with the stored latent statistics."""
        z = self.network.encode(frames)
        return (z - self.latent_mean[:, None, None]) / self.latent_std[:, None, None]

    def decode(self, latents: Tensor) -> Tensor:
        """``[N, c, h, w] -> [N, C, H, W]``."""
        return self.network.decode(latents * self.latent_std[:, None, None] + self.latent_mean[:, None, None])

    def forward(self, frames: Tensor) -> Tensor:
        return self.network(frames)

    # ------------------------------------------------------------------ steps
    @staticmethod
    def _frames(batch) -> Tensor:
        frames = batch[0] if isinstance(batch, (tuple, list)) else batch
        if frames.dim() == 5:
            frames = frames.flatten(0, 1)
        if frames.dim() != 4:
            raise ValueError(f"expected frame windows [B, T, C, H, W] or frames [N, C, H, W], got {tuple(frames.shape)}")
        return frames

    def _step(self, batch, stage: str) -> Tensor:
        frames = self._frames(batch)
        z = self.network.encode(frames)
        recon = self.network.decode(z)
        loss = F.mse_loss(recon, frames)
        rfne = ((recon - frames).flatten(1).norm(dim=1) / frames.flatten(1).norm(dim=1).clamp_min(1e-12)).mean()
        self.log(f"{stage}/loss", loss, prog_bar=True, on_step=stage == "train", on_epoch=True, sync_dist=stage != "train")
        self.log(f"{stage}/rfne", rfne, on_step=False, on_epoch=True, sync_dist=stage != "train")
        if stage == "val":
            zd = z.detach().double()
            self._stats.append(torch.stack([zd.new_tensor(zd[:, 0].numel()).expand(zd.shape[1]),
                                            zd.sum(dim=(0, 2, 3)), zd.pow(2).sum(dim=(0, 2, 3))]))
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        if not self._stats:
            return
        stats = torch.stack(self._stats).sum(0)
        self._stats.clear()
        if self.trainer is not None and self.trainer.world_size > 1:
            stats = self.trainer.strategy.reduce(stats, reduce_op="sum")
        count, total, squares = stats
        mean = total / count
        std = (squares / count - mean**2).clamp_min(1e-12).sqrt()
        self.latent_mean.copy_(mean.to(self.latent_mean))
        self.latent_std.copy_(std.to(self.latent_std))

    def fit_latent_statistics(self, frames: Tensor) -> None:
        """Set the latent statistics from ``frames [N, C, H, W]`` directly (used outside a Trainer)."""
        with torch.no_grad():
            z = self.network.encode(frames).double()
        self.latent_mean.copy_(z.mean(dim=(0, 2, 3)).to(self.latent_mean))
        self.latent_std.copy_(z.std(dim=(0, 2, 3)).clamp_min(1e-6).to(self.latent_std))
