"""The project's optimizers (selectable in YAML by ``class_path``, like any ``torch.optim.Optimizer``).

- :class:`TRSQP` — trust-region SQP with random models for stochastic objectives under deterministic equality
  constraints; :class:`AdaptiveL1SQP` — the line-search stochastic SQP baseline.
- The constrained-model protocol (:class:`EqualityConstrainedProblem`, :func:`constrained_training_step`) lets any
  LightningModule train with them. See ``docs/trsqp.md``.
"""

from framework.optim.constrained_protocol import (
    ConstrainedOracle,
    EqualityConstrainedProblem,
    constrained_training_step,
    oracle_from_module,
)
from framework.optim.line_search_sqp import AdaptiveL1SQP, LineSearchStepInfo
from framework.optim.trsqp import TRSQP, TRSQPStepInfo

__all__ = [
    "TRSQP",
    "AdaptiveL1SQP",
    "ConstrainedOracle",
    "EqualityConstrainedProblem",
    "LineSearchStepInfo",
    "TRSQPStepInfo",
    "constrained_training_step",
    "oracle_from_module",
]
