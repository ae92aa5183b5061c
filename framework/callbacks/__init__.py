"""Callbacks for any ``lightning.pytorch`` model: attach them with ``Trainer(callbacks=[...])`` or list them under
``trainer.callbacks`` in a config.

| Callback | Method | Page |
|---|---|---|
| :class:`PolarizationMonitor` | ensemble disagreement / polarization | docs/polarization.md |
| :class:`AlphaPruning` | heavy-tailed-spectrum layer-wise pruning | docs/alphapruning.md |
| :class:`HessianProbe`, :class:`LossLandscapeProbe` | Hessian spectrum, landscape topology | docs/landscape.md |
| :class:`SobolevFilter`, :class:`FrequencyResponseProbe` | SSM frequency bias | docs/ssm_frequency_bias.md |
| :class:`RolloutPlots` | flow-matching forecast rollouts | docs/flow_matching.md |
| :class:`ForecastPlots` | quantile forecasts around peak events | docs/spade.md |
| :class:`EpochBoundaryTimeLimit`, :class:`RNGStateCheckpoint` | runs across short GPU slots | docs/framework.md |
| :class:`CompileModules` | ``torch.compile`` of chosen sub-modules | docs/framework.md |

Each callback checks the model in ``setup`` and raises
:class:`~framework.callbacks.model_requirements.UnsupportedModelError` (a ``ValueError``) naming what the model lacks;
the README's compatibility matrix shows which callback serves which kind of model.
"""

from importlib import import_module

# Resolved lazily (PEP 562), so importing one sub-package (e.g. ``framework.callbacks.pruning`` from a GPU benchmark that has
# torch alone) does not import every callback and its dependencies.
_EXPORTS = {
    "AlphaPruning": "framework.callbacks.alphapruning",
    "ForecastPlots": "framework.callbacks.forecast_plots",

    "CompileModules": "framework.callbacks.compile_modules",
    "EpochBoundaryTimeLimit": "framework.callbacks.epoch_time_limit",
    "RNGStateCheckpoint": "framework.callbacks.rng_state",
    "FrequencyResponseProbe": "framework.callbacks.frequency_response",
    "HessianProbe": "framework.callbacks.hessian_probe",
    "LossLandscapeProbe": "framework.callbacks.loss_landscape_probe",
    "PolarizationMonitor": "framework.callbacks.polarization_monitor",
    "RolloutPlots": "framework.callbacks.rollout_plots",
    "SobolevFilter": "framework.callbacks.sobolev_filter",
    "UnsupportedModelError": "framework.callbacks.model_requirements",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'framework.callbacks' has no attribute {name!r}")


__all__ = [
    "AlphaPruning",
    "ForecastPlots",

    "CompileModules",
    "EpochBoundaryTimeLimit",
    "RNGStateCheckpoint",
    "FrequencyResponseProbe",
    "HessianProbe",
    "LossLandscapeProbe",
    "PolarizationMonitor",
    "RolloutPlots",
    "SobolevFilter",
    "UnsupportedModelError",
]
