"""Functional core of AlphaPruning: ESD metrics, power-law fits, layer-wise allocation and base pruners.

Use :func:`alpha_prune` on any ``nn.Module`` (a Transformers model included), or the
:class:`framework.callbacks.alphapruning.AlphaPruning` Lightning callback.
"""

from framework.callbacks.pruning.allocation import Allocation, allocate, metric_values_with_fallback
from framework.callbacks.pruning.calibration import ActivationRecorder, InputStatistics
from framework.callbacks.pruning.magnitude import magnitude_mask
from framework.callbacks.pruning.masking import apply_mask, make_permanent, mask_sparsity, restore_pruning_state
from framework.callbacks.pruning.module_selection import NoPrunableModuleError, block_ids, select_prunable_modules
from framework.callbacks.pruning.power_law import PowerLawFit, TooFewEigenvaluesError, fit_power_law, hill_alpha
from framework.callbacks.pruning.prune_model import LayerReport, PruningReport, alpha_prune, compute_layer_metrics
from framework.callbacks.pruning.sparsegpt import SparseGPTResult, sparsegpt_prune
from framework.callbacks.pruning.spectral_metrics import METRICS, SpectralMetrics, layer_spectral_metrics, weight_spectral_metrics
from framework.callbacks.pruning.spectrum import weight_eigenvalues
from framework.callbacks.pruning.wanda import wanda_mask, wanda_scores

__all__ = [
    "METRICS", "ActivationRecorder", "Allocation", "InputStatistics", "LayerReport", "NoPrunableModuleError",
    "PowerLawFit", "PruningReport", "SparseGPTResult", "SpectralMetrics", "TooFewEigenvaluesError", "allocate",
    "alpha_prune", "apply_mask", "block_ids", "compute_layer_metrics", "fit_power_law", "hill_alpha",
    "layer_spectral_metrics", "magnitude_mask", "make_permanent", "mask_sparsity", "metric_values_with_fallback",
    "restore_pruning_state", "select_prunable_modules", "sparsegpt_prune", "wanda_mask", "wanda_scores",
    "weight_eigenvalues", "weight_spectral_metrics",
]
