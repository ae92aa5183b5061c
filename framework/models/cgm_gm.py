"""CGM-GM (Ren et al., arXiv 2407.15089): conditional ground-motion generation with a dynamic VAE on log-amplitude
spectrograms, Griffin–Lim waveforms and a seismological evaluation.

Batches come from :class:`framework.datamodules.ground_motion.GroundMotionCatalog` (``spectrogram [B, 131, 81]``, ``phase``,
``waveform [B, 6000]``, ``condition [B, C]`` and metadata). The loss (research note §2.4) is

    L = Σ (x̂ − x)² / B + β · Σ KL(q(z_t | x_≤t, c) ‖ p(z_t | z_<t, c)) / B + α · Σ (w̃ − w)² / B

with ``w̃`` the inverse STFT of the de-normalised reconstruction recombined with the *true* phase. Generation samples
the sequential prior, decodes, de-normalises and runs Griffin–Lim (``griffin_lim_iterations``). ``test`` generates
``samples_per_condition`` records per held-out condition and reports, for generated and held-out records, the
KO-smoothed FAS residuals against the ergodic SFBA GMM at 2 / 5 / 10 / 15 Hz, the magnitude / distance slopes,
PGV / PGA medians per (M, R) bin and the discriminative score; with a W&B logger it also logs figures (waveforms,
spectrograms, FAS versus distance and magnitude, a FAS map of a scenario event over the station grid).

``faithful=True`` reproduces the released code's choices: σ = 0.5·exp(logvar) in the reparameterisation and a Hann
window in Griffin–Lim although the data STFT is rectangular.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor

from framework.models.components.cgm_gm.representation import LogSpectrogramScaler, SpectrogramTransform
from framework.base import FrameworkModule
from framework.loggers import log_figure, new_figure
from framework.metrics.ground_motion import (
    DiscriminativeScore,
    FASResiduals,
    PeakMotionMedians,
    ergodic_gmm_ln_fas,
    smoothed_ln_fas,
)
from framework.models.components.cgm_gm import GroundMotionDVAE, griffin_lim

__all__ = ["CGMGM"]

log = logging.getLogger(__name__)

# Scenario of the CGM-GM FAS maps (research note §2.5): M 2.93 at 37.97817 N, 122.05350 W, depth 15.28 km, stations
# on a grid inside lon [-122.503, -121.8], lat [37.266, 38.067].
DEFAULT_SCENARIO = {"magnitude": 2.93, "source_latitude": 37.97817, "source_longitude": -122.05350, "depth": 15.28}
DEFAULT_MAP_BOX = (37.266, 38.067, -122.503, -121.8)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class CGMGM(FrameworkModule):
    """The CGM-GM LightningModule.

    Args:
        network: the dynamic VAE (default: the best configuration, 173,009 parameters, built from the sizes below).
        num_conditions, embedding_dim, z_dim, z_rnn_dim: sizes used when ``network`` is not given.
        faithful: the released code's σ = 0.5·exp(logvar) and Hann-window Griffin–Lim.
        kl_weight: β (0.2 in the best configuration).
        time_loss_weight: α of the time-domain term (the best model's α is not recorded; 0.05 is the middle of the
            search space {0.01, 0.05, 0.1}).
        n_fft, hop_length, n_samples, dt: the representation (must match the data).
        griffin_lim_iterations: iterations when generating waveforms (500 as in the released generation script).
        griffin_lim_momentum: fast Griffin–Lim momentum (0.99, torchaudio's default).
        samples_per_condition: generated records per held-out condition in ``test``.
        generation_seed: seed of the test-time generation.
        discriminative_iterations, discriminative_repeats: post-hoc classifier budget (2000, 10 in the paper).
        map_grid_size: stations per side of the scenario FAS map (0 disables it).
        compile: compile the dynamic VAE's forward (posterior, the 131-step prior unroll, decoder) with
            ``torch.compile`` in place (checkpoint keys unchanged). It fuses each prior step's small kernels; with
            ``compile_mode="reduce-overhead"`` the whole step replays as a CUDA graph. Compiled random draws come
            from Inductor's generator, so the noise differs from eager (same distribution; loss curve checked in
            ``tests/framework/models/test_training_speed_numerics.py``).
        compile_mode: ``torch.compile`` mode (``None``, ``"default"``, ``"reduce-overhead"``, ``"max-autotune"``,
            ``"max-autotune-no-cudagraphs"``).
        optimizer, scheduler, scheduler_interval, scheduler_monitor: see ``FrameworkModule``.
    """

    def __init__(self, *, network: GroundMotionDVAE | None = None, num_conditions: int = 6, embedding_dim: int = 16,
                 z_dim: int = 32, z_rnn_dim: int = 32, faithful: bool = False, kl_weight: float = 0.2,
                 time_loss_weight: float = 0.05, n_fft: int = 160, hop_length: int = 46, n_samples: int = 6000,
                 dt: float = 0.01, griffin_lim_iterations: int = 500, griffin_lim_momentum: float = 0.99,
                 samples_per_condition: int = 1, generation_seed: int = 0, discriminative_iterations: int = 2000,
                 discriminative_repeats: int = 10, map_grid_size: int = 12, compile: bool = False,
                 compile_mode: str | None = None, optimizer: OptimizerCallable | None = None,
                 scheduler: LRSchedulerCallable | None = None,
                 scheduler_interval: str = "epoch", scheduler_monitor: str | None = None) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, scheduler_interval=scheduler_interval,
                         scheduler_monitor=scheduler_monitor)
        self.save_hyperparameters(ignore=["network", "optimizer", "scheduler"])
        for name, value in (("kl_weight", kl_weight), ("time_loss_weight", time_loss_weight)):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        for name, value in (("griffin_lim_iterations", griffin_lim_iterations), ("map_grid_size", map_grid_size)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if not isinstance(samples_per_condition, int) or samples_per_condition < 1:
            raise ValueError(f"samples_per_condition must be a positive integer, got {samples_per_condition!r}")
        if dt <= 0:
            raise ValueError(f"dt must be positive, got {dt!r}")
        self.network = network or GroundMotionDVAE(num_conditions=num_conditions, num_frequencies=n_fft // 2 + 1,
                                                   embedding_dim=embedding_dim, z_dim=z_dim, z_rnn_dim=z_rnn_dim,
                                                   faithful=faithful)
        if network is not None and faithful != network.faithful:
            raise ValueError(f"faithful={faithful} differs from the injected network's faithful={network.faithful}")
        if compile_mode is not None and compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {list(COMPILE_MODES)} or None, got {compile_mode!r}")
        if compile:
            self.network.compile(dynamic=False, mode=compile_mode)
        self.transform = SpectrogramTransform(n_fft=n_fft, hop_length=hop_length, length=n_samples)
        self.griffin_lim_transform = SpectrogramTransform(n_fft=n_fft, hop_length=hop_length, length=n_samples,
                                                          window="hann" if faithful else "rectangular")
        self.faithful, self.kl_weight, self.time_loss_weight = faithful, kl_weight, time_loss_weight
        self.dt, self.n_samples = dt, n_samples
        self.griffin_lim_iterations, self.griffin_lim_momentum = griffin_lim_iterations, griffin_lim_momentum
        self.samples_per_condition, self.generation_seed = samples_per_condition, generation_seed
        self.map_grid_size = map_grid_size
        # Normalisation of the data the model was trained on (copied from the DataModule, saved in checkpoints).
        self.register_buffer("log_range", torch.tensor([float("nan"), float("nan")], dtype=torch.float64))
        c = self.network.num_conditions
        self.register_buffer("condition_low", torch.full((c,), float("nan"), dtype=torch.float64))
        self.register_buffer("condition_high", torch.full((c,), float("nan"), dtype=torch.float64))
        self.condition_names: list[str] = []
        self.eval_metrics = torch.nn.ModuleDict({
            "real_fas": FASResiduals(dt=dt), "generated_fas": FASResiduals(dt=dt),
            "real_peaks": PeakMotionMedians(dt=dt), "generated_peaks": PeakMotionMedians(dt=dt),
            "discriminative": DiscriminativeScore(iterations=discriminative_iterations,
                                                  repeats=discriminative_repeats, seed=generation_seed),
        })
        self._examples: dict[str, Tensor] = {}
        self._fit_scaler: LogSpectrogramScaler | None = None

    # ------------------------------------------------------------------ normalisation
    def set_normalization(self, normalization: dict) -> None:
        """Copy ``GroundMotionCatalog.normalization()`` into the model's buffers."""
        names = list(normalization["condition_names"])
        if len(names) != self.network.num_conditions:
            raise ValueError(f"the data have {len(names)} conditioning variables {names}; the model expects "
                             f"{self.network.num_conditions} (set model.init_args.num_conditions)")
        if not math.isclose(float(normalization["dt"]), self.dt):
            raise ValueError(f"data dt={normalization['dt']} differs from the model's dt={self.dt}")
        self.log_range.copy_(torch.tensor([normalization["log_min"], normalization["log_max"]]))
        self.condition_low.copy_(torch.as_tensor(normalization["condition_low"], dtype=torch.float64))
        self.condition_high.copy_(torch.as_tensor(normalization["condition_high"], dtype=torch.float64))
        self.condition_names = names

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "normalization"):
            self.set_normalization(datamodule.normalization())

    def on_train_start(self) -> None:
        self._fit_scaler = self.spectrogram_scaler  # after any checkpoint restore; the buffer is fixed while fitting

    def on_train_end(self) -> None:
        self._fit_scaler = None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["condition_names"] = list(self.condition_names)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.condition_names = list(checkpoint.get("condition_names", []))

    @property
    def spectrogram_scaler(self) -> LogSpectrogramScaler:
        lo, hi = (float(v) for v in self.log_range)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise RuntimeError("the model has no spectrogram normalisation: train it through a GroundMotionCatalog "
                               "or call set_normalization(datamodule.normalization())")
        return LogSpectrogramScaler(lo, hi)

    def scale_conditions(self, raw: Tensor) -> Tensor:
        """Raw conditioning values ``[B, C]`` (in ``condition_names`` order) -> [0, 1], clipped with a warning."""
        low, high = self.condition_low.to(raw.device), self.condition_high.to(raw.device)
        outside = (raw < low) | (raw > high)
        if outside.any():
            cols = [self.condition_names[i] if self.condition_names else str(i)
                    for i in torch.nonzero(outside.any(0)).flatten().tolist()]
            log.warning("conditioning values outside the training ranges were clipped: %s", cols)
        return ((torch.minimum(torch.maximum(raw.double(), low), high) - low) / (high - low)).float()

    # ------------------------------------------------------------------ loss
    def forward(self, spectrogram: Tensor, condition: Tensor):
        return self.network(spectrogram, condition)

    def losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        x, condition = batch["spectrogram"], batch["condition"]
        b = x.shape[0]
        out = self.network(x, condition)
        reconstruction = ((out.reconstruction - x) ** 2).sum() / b
        kl = out.kl.sum() / b
        if self.time_loss_weight > 0:
            # The scaler reads the log_range buffer as Python floats: a GPU sync, done once per fit, not per step.
            scaler = self._fit_scaler if self.training and self._fit_scaler is not None else self.spectrogram_scaler
            amplitude = scaler.denormalize(out.reconstruction)
            waveform = self.transform.inverse(torch.polar(amplitude, batch["phase"]))
            time = ((waveform - batch["waveform"]) ** 2).sum() / b
        else:
            time = x.new_zeros(())
        loss = reconstruction + self.kl_weight * kl + self.time_loss_weight * time
        return {"loss": loss, "reconstruction": reconstruction, "kl": kl, "time": time}

    def _shared_step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        values = self.losses(batch)
        self.log_dict({f"{stage}/{k}": v for k, v in values.items()}, prog_bar=stage != "test",
                      batch_size=batch["spectrogram"].shape[0], sync_dist=stage != "train")
        return values["loss"]

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._shared_step(batch, "val")

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate_spectrograms(self, condition: Tensor, num_samples: int = 1,
                              generator: torch.Generator | None = None) -> Tensor:
        """Scaled conditions ``[B, C]`` -> linear STFT amplitudes ``[B·num_samples, T, F]`` (sample-major per row)."""
        condition = condition.repeat_interleave(num_samples, dim=0)
        x = self.network.generate(condition, self.transform.num_frames, generator=generator)
        return self.spectrogram_scaler.denormalize(x)

    @torch.no_grad()
    def generate(self, condition: Tensor, num_samples: int = 1, *, n_iter: int | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
        """Velocity waveforms ``[B·num_samples, L]`` (m/s) for scaled conditions ``[B, C]`` (Griffin–Lim)."""
        amplitude = self.generate_spectrograms(condition, num_samples, generator)
        return griffin_lim(amplitude, self.griffin_lim_transform, momentum=self.griffin_lim_momentum,
                           n_iter=self.griffin_lim_iterations if n_iter is None else n_iter, generator=generator)

    # ------------------------------------------------------------------ evaluation
    def on_test_epoch_start(self) -> None:
        self._generator = torch.Generator(device=self.device).manual_seed(self.generation_seed)
        self._examples = {}
        for metric in self.eval_metrics.values():
            metric.reset()

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self._shared_step(batch, "test")
        s = self.samples_per_condition
        generated = self.generate(batch["condition"], s, generator=self._generator)
        m, r, z = batch["magnitude"], batch["rupture_distance"], batch["depth"]
        rep = lambda v: v.repeat_interleave(s)
        self.eval_metrics["real_fas"].update(batch["waveform"], m, r, z)
        self.eval_metrics["generated_fas"].update(generated, rep(m), rep(r), rep(z))
        self.eval_metrics["real_peaks"].update(batch["waveform"], m, r)
        self.eval_metrics["generated_peaks"].update(generated, rep(m), rep(r))
        self.eval_metrics["discriminative"].update(batch["waveform"], generated)
        if not self._examples:
            k = min(3, batch["waveform"].shape[0])
            self._examples = {"real": batch["waveform"][:k].cpu(), "generated": generated[::s][:k].cpu(),
                              "magnitude": m[:k].cpu(), "distance": r[:k].cpu()}
        return loss

    def on_test_epoch_end(self) -> None:
        values: dict[str, Tensor] = {}
        for name in ("real_fas", "generated_fas", "real_peaks", "generated_peaks", "discriminative"):
            for key, value in self.eval_metrics[name].compute().items():
                values[f"test/{name.split('_')[0]}/{key}" if name != "discriminative" else f"test/{key}"] = value
        self.log_dict({k: v.float() for k, v in values.items() if torch.isfinite(v)}, sync_dist=False)
        if self.trainer is not None and self.trainer.is_global_zero:
            self._log_figures()

    # ------------------------------------------------------------------ figures
    def _log_figures(self) -> None:
        trainer = self.trainer
        if not trainer.loggers:
            return  # nothing would receive the figures; skip the plotting work
        ex = self._examples
        if ex:
            fig = new_figure(figsize=(10, 6))
            t = torch.arange(self.n_samples) * self.dt
            k = len(ex["real"])
            for i in range(k):
                for j, kind in enumerate(("real", "generated")):
                    ax = fig.add_subplot(k, 2, 2 * i + j + 1)
                    ax.plot(t, ex[kind][i].numpy(), lw=0.5)
                    ax.set_title(f"{kind} M{float(ex['magnitude'][i]):.2f} R{float(ex['distance'][i]):.0f} km",
                                 fontsize=8)
                    ax.set_xlabel("time (s)", fontsize=7)
                    ax.set_ylabel("velocity (m/s)", fontsize=7)
            fig.suptitle("held-out (left) and generated (right) waveforms at the same conditions", fontsize=9)
            fig.tight_layout()
            log_figure(trainer, "test/waveforms", fig)
            fig = new_figure(figsize=(10, 3))
            for j, kind in enumerate(("real", "generated")):
                ax = fig.add_subplot(1, 2, j + 1)
                spec = torch.log10(self.transform(ex[kind][:1].to(self.transform.window.device)).abs() + 1e-10)
                image = ax.imshow(spec[0].T.cpu().numpy(), origin="lower", aspect="auto", extent=(0, 60, 0, 50))
                fig.colorbar(image, ax=ax, label="log10 |STFT| (m/s)")
                ax.set_title(f"{kind} log10 |STFT|")
                ax.set_xlabel("time (s)")
                ax.set_ylabel("frequency (Hz)")
            fig.tight_layout()
            log_figure(trainer, "test/spectrograms", fig)
        real, gen = self.eval_metrics["real_fas"].records(), self.eval_metrics["generated_fas"].records()
        fig = new_figure(figsize=(12, 6))
        freqs = self.eval_metrics["real_fas"].frequencies
        for k, f in enumerate(freqs):
            ax = fig.add_subplot(2, len(freqs), k + 1)
            ax.scatter(real["distance"].cpu(), real["ln_fas"][:, k].cpu(), s=3, label="held-out")
            ax.scatter(gen["distance"].cpu(), gen["ln_fas"][:, k].cpu(), s=3, label="generated")
            rr = torch.linspace(5, 100, 50, dtype=torch.float64)
            ax.plot(rr, ergodic_gmm_ln_fas(torch.full_like(rr, 3.0), rr, torch.full_like(rr, 10.0), (f,))[:, 0],
                    "k-", label="GMM M3")
            ax.set_xscale("log")
            ax.set_title(f"{f:g} Hz vs distance", fontsize=8)
            ax.set_xlabel("rupture distance (km)", fontsize=7)
            ax.set_ylabel("ln FAS (m)", fontsize=7)
            ax2 = fig.add_subplot(2, len(freqs), len(freqs) + k + 1)
            ax2.scatter(real["magnitude"].cpu(), real["ln_fas"][:, k].cpu(), s=3)
            ax2.scatter(gen["magnitude"].cpu(), gen["ln_fas"][:, k].cpu(), s=3)
            ax2.set_title(f"{f:g} Hz vs magnitude", fontsize=8)
            ax2.set_xlabel("magnitude (Mw)", fontsize=7)
            ax2.set_ylabel("ln FAS (m)", fontsize=7)
        # One legend for every panel (same colours throughout).
        fig.legend(*fig.axes[0].get_legend_handles_labels(), loc="upper right", fontsize=7)
        fig.suptitle("Fourier amplitude spectra: held-out vs generated records", fontsize=9)
        fig.tight_layout(rect=(0, 0, 0.93, 1))
        log_figure(trainer, "test/fas_distance_magnitude", fig)
        self._log_scenario_map(trainer)

    def scenario_conditions(self, grid_size: int, scenario: dict | None = None,
                            box: Sequence[float] = DEFAULT_MAP_BOX) -> tuple[Tensor, Tensor, Tensor]:
        """Raw conditions of a scenario event recorded on a ``grid_size²`` station grid: ``(cond [G², C], lat, lon)``."""
        scenario = {**DEFAULT_SCENARIO, **(scenario or {})}
        lat = torch.linspace(box[0], box[1], grid_size, dtype=torch.float64)
        lon = torch.linspace(box[2], box[3], grid_size, dtype=torch.float64)
        glat, glon = torch.meshgrid(lat, lon, indexing="ij")
        values = {**scenario, "station_latitude": glat.flatten(), "station_longitude": glon.flatten()}
        missing = [n for n in self.condition_names if n not in values]
        if missing:
            raise ValueError(f"the scenario map needs {self.condition_names}; cannot set {missing}")
        n = glat.numel()
        cond = torch.stack([torch.as_tensor(values[name], dtype=torch.float64).expand(n)
                            for name in self.condition_names], dim=-1)
        return cond, glat, glon

    def _log_scenario_map(self, trainer) -> None:
        if self.map_grid_size == 0 or not self.condition_names:
            return
        try:
            raw, glat, glon = self.scenario_conditions(self.map_grid_size)
        except ValueError as error:
            log.info("no scenario FAS map: %s", error)
            return
        waves = self.generate(self.scale_conditions(raw.to(self.device)), 1, generator=self._generator)
        ln_fas = smoothed_ln_fas(waves, self.dt, (5.0,))[:, 0].reshape(glat.shape).cpu()
        fig = new_figure(figsize=(5, 4))
        ax = fig.add_subplot(1, 1, 1)
        mesh = ax.pcolormesh(glon.numpy(), glat.numpy(), ln_fas.numpy(), shading="auto")
        ax.plot(DEFAULT_SCENARIO["source_longitude"], DEFAULT_SCENARIO["source_latitude"], "r*", ms=12,
                label="epicentre")
        ax.legend(fontsize=7, loc="upper right")
        ax.set_xlabel("longitude (°)")
        ax.set_ylabel("latitude (°)")
        fig.colorbar(mesh, ax=ax, label="ln FAS at 5 Hz (m)")
        ax.set_title(f"scenario M{DEFAULT_SCENARIO['magnitude']} (one sample per station)")
        log_figure(trainer, "test/fas_map_5hz", fig)
