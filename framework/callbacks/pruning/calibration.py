"""Calibration statistics captured by forward hooks: input feature norms (Wanda) and input Gram matrices (SparseGPT).

For a Linear layer the features are the last dimension of its input (``[..., in]``, every leading position is one
token). For ungrouped Conv1d / Conv2d the features are the unfolded input patches (``in · prod(kernel)``), so
statistics line up with the flattened weight ``[out, in · prod(kernel)]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["InputStatistics", "ActivationRecorder", "unfolded_inputs", "check_calibration_support"]


def check_calibration_support(name: str, module: nn.Module) -> None:
    """Raise a ValueError unless ``module`` is a Linear or an ungrouped Conv1d/Conv2d."""
    if isinstance(module, nn.Linear):
        return
    if isinstance(module, (nn.Conv1d, nn.Conv2d)) and module.groups == 1 and isinstance(module.padding, tuple):
        return
    raise ValueError(
        f"{name} ({type(module).__name__}) cannot be pruned with calibration statistics: wanda and sparsegpt "
        "support Linear and ungrouped Conv1d/Conv2d with numeric padding; exclude it or use pruner='magnitude'"
    )


def unfolded_inputs(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Input rows of ``module`` as ``[tokens, features]`` matching its flattened weight's columns."""
    if isinstance(module, nn.Linear):
        return x.reshape(-1, x.shape[-1])
    if isinstance(module, nn.Conv1d):
        x = x.unsqueeze(-2)  # [B, C, 1, L]
        kernel, dilation = (1, module.kernel_size[0]), (1, module.dilation[0])
        padding, stride = (0, module.padding[0]), (1, module.stride[0])
    else:
        kernel, dilation, padding, stride = module.kernel_size, module.dilation, module.padding, module.stride
    patches = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)  # [B, C*k, L]
    return patches.transpose(1, 2).reshape(-1, patches.shape[1])


@dataclass
class InputStatistics:
    """Accumulated statistics of one module's inputs.

    Attributes:
        sq_norms: ``[F]`` sum over tokens of x_j² (Wanda's ‖X_j‖²).
        gram: ``[F, F]`` sum over tokens of x xᵀ (SparseGPT's H / 2), or None when not requested.
        tokens: number of input rows seen.
    """

    sq_norms: torch.Tensor
    gram: torch.Tensor | None
    tokens: int

    def hessian(self) -> torch.Tensor:
        """H = 2 XᵀX / tokens, ``[F, F]``."""
        if self.gram is None:
            raise ValueError("the Gram matrix was not recorded (record_gram=False)")
        return 2.0 * self.gram / max(self.tokens, 1)


class ActivationRecorder:
    """Context manager: forward hooks on ``modules`` accumulating :class:`InputStatistics` (float32, on the module's
    device).

    Example::

        with ActivationRecorder({"fc": model.fc}, record_gram=True) as recorder:
            for batch in batches:
                model(batch)
        stats = recorder.statistics["fc"]
    """

    def __init__(self, modules: Mapping[str, nn.Module], *, record_gram: bool) -> None:
        for name, module in modules.items():
            check_calibration_support(name, module)
        self.modules = dict(modules)
        self.record_gram = record_gram
        self.statistics: dict[str, InputStatistics] = {}
        self._handles: list = []

    def _hook(self, name: str):
        def hook(module: nn.Module, args, output) -> None:
            rows = unfolded_inputs(module, args[0].detach()).float()
            stats = self.statistics.get(name)
            if stats is None:
                features = rows.shape[1]
                gram = torch.zeros(features, features, device=rows.device) if self.record_gram else None
                stats = self.statistics[name] = InputStatistics(
                    sq_norms=torch.zeros(features, device=rows.device), gram=gram, tokens=0
                )
            stats.sq_norms += rows.square().sum(dim=0)
            if stats.gram is not None:
                stats.gram.addmm_(rows.T, rows)
            stats.tokens += rows.shape[0]

        return hook

    def __enter__(self) -> ActivationRecorder:
        self._handles = [m.register_forward_hook(self._hook(n)) for n, m in self.modules.items()]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def all_reduce(self) -> None:
        """Sum the statistics over the processes of an initialised ``torch.distributed`` group (DDP), so every rank
        computes the same masks from all ranks' calibration data."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return
        for name in self.modules:
            stats = self.statistics[name]
            dist.all_reduce(stats.sq_norms)
            if stats.gram is not None:
                dist.all_reduce(stats.gram)
            tokens = torch.tensor([stats.tokens], dtype=torch.float64, device=stats.sq_norms.device)
            dist.all_reduce(tokens)
            stats.tokens = int(tokens.item())

    def missing(self, names: Iterable[str] | None = None) -> list[str]:
        """Modules that never ran (e.g. bypassed by a fused fast path)."""
        return [n for n in (names or self.modules) if n not in self.statistics]
