"""CGM-GM ground-motion data: a stochastic point-source SFBA catalog, real-record loaders, the STFT representation."""

from datamodules.ground_motion.catalog import SyntheticWorld, generate_synthetic_catalog
from datamodules.ground_motion.datamodule import GroundMotionCatalog, GroundMotionDataset
from datamodules.ground_motion.records_loader import load_csv_records, load_obspy_records
from datamodules.ground_motion.representation import (
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
