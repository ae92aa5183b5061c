"""Callbacks for any ``lightning.pytorch`` model: attach them with ``Trainer(callbacks=[...])`` or list them under
``trainer.callbacks`` in a config.

| Callback | Method | Page |
|---|---|---|
| :class:`PolarizationMonitor` | ensemble disagreement / polarization | docs/polarization.md |
| :class:`AlphaPruning` | heavy-tailed-spectrum layer-wise pruning | docs/alphapruning.md |
| :class:`HessianProbe`, :class:`LossLandscapeProbe` | Hessian spectrum, landscape topology | docs/landscape.md |
| :class:`SobolevFilter`, :class:`FrequencyResponseProbe` | SSM frequency bias | docs/ssm_frequency_bias.md |
| :class:`EpochBoundaryTimeLimit`, :class:`RNGStateCheckpoint` | runs across short GPU slots | docs/framework.md |
| :class:`CompileModules` | ``torch.compile`` of chosen sub-modules | docs/framework.md |
"""

from importlib import import_module

# Resolved lazily (PEP 562), so importing one sub-package (e.g. ``framework.callbacks.pruning`` from a GPU benchmark that has
# torch alone) does not import every callback and its dependencies.
_EXPORTS = {
    "AlphaPruning": "framework.callbacks.alphapruning",
    "CompileModules": "framework.callbacks.compile_modules",
    "EpochBoundaryTimeLimit": "framework.callbacks.epoch_time_limit",
    "RNGStateCheckpoint": "framework.callbacks.rng_state",
    "FrequencyResponseProbe": "framework.callbacks.frequency_response",
    "HessianProbe": "framework.callbacks.hessian_probe",
    "LossLandscapeProbe": "framework.callbacks.loss_landscape_probe",
    "PolarizationMonitor": "framework.callbacks.polarization_monitor",
    "SobolevFilter": "framework.callbacks.sobolev_filter",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'framework.callbacks' has no attribute {name!r}")


__all__ = [
    "AlphaPruning",
    "CompileModules",
    "EpochBoundaryTimeLimit",
    "RNGStateCheckpoint",
    "FrequencyResponseProbe",
    "HessianProbe",
    "LossLandscapeProbe",
    "PolarizationMonitor",
    "SobolevFilter",
]
