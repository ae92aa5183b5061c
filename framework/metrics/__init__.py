"""torchmetrics ``Metric``s of the project: a functional core plus a thin stateful class, exact under DDP.

Ensemble disagreement and polarization (``docs/polarization.md``): per-member class predictions ``[M, N]`` or logits
``[M, N, K]`` against labels ``[N]``.
"""

from framework.metrics.ensemble_bounds import POLARIZATION_LAW_ETA, EnsembleStatistics, PolarizationUndefinedWarning
from framework.metrics.ensemble_polarization import (
    BothWrongDisagreement,
    CBound,
    CompetenceBound,
    EnsembleDisagreement,
    EnsemblePolarization,
    MajorityVoteError,
    PointwiseErrorDistribution,
    Polarization,
    PolarizationBound,
    PredictedMajorityVoteError,
    ensemble_polarization_statistics,
)

__all__ = [
    "POLARIZATION_LAW_ETA",
    "BothWrongDisagreement",
    "CBound",
    "CompetenceBound",
    "EnsembleDisagreement",
    "EnsemblePolarization",
    "EnsembleStatistics",
    "MajorityVoteError",
    "PointwiseErrorDistribution",
    "Polarization",
    "PolarizationBound",
    "PolarizationUndefinedWarning",
    "PredictedMajorityVoteError",
    "ensemble_polarization_statistics",
]
