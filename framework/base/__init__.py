"""Shared bases of the project's LightningModules and DataModules."""

from framework.base.datamodule import FrameworkDataModule, SplitDataModule
from framework.base.dataset_cache import dataset_fingerprint, default_cache_dir, load_or_generate
from framework.base.lit_module import STAGES, FrameworkModule

__all__ = [
    "FrameworkDataModule",
    "FrameworkModule",
    "SplitDataModule",
    "STAGES",
    "dataset_fingerprint",
    "default_cache_dir",
    "load_or_generate",
]
