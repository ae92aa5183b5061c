"""CGM-GM ground-motion data: a stochastic point-source SFBA catalog, real-record loaders, the STFT representation."""

from framework.datamodules.ground_motion.catalog import SyntheticWorld, generate_synthetic_catalog
from framework.datamodules.ground_motion.datamodule import GroundMotionCatalog, GroundMotionDataset
from framework.datamodules.ground_motion.records_loader import load_csv_records, load_obspy_records
from framework.models.components.cgm_gm.representation import (
    CONDITION_RANGES,
    MAIN_CONDITIONS,
    ConditionScaler,
    LogSpectrogramScaler,
    SpectrogramTransform,
)

__all__ = [
    "CONDITION_RANGES",
    "MAIN_CONDITIONS",
    "ConditionScaler",
    "GroundMotionCatalog",
    "GroundMotionDataset",
    "LogSpectrogramScaler",
    "SpectrogramTransform",
    "SyntheticWorld",
    "generate_synthetic_catalog",
    "load_csv_records",
    "load_obspy_records",
]
