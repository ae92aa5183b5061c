"""Flow-matching probabilistic forecaster (Lim et al., "Elucidating the design choice of probability paths in flow
matching for forecasting", TMLR 2025), with selectable probability paths.

Training (one example = one frame window ``[T, C, H, W]``, encoded frame by frame to states ``z_0..z_{T−1}``): draw
a target index τ ∈ [2, T), the reference τ − 1 and a conditioning index c ∈ [0, τ − 1) (RIVER's sparse conditioning,
distance d = τ − 1 − c); draw ``(t, x_t, u_t)`` from the path between ``z_{τ−1}`` and ``z_τ``; regress
``v_θ(x_t, t | z_{τ−1}, z_c, d)`` on ``u_t`` with the MSE.

Forecasting (:meth:`FlowMatchingForecaster.rollout`): encode the context frames, then generate one state per ODE
solve from the path's source (``z_last + σ_sam ε`` for the state-source paths, N(0, σ_0² I) for the noise-source
ones) over ``[t_min, t_max]`` with Euler / Heun / RK4 and ``sampling_intervals`` solver *intervals*; the
conditioning frame is redrawn at every field evaluation (as in the public code), among the last
``max_condition_distance`` states. Ensembles are independent rollouts (``ensemble_size`` members).

Modes: ``"pixel"`` (flow matching on the frames themselves), ``"latent"`` (a pretrained
``framework.models.frame_autoencoder.FrameAutoencoder`` loaded frozen from ``autoencoder_checkpoint``, or injected as
``autoencoder``), ``"end_to_end"`` (the autoencoder trained jointly: loss = FM loss + ``reconstruction_weight`` ×
reconstruction MSE).

Batches: windows ``[B, T, C, H, W]`` from ``framework.datamodules.pde_trajectories.PDETrajectories``; in validation / test
the first ``context_length`` frames condition and the next ``horizon`` are forecast and scored.

Logged: ``<stage>/loss`` (flow-matching loss, plus the reconstruction term in end-to-end mode), and after a
rollout of ``val_ensemble_size`` / ``ensemble_size`` members the per-lead metrics of
``framework.metrics.forecast_skill.ForecastSkill`` averaged over lead times (``val/rfne``, ``val/crps``, ...), and
in test also per lead time (``test/rfne_lead3``, ...).

Config example::

    model:
      class_path: framework.models.flow_matching_forecaster.FlowMatchingForecaster
      init_args:
        input_shape: [2, 32, 32]
        mode: latent
        autoencoder_checkpoint: outputs/ae/last.ckpt
        path: bridge
        path_options: {sigma: 0.01, sigma_min: 0.001}
        solver: rk4
        sampling_intervals: 10
        optimizer: {class_path: torch.optim.AdamW, init_args: {lr: 5.0e-4}}
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from framework.base import FrameworkModule
from framework.metrics.forecast_skill import ForecastSkill
from framework.validation import require_choice, require_existing_path, require_non_negative, require_positive
from framework.models.components.flow_matching.frame_autoencoder import FrameAutoencoderNetwork
from framework.models.components.flow_matching.paths import make_path
from framework.models.components.flow_matching.samplers import SOLVERS, integrate
from framework.models.components.flow_matching.vector_field import VectorFieldNetwork
from framework.models.frame_autoencoder import FrameAutoencoder

__all__ = ["FlowMatchingForecaster", "MODES"]

MODES = ("pixel", "latent", "end_to_end")


def _positive_int(name: str, value: Any, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


class FlowMatchingForecaster(FrameworkModule):
    """Autoregressive flow-matching forecaster.

    Args:
        input_shape: ``[C, H, W]`` of a frame.
        context_length: conditioning frames at evaluation (>= 2; linked from the DataModule).
        horizon: forecast frames at evaluation (linked from the DataModule).
        mode: ``"pixel"``, ``"latent"`` or ``"end_to_end"``.
        autoencoder_checkpoint: ``FrameAutoencoder`` checkpoint (latent mode; optional start for end-to-end).
        autoencoder: an already built ``FrameAutoencoder`` (instead of a checkpoint; not saved in hparams).
        autoencoder_options: ``FrameAutoencoderNetwork`` arguments for a fresh end-to-end autoencoder.
        reconstruction_weight: weight of the reconstruction loss in end-to-end mode.
        path: probability path, one of ``framework.models.components.flow_matching.PATHS``.
        path_options: keyword options of the path (``sigma``, ``sigma_min``, ...).
        patch_size, d_model, num_heads, mlp_ratio, in_blocks, mid_blocks, dropout, time_scale: the vector field
            network (``VectorFieldNetwork``).
        solver: ``"euler"``, ``"heun"`` or ``"rk4"``; sampling_intervals: solver steps per generated frame.
        sigma_sam: noise added to the reference state at the start of sampling (state-source paths; paper: 0).
        ensemble_size: members per test rollout; val_ensemble_size: members per validation rollout.
        max_condition_distance: at rollout, the conditioning frame is drawn among the last this-many states before
            the reference (default: all); set it to the training window's ``window_length − 2`` to stay within the
            distances seen in training.
        crps_fair: use the fair CRPS estimator; data_range: PSNR/SSIM data range (None: per frame).
        optimizer, scheduler, scheduler_interval, scheduler_monitor: see ``FrameworkModule``.
    """

    def __init__(self, *, input_shape: list[int], context_length: int = 2, horizon: int = 10, mode: str = "pixel",
                 autoencoder_checkpoint: str | None = None, autoencoder: FrameAutoencoder | None = None,
                 autoencoder_options: dict[str, Any] | None = None, reconstruction_weight: float = 1.0,
                 path: str = "bridge", path_options: dict[str, Any] | None = None, patch_size: int | list[int] = 1,
                 d_model: int = 64, num_heads: int = 4, mlp_ratio: float = 4.0, in_blocks: int = 1,
                 mid_blocks: int = 1, dropout: float = 0.0, time_scale: float = 200.0, solver: str = "rk4",
                 sampling_intervals: int = 10, sigma_sam: float = 0.0, ensemble_size: int = 4,
                 val_ensemble_size: int = 2, max_condition_distance: int | None = None, crps_fair: bool = True,
                 data_range: float | None = None, optimizer: OptimizerCallable | None = None,
                 scheduler: LRSchedulerCallable | None = None, scheduler_interval: str = "step",
                 scheduler_monitor: str | None = None) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, scheduler_interval=scheduler_interval,
                         scheduler_monitor=scheduler_monitor)
        self.save_hyperparameters(ignore=["autoencoder"])
        shape = [int(s) for s in input_shape]
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"input_shape must be [C, H, W] with positive sizes, got {input_shape!r}")
        _positive_int("context_length", context_length, 2)
        _positive_int("horizon", horizon)
        require_choice("mode", mode, MODES)
        require_choice("solver", solver, SOLVERS)
        _positive_int("sampling_intervals", sampling_intervals)
        require_non_negative("sigma_sam", sigma_sam)
        require_positive("reconstruction_weight", reconstruction_weight)
        _positive_int("ensemble_size", ensemble_size)
        _positive_int("val_ensemble_size", val_ensemble_size)
        if max_condition_distance is not None:
            _positive_int("max_condition_distance", max_condition_distance)
        self.path = make_path(path, **(path_options or {}))
        self.mode, self.solver, self.sampling_intervals, self.sigma_sam = mode, solver, sampling_intervals, sigma_sam
        self.context_length, self.horizon = context_length, horizon
        self.ensemble_size, self.val_ensemble_size = ensemble_size, val_ensemble_size
        self.max_condition_distance, self.reconstruction_weight = max_condition_distance, reconstruction_weight
        self.input_shape = tuple(shape)

        self.autoencoder: FrameAutoencoder | None = None
        self.e2e_network: FrameAutoencoderNetwork | None = None
        if mode == "latent":
            if autoencoder is None:
                if autoencoder_checkpoint is None:
                    raise ValueError("mode='latent' needs autoencoder_checkpoint (a FrameAutoencoder checkpoint) "
                                     "or an autoencoder module")
                require_existing_path("autoencoder_checkpoint", autoencoder_checkpoint, kind="file")
                autoencoder = FrameAutoencoder.load_from_checkpoint(autoencoder_checkpoint, map_location="cpu")
            self.autoencoder = autoencoder
            self.autoencoder.requires_grad_(False)
            self.autoencoder.eval()
            state_shape = self.autoencoder.network.latent_shape(shape[1], shape[2])
            if self.autoencoder.network.in_channels != shape[0]:
                raise ValueError(f"the autoencoder takes {self.autoencoder.network.in_channels} channels, "
                                 f"input_shape has {shape[0]}")
        elif mode == "end_to_end":
            if autoencoder_checkpoint is not None:
                require_existing_path("autoencoder_checkpoint", autoencoder_checkpoint, kind="file")
                self.e2e_network = FrameAutoencoder.load_from_checkpoint(autoencoder_checkpoint,
                                                                         map_location="cpu").network
            elif autoencoder is not None:
                self.e2e_network = copy.deepcopy(autoencoder.network)
            else:
                self.e2e_network = FrameAutoencoderNetwork(in_channels=shape[0], **(autoencoder_options or {}))
            self.e2e_network.requires_grad_(True)
            state_shape = self.e2e_network.latent_shape(shape[1], shape[2])
        else:
            state_shape = tuple(shape)
        self.state_shape = tuple(state_shape)
        c, h, w = self.state_shape
        self.vector_field = VectorFieldNetwork(
            channels=c, height=h, width=w, patch_size=patch_size if isinstance(patch_size, int) else tuple(patch_size),
            d_model=d_model, num_heads=num_heads, mlp_ratio=mlp_ratio, in_blocks=in_blocks, mid_blocks=mid_blocks,
            dropout=dropout, time_scale=time_scale)
        skill = {"horizon": horizon, "fair": crps_fair, "data_range": data_range}
        self.val_skill = ForecastSkill(**skill)
        self.test_skill = ForecastSkill(**skill)

    # ------------------------------------------------------------------ encoding
    def train(self, mode: bool = True):
        super().train(mode)
        if self.autoencoder is not None:
            self.autoencoder.eval()  # frozen: GroupNorm has no running stats, but keep dropout-free behaviour
        return self

    def encode(self, frames: Tensor) -> Tensor:
        """``[..., C, H, W] -> [..., c, h, w]`` states (identity in pixel mode)."""
        if self.mode == "pixel":
            return frames
        lead = frames.shape[:-3]
        flat = frames.reshape(-1, *frames.shape[-3:])
        if self.mode == "latent":
            with torch.no_grad():
                z = self.autoencoder.encode(flat)
        else:
            z = self.e2e_network.encode(flat)
        return z.reshape(*lead, *z.shape[1:])

    def decode(self, states: Tensor) -> Tensor:
        """``[..., c, h, w] -> [..., C, H, W]`` frames."""
        if self.mode == "pixel":
            return states
        lead = states.shape[:-3]
        flat = states.reshape(-1, *states.shape[-3:])
        x = self.autoencoder.decode(flat) if self.mode == "latent" else self.e2e_network.decode(flat)
        return x.reshape(*lead, *x.shape[1:])

    # ------------------------------------------------------------------ training
    def _check_window(self, frames: Tensor, needed: int) -> None:
        if frames.dim() != 5 or tuple(frames.shape[2:]) != self.input_shape:
            raise ValueError(f"expected windows [B, T, {', '.join(map(str, self.input_shape))}], "
                             f"got {tuple(frames.shape)}")
        if frames.shape[1] < needed:
            raise ValueError(f"windows of {frames.shape[1]} frames are shorter than the {needed} needed")

    def flow_matching_loss(self, frames: Tensor) -> tuple[Tensor, Tensor | None]:
        """FM loss on windows ``[B, T, C, H, W]`` (T >= 3); second value: reconstruction MSE (end-to-end) or None."""
        self._check_window(frames, 3)
        b, t = frames.shape[:2]
        z = self.encode(frames)
        device = frames.device
        target = torch.randint(2, t, (b,), device=device)
        ref = target - 1
        cond = (torch.rand(b, device=device) * ref).floor().long()  # uniform on [0, ref)
        rows = torch.arange(b, device=device)
        z_ref, z_next, z_cond = z[rows, ref], z[rows, target], z[rows, cond]
        sample = self.path.sample(z_ref, z_next)
        v = self.vector_field(sample.x_t, sample.t, z_ref, z_cond, (ref - cond).float())
        loss = F.mse_loss(v, sample.u_t)
        recon = None
        if self.mode == "end_to_end":
            recon = F.mse_loss(self.decode(z), frames)
        return loss, recon

    def training_step(self, batch, batch_idx):
        frames = batch[0] if isinstance(batch, (tuple, list)) else batch
        loss, recon = self.flow_matching_loss(frames)
        self.log("train/fm_loss", loss, on_step=True, on_epoch=True)
        if recon is not None:
            self.log("train/reconstruction", recon, on_step=True, on_epoch=True)
            loss = loss + self.reconstruction_weight * recon
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def rollout(self, context: Tensor, horizon: int | None = None, *, ensemble_size: int = 1,
                intervals: int | None = None, solver: str | None = None, sigma_sam: float | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        """Autoregressive ensemble forecast.

        Args:
            context: ``[B, K, C, H, W]`` conditioning frames (K >= 2).
            horizon: frames to generate (default ``self.horizon``).
            ensemble_size: M independent rollouts per context.
            intervals, solver, sigma_sam: override the sampling settings.
            generator: CPU generator for the noise and the conditioning draws (reproducible ensembles).

        Returns:
            ``[B, M, horizon, C, H, W]`` forecast frames (decoded).
        """
        horizon = self.horizon if horizon is None else horizon
        intervals = self.sampling_intervals if intervals is None else intervals
        solver = self.solver if solver is None else solver
        sigma_sam = self.sigma_sam if sigma_sam is None else sigma_sam
        _positive_int("horizon", horizon)
        _positive_int("ensemble_size", ensemble_size)
        _positive_int("intervals", intervals)
        require_choice("solver", solver, SOLVERS)
        self._check_window(context, 2)
        b, k = context.shape[:2]
        device = context.device
        states = self.encode(context).repeat_interleave(ensemble_size, dim=0)  # [BM, K, c, h, w]
        rows = torch.arange(states.shape[0], device=device)

        def noise_like(x: Tensor) -> Tensor:
            return torch.randn(x.shape, generator=generator, dtype=x.dtype).to(device)

        for _ in range(horizon):
            n = states.shape[1]
            z_ref = states[:, -1]
            span = n - 1 if self.max_condition_distance is None else min(n - 1, self.max_condition_distance)

            def field(x: Tensor, t: Tensor) -> Tensor:
                distance = torch.randint(1, span + 1, (x.shape[0],), generator=generator).to(device)
                z_cond = states[rows, n - 1 - distance]
                return self.vector_field(x, t, z_ref, z_cond, distance.float())

            if self.path.starts_from_state:
                x0 = z_ref + sigma_sam * noise_like(z_ref) if sigma_sam > 0 else z_ref.clone()
            else:
                x0 = self.path.source_std * noise_like(z_ref)
            z_next = integrate(field, x0, method=solver, intervals=intervals, t0=self.path.t_min, t1=self.path.t_max)
            states = torch.cat([states, z_next[:, None]], dim=1)
        frames = self.decode(states[:, k:])
        return frames.reshape(b, ensemble_size, horizon, *frames.shape[2:])

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self, batch, stage: str) -> None:
        frames = batch[0] if isinstance(batch, (tuple, list)) else batch
        self._check_window(frames, self.context_length + self.horizon)
        loss, recon = self.flow_matching_loss(frames)
        if recon is not None:
            loss = loss + self.reconstruction_weight * recon
        self.log(f"{stage}/loss", loss, prog_bar=True, on_epoch=True, sync_dist=True)
        context = frames[:, :self.context_length]
        target = frames[:, self.context_length:self.context_length + self.horizon]
        members = self.val_ensemble_size if stage == "val" else self.ensemble_size
        preds = self.rollout(context, ensemble_size=members)
        (self.val_skill if stage == "val" else self.test_skill).update(preds, target)

    def _log_skill(self, stage: str, per_lead: bool) -> None:
        metric = self.val_skill if stage == "val" else self.test_skill
        values = metric.compute()
        metric.reset()
        for key, curve in values.items():
            finite = curve[torch.isfinite(curve)]
            if finite.numel():
                self.log(f"{stage}/{key}", finite.mean(), sync_dist=False)
            if per_lead:
                for lead, value in enumerate(curve.tolist(), start=1):
                    if math.isfinite(value):
                        self.log(f"{stage}/{key}_lead{lead}", value, sync_dist=False)
        self.last_skill = {f"{stage}/{k}": v.detach().cpu() for k, v in values.items()}

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_skill("val", per_lead=False)

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_skill("test", per_lead=True)

    def predict_step(self, batch, batch_idx):
        frames = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.rollout(frames[:, :self.context_length], ensemble_size=self.ensemble_size)

    def parameter_groups(self):
        return [p for p in self.parameters() if p.requires_grad]
