"""Linear warmup then cosine decay (the S4 / FreqBiasSSM LRA schedule), as an ``LRScheduler`` usable from YAML."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["CosineWarmupLR"]


class CosineWarmupLR(LambdaLR):
    """Multiplier ``step / warmup_steps`` for the first ``warmup_steps`` steps, then
    ``min_ratio + (1 - min_ratio)·½(1 + cos(π·progress))`` down to ``min_ratio`` at ``total_steps`` (held after).
    Step it every optimizer step (``scheduler_interval: step``). Every parameter group is scaled, its own lr kept as
    the base."""

    def __init__(self, optimizer: Optimizer, *, warmup_steps: int, total_steps: int, min_ratio: float = 0.0,
                 last_epoch: int = -1) -> None:
        if not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be a non-negative integer, got {warmup_steps!r}")
        if not isinstance(total_steps, int) or total_steps <= warmup_steps:
            raise ValueError(f"total_steps must be an integer > warmup_steps={warmup_steps}, got {total_steps!r}")
        if not 0.0 <= min_ratio <= 1.0:
            raise ValueError(f"min_ratio must lie in [0, 1], got {min_ratio!r}")
        self.warmup_steps, self.total_steps, self.min_ratio = warmup_steps, total_steps, float(min_ratio)
        super().__init__(optimizer, self._multiplier, last_epoch=last_epoch)

    def _multiplier(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        progress = min(1.0, (step - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
