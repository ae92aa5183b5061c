"""Deep diagonal SSM (S4D) for sequence classification and regression, with tunable frequency bias.

Encoder (Linear or Embedding) -> ``n_layers`` residual blocks (norm, S4D, GELU, dropout, GLU mixing; pre- or
post-norm) -> pooling -> decoder. The S4D initialisation ``a_n = -0.5 + i·α·π·(n + imag_offset)`` is set by
``alpha``; attach ``framework.callbacks.sobolev_filter.SobolevFilter`` for the β filter. The SSM parameters (A, Δ) form
their own optimizer group with ``ssm_lr`` and no weight decay, as in S4 / FreqBiasSSM; everything else uses the
optimizer's defaults. Use ``framework.models.components.ssm.CosineWarmupLR`` with ``scheduler_interval: step`` for the LRA
schedule.

Batches: ``(x, y)`` or ``(x, y, lengths)``; ``x`` is ``[B, L]`` / ``[B, L, num_features]`` floats, or ``[B, L]``
token ids when ``vocab_size`` is set; ``y`` is ``[B]`` class ids (classification) or ``[B, num_outputs]`` targets
(regression); ``lengths [B]`` marks the valid prefix of padded sequences (pooling ignores the rest).

Logged: ``<stage>/loss``; classification ``<stage>/accuracy``; regression ``<stage>/mse``, ``<stage>/mae`` and
``<stage>/mae_<output name>`` per output (the waves task's per-wave error).

Config example::

    model:
      class_path: framework.models.ssm_sequence_model.SSMSequenceModel
      init_args:
        task: classification
        d_model: 128
        n_layers: 6
        alpha: 3.0
        ssm_lr: 0.004
        optimizer: {class_path: torch.optim.AdamW, init_args: {lr: 0.008, weight_decay: 0.03}}
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError

from framework.base import FrameworkModule
from framework.validation import require_choice, require_non_negative, require_positive
from framework.models.components.ssm.blocks import DeepSSM
from framework.models.components.ssm.s4d_kernel import S4DKernel

__all__ = ["SSMSequenceModel"]

TASKS = ("classification", "regression")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


class SSMSequenceModel(FrameworkModule):
    """Deep S4D model; ``forward(x, lengths=None)`` returns logits ``[B, num_classes]`` or outputs ``[B, num_outputs]``.

    Args:
        task: ``"classification"`` or ``"regression"``.
        num_classes: classes (classification; linked from the DataModule).
        num_outputs: regression targets per sequence.
        output_names: names of the regression outputs for per-output logging (default ``"0", "1", ...``).
        num_features: input features per step (float inputs; linked from the DataModule).
        vocab_size: token vocabulary (token inputs; linked from the DataModule).
        seq_len: the longest sequence the model accepts (S4D ``max_length``; linked from the DataModule).
        d_model, n_layers: width H and depth.
        state_size: N complex modes per feature (FreqBiasSSM uses 64).
        channels: S4D output channels per feature (LRA "n_ssm"-style multi-head kernels).
        bidirectional: add an anti-causal kernel per layer (LRA).
        skip: the S4D D skip term (False: D = 0, all signal goes through the kernel).
        alpha: α > 0, the imaginary-part scale of the initial A (the frequency-bias knob).
        imag_offset: mode-index shift in ``Im a_n = α π (n + imag_offset)``.
        dt_min, dt_max: log-uniform Δ range (equal: fixed Δ).
        real_transform, learn_a, learn_dt, c_init_std: see ``S4DKernel``.
        norm: ``"batch"``, ``"layer"`` or ``"none"``; prenorm: norm before (True) or after the residual sum.
        dropout: dropout after the SSM activation and after mixing.
        mixing: ``"glu"``, ``"linear"`` or ``"none"``; residual: use the skip connection.
        pooling: ``"mean"`` or ``"last"`` over valid steps, or ``"none"`` (per-step outputs ``[B, L, num_outputs]``,
            sequence-to-sequence regression such as denoising).
        ssm_lr: learning rate of A and Δ (no weight decay); ``None`` uses the optimizer's.
        compile: compile the backbone with ``torch.compile`` (in place, so checkpoints keep their keys); static
            shapes (``ListOps.length_buckets``) avoid recompiling for every sequence length.
        compile_mode: ``torch.compile`` mode (``None``, ``"default"``, ``"reduce-overhead"`` = CUDA graphs,
            ``"max-autotune"``, ``"max-autotune-no-cudagraphs"``).
        optimizer, scheduler, scheduler_interval, scheduler_monitor: see ``FrameworkModule``.
    """

    def __init__(
        self,
        *,
        task: str = "classification",
        num_classes: int | None = None,
        num_outputs: int | None = None,
        output_names: list[str] | None = None,
        num_features: int = 1,
        vocab_size: int | None = None,
        seq_len: int = 4096,
        d_model: int = 128,
        n_layers: int = 4,
        state_size: int = 64,
        channels: int = 1,
        bidirectional: bool = False,
        skip: bool = True,
        alpha: float = 1.0,
        imag_offset: float = 0.0,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        real_transform: str = "exp",
        learn_a: bool = True,
        learn_dt: bool = True,
        c_init_std: float = 1.0,
        norm: str = "layer",
        prenorm: bool = True,
        dropout: float = 0.0,
        mixing: str = "glu",
        residual: bool = True,
        pooling: str = "mean",
        ssm_lr: float | None = 1e-3,
        compile: bool = False,
        compile_mode: str | None = None,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "step",
        scheduler_monitor: str | None = None,
    ) -> None:
        super().__init__(optimizer=optimizer, scheduler=scheduler, scheduler_interval=scheduler_interval,
                         scheduler_monitor=scheduler_monitor)
        self.save_hyperparameters()
        require_choice("task", task, TASKS)
        if task == "classification":
            if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
                raise ValueError(f"classification needs num_classes, an integer >= 2; got {num_classes!r}")
            d_output = num_classes
        else:
            if not isinstance(num_outputs, int) or isinstance(num_outputs, bool) or num_outputs < 1:
                raise ValueError(f"regression needs num_outputs, a positive integer; got {num_outputs!r}")
            d_output = num_outputs
            if output_names is not None and len(output_names) != num_outputs:
                raise ValueError(f"output_names must have num_outputs={num_outputs} entries, got {output_names!r}")
        if not isinstance(seq_len, int) or seq_len < 1:
            raise ValueError(f"seq_len (the longest accepted sequence) must be a positive integer, got {seq_len!r}")
        if ssm_lr is not None:
            require_positive("ssm_lr", ssm_lr)
        require_non_negative("dropout", dropout)
        self.task = task
        self.num_classes = num_classes
        self.num_outputs = num_outputs
        self.output_names = [str(n) for n in output_names] if output_names else [str(i) for i in range(d_output)]
        self.ssm_lr = ssm_lr
        self.backbone = DeepSSM(
            d_output=d_output, d_model=d_model, n_layers=n_layers, d_input=num_features, vocab_size=vocab_size,
            pooling=pooling, norm=norm, prenorm=prenorm, dropout=dropout, mixing=mixing, residual=residual,
            channels=channels, bidirectional=bidirectional, skip=skip, state_size=state_size, alpha=alpha,
            imag_offset=imag_offset, dt_min=dt_min, dt_max=dt_max, real_transform=real_transform, learn_a=learn_a,
            learn_dt=learn_dt, max_length=seq_len, c_init_std=c_init_std,
        )
        if compile_mode is not None:
            require_choice("compile_mode", compile_mode, COMPILE_MODES)
        if compile:
            self.backbone.compile(dynamic=False, mode=compile_mode)
        # validate_args=False: the input checks (torch.unique over the targets) synchronise with the GPU every step.
        if task == "classification":
            metrics = MetricCollection({"accuracy": MulticlassAccuracy(num_classes=num_classes, average="micro",
                                                                       validate_args=False)})
        else:
            metrics = MetricCollection({
                "mse": MeanSquaredError(),
                "mae": MeanAbsoluteError(),
                "mae_per_output": MeanAbsoluteError(num_outputs=num_outputs),
            }, compute_groups=False)
        self.register_stage_metrics(metrics)

    # ------------------------------------------------------------------ model
    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.backbone(x, lengths)

    def ssm_layers(self):
        """The S4D layers, first to last."""
        return self.backbone.ssm_layers()

    def parameter_groups(self) -> list[dict]:
        """A and Δ of every S4D kernel: lr ``ssm_lr``, no weight decay; the rest: the optimizer's defaults."""
        ssm = {id(p) for m in self.modules() if isinstance(m, S4DKernel) for p in m.ssm_parameters() if p.requires_grad}
        trainable = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        ssm_params = [p for _, p in trainable if id(p) in ssm]
        other = [p for _, p in trainable if id(p) not in ssm]
        ssm_group = {"params": ssm_params, "weight_decay": 0.0}
        if self.ssm_lr is not None:
            ssm_group["lr"] = self.ssm_lr
        return [g for g in ({"params": other}, ssm_group) if g["params"]]

    # ------------------------------------------------------------------ steps
    def _unpack(self, batch: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor | None]:
        if not isinstance(batch, (list, tuple)) or len(batch) not in (2, 3):
            raise ValueError("SSMSequenceModel expects batches (x, y) or (x, y, lengths)")
        return batch[0], batch[1], (batch[2] if len(batch) == 3 else None)

    def _loss(self, output: Tensor, y: Tensor) -> Tensor:
        if self.task == "classification":
            if y.dim() != 1 or y.shape[0] != output.shape[0]:
                raise ValueError(f"classification targets must be [B] class ids, got {list(y.shape)}")
            return F.cross_entropy(output.float(), y)
        if y.shape != output.shape:
            raise ValueError(f"regression targets must match the outputs {list(output.shape)} ([B, num_outputs] or, "
                             f"with pooling 'none', [B, L, num_outputs]), got {list(y.shape)}")
        return F.mse_loss(output.float(), y.float())

    def _split_name(self, stage: str, dataloader_idx: int) -> str:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        names = getattr(datamodule, f"{stage}_split_names", None)
        if names is not None and dataloader_idx < len(names):
            return str(names[dataloader_idx])
        return stage if dataloader_idx == 0 else f"{stage}_{dataloader_idx}"

    def _step(self, batch: Sequence[Tensor], stage: str, dataloader_idx: int = 0) -> Tensor:
        x, y, lengths = self._unpack(batch)
        output = self(x, lengths)
        loss = self._loss(output, y)
        split = self._split_name(stage, dataloader_idx) if stage != "train" else stage
        self.log(f"{split}/loss", loss, prog_bar=True, batch_size=len(y), add_dataloader_idx=False)
        if dataloader_idx != 0:
            return loss  # extra evaluation splits (e.g. the two stripe directions) report their loss
        metrics = self.metrics_for(stage)
        if self.task == "classification":
            metrics.update(output.detach().float(), y)
        else:
            flat_output = output.detach().float().reshape(-1, output.shape[-1])
            flat_target = y.float().reshape(-1, y.shape[-1])
            for metric in metrics.values():
                metric.update(flat_output, flat_target)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        self._step(batch, "val", dataloader_idx)

    def test_step(self, batch, batch_idx, dataloader_idx: int = 0):
        self._step(batch, "test", dataloader_idx)

    def predict_step(self, batch, batch_idx, dataloader_idx: int = 0) -> Tensor:
        x, lengths = (batch[0], batch[2] if len(batch) == 3 else None) if isinstance(batch, (list, tuple)) else (batch, None)
        return self(x, lengths)

    # ------------------------------------------------------------------ epoch ends
    def per_output_error(self, stage: str) -> dict[str, float] | None:
        """The last computed per-output MAE of ``stage`` (regression), ``{output name: MAE}``."""
        return getattr(self, "_per_output_error", {}).get(stage)

    def _epoch_end(self, stage: str) -> None:
        metrics = self.metrics_for(stage)
        if self.task == "classification":
            if metrics["accuracy"].update_count:
                self.log(f"{stage}/accuracy", metrics["accuracy"].compute(), prog_bar=stage != "train")
        elif metrics["mse"].update_count:
            self.log(f"{stage}/mse", metrics["mse"].compute())
            self.log(f"{stage}/mae", metrics["mae"].compute(), prog_bar=stage != "train")
            per_output = metrics["mae_per_output"].compute().reshape(-1)
            values = {name: float(v) for name, v in zip(self.output_names, per_output)}
            self.log_dict({f"{stage}/mae_{name}": v for name, v in values.items()})
            if not hasattr(self, "_per_output_error"):
                self._per_output_error = {}
            self._per_output_error[stage] = values
        metrics.reset()

    def on_train_epoch_end(self) -> None:
        self._epoch_end("train")

    def on_validation_epoch_end(self) -> None:
        self._epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")
