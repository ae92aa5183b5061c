"""Callbacks declare the strategies they cannot run under; the CLI checks them before anything trains.

A callback sets ``unsupported_strategies = {"fsdp": "why"}`` (keys as returned by :func:`strategy_name`). The check
runs when the Trainer exists and before ``fit`` / ``validate`` / ``test``, so a bad combination is one clear error
instead of a failure deep inside a sharded model.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["check_callback_strategies", "strategy_name"]

_NAMES = {
    "FSDPStrategy": "fsdp",
    "ModelParallelStrategy": "model_parallel",
    "DeepSpeedStrategy": "deepspeed",
    "DDPStrategy": "ddp",
    "SingleDeviceStrategy": "single_device",
}


def strategy_name(strategy) -> str:
    """``"fsdp"``, ``"ddp"``, ``"deepspeed"``, ``"model_parallel"``, ``"single_device"`` (subclasses map to their
    Lightning base), else the class name."""
    for cls in type(strategy).__mro__:
        if cls.__name__ in _NAMES:
            return _NAMES[cls.__name__]
    return type(strategy).__name__


def check_callback_strategies(strategy, callbacks: Iterable) -> None:
    """Raise ``ValueError`` naming the callback and the strategy if any callback does not support ``strategy``."""
    name = strategy_name(strategy)
    for callback in callbacks:
        unsupported = getattr(callback, "unsupported_strategies", None) or {}
        if name in unsupported:
            raise ValueError(
                f"callback {type(callback).__name__} does not support trainer.strategy={name}: {unsupported[name]}; "
                f"use trainer.strategy=ddp (or a single device), or remove the callback"
            )
