"""framework: a Lightning training-and-evaluation framework for recent research methods.

Sub-packages: :mod:`framework.base` (shared LightningModule / DataModule bases), :mod:`framework.metrics`
(torchmetrics metrics), :mod:`framework.optim` (optimizers), :mod:`framework.cli` (``python -m framework``).
"""

__version__ = "0.1.0"
