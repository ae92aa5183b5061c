"""Callbacks for any ``lightning.pytorch`` model: attach them with ``Trainer(callbacks=[...])`` or list them under
``trainer.callbacks`` in a config.

| Callback | Method | Page |
|---|---|---|
| :class:`PolarizationMonitor` | ensemble disagreement / polarization | docs/polarization.md |
| :class:`AlphaPruning` | heavy-tailed-spectrum layer-wise pruning | docs/alphapruning.md |
| :class:`HessianProbe`, :class:`LossLandscapeProbe` | Hessian spectrum, landscape topology | docs/landscape.md |
| :class:`SobolevFilter`, :class:`FrequencyResponseProbe` | SSM frequency bias | docs/ssm_frequency_bias.md |
"""

from callbacks.alphapruning import AlphaPruning
from callbacks.frequency_response import FrequencyResponseProbe
from callbacks.hessian_probe import HessianProbe
from callbacks.loss_landscape_probe import LossLandscapeProbe
from callbacks.polarization_monitor import PolarizationMonitor
from callbacks.sobolev_filter import SobolevFilter

__all__ = [
    "AlphaPruning",
    "FrequencyResponseProbe",
    "HessianProbe",
    "LossLandscapeProbe",
    "PolarizationMonitor",
    "SobolevFilter",
]
