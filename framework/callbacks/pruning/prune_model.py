"""``alpha_prune``: AlphaPruning of a bare ``nn.Module`` or a Transformers model, outside Lightning.

Steps: select modules → spectral metrics of the dense weights → per-layer sparsities (:func:`allocate`; or uniform)
→ base pruner (magnitude, Wanda or SparseGPT) → masks through ``torch.nn.utils.prune``.

Calibration (Wanda, SparseGPT) runs the model on a few batches. With ``sequential=True`` (default "auto": when
every selected module lives in one ``ModuleList`` of blocks) the blocks are pruned one after the other and each
block sees the outputs of the already-pruned blocks before it, as in the public code: the inputs of block 0 are
captured by a pre-hook that stops the forward, then every block is run on them, pruned, and run again to produce
the next block's inputs. Otherwise one dense forward pass over the batches gives every layer's statistics.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from framework.callbacks.pruning.allocation import Allocation, allocate, metric_values_with_fallback
from framework.callbacks.pruning.calibration import ActivationRecorder, InputStatistics, check_calibration_support
from framework.callbacks.pruning.magnitude import magnitude_mask
from framework.callbacks.pruning.masking import apply_mask, mask_sparsity
from framework.callbacks.pruning.module_selection import block_ids, find_block_lists, select_prunable_modules
from framework.callbacks.pruning.sparsegpt import sparsegpt_prune
from framework.callbacks.pruning.spectral_metrics import METRICS, SpectralMetrics, layer_spectral_metrics
from framework.callbacks.pruning.wanda import WANDA_COMPARISONS, wanda_mask

__all__ = [
    "PRUNERS", "ALLOCATIONS", "MAPPINGS", "LayerReport", "PruningReport", "alpha_prune", "compute_layer_metrics",
    "default_forward", "validate_pruning_arguments",
]

PRUNERS = ("magnitude", "wanda", "sparsegpt")
ALLOCATIONS = ("alpha", "uniform")
MAPPINGS = ("layer", "block")
SEQUENTIAL = ("auto", True, False)


@dataclass
class LayerReport:
    """One pruned layer: its metric, allocated and achieved sparsity, size and block."""

    metric: float
    allocated: float
    achieved: float
    size: int
    block: int | None
    fallback: bool
    spectral: SpectralMetrics | None


@dataclass
class PruningReport:
    """What :func:`alpha_prune` did.

    Attributes:
        layers: per-layer reports keyed by module name.
        allocation: the :class:`Allocation` (None for uniform).
        target_sparsity: S.
        achieved_sparsity: parameter-weighted fraction of zeros in the masks.
        fallbacks: layers whose metric fell back to the median (too small to fit).
        eigenvalues: name → ``[N]`` CPU eigenvalues when requested.
        seconds: wall time per phase ("metrics", "pruning").
    """

    layers: dict[str, LayerReport]
    allocation: Allocation | None
    target_sparsity: float
    achieved_sparsity: float
    fallbacks: list[str] = field(default_factory=list)
    eigenvalues: dict[str, torch.Tensor] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


class _StopForward(Exception):
    """Raised by the capture hook to end a forward pass at the first block."""


#: Default cap on any one layer's sparsity: a layer pruned to 1.0 is a zeroed matrix (the public code's formula reaches
#: 1.06 on LLaMA-7B at S = 0.8, ε = 0.3); the excess goes to the other layers, so the mean stays at the target.
DEFAULT_MAX_SPARSITY = 0.99


def validate_pruning_arguments(
    *, target_sparsity: float, epsilon: float, metric: str, pruner: str, allocation: str, mapping: str,
    wanda_comparison: str = "row", max_sparsity: float = DEFAULT_MAX_SPARSITY,
) -> None:
    """Raise ValueError naming the first bad argument."""
    for name, value in (("target_sparsity", target_sparsity), ("epsilon", epsilon)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
                or not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must lie in [0, 1), got {value!r}")
    if not isinstance(max_sparsity, (int, float)) or isinstance(max_sparsity, bool) \
            or not math.isfinite(max_sparsity) or not target_sparsity <= max_sparsity <= 1.0 or max_sparsity <= 0:
        raise ValueError(f"max_sparsity must lie in [target_sparsity, 1] = [{target_sparsity}, 1] (and be > 0), "
                         f"got {max_sparsity!r}")
    for name, value, choices in (
        ("metric", metric, METRICS), ("pruner", pruner, PRUNERS), ("allocation", allocation, ALLOCATIONS),
        ("mapping", mapping, MAPPINGS), ("wanda_comparison", wanda_comparison, WANDA_COMPARISONS),
    ):
        if value not in choices:
            raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def default_forward(model: nn.Module, batch: Any) -> Any:
    """Run ``model`` on a calibration batch: dict → ``model(**batch)``; tensor → ``model(batch)``; tuple / list →
    ``model(batch[0])``, or ``model(*batch)`` when the model needs more arguments."""
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, torch.Tensor):
        return model(batch)
    if isinstance(batch, (tuple, list)):
        try:
            return model(batch[0])
        except TypeError:
            return model(*batch)
    raise TypeError(f"cannot feed a calibration batch of type {type(batch).__name__}; pass forward=...")


def compute_layer_metrics(
    modules: Mapping[str, nn.Module], *, metric: str = "alpha_peak", eigenvalue_method: str = "gram",
    eigen_dtype: torch.dtype = torch.float32, faithful_window: bool = True, min_eigenvalues: int = 10,
    keep_eigenvalues: bool = False,
) -> tuple[dict[str, SpectralMetrics], dict[str, torch.Tensor]]:
    """Spectral metrics of each module's (effective) weight, computed on the weight's device."""
    weights = {name: module.weight.detach() for name, module in modules.items()}
    return layer_spectral_metrics(
        weights, metric=metric, eigenvalue_method=eigenvalue_method, dtype=eigen_dtype,
        faithful_window=faithful_window, min_eigenvalues=min_eigenvalues, keep_eigenvalues=keep_eigenvalues,
    )


def _device_batches(batches: Iterable[Any], device: torch.device, limit: int | None) -> list[Any]:
    from lightning.fabric.utilities.apply_func import move_data_to_device

    out = []
    for i, batch in enumerate(batches):
        if limit is not None and i >= limit:
            break
        out.append(move_data_to_device(batch, device))
    return out


def _prune_layer(name: str, module: nn.Module, sparsity: float, pruner: str, stats: InputStatistics | None,
                 *, wanda_comparison: str, blocksize: int, percdamp: float) -> None:
    weight = module.weight.detach()
    if pruner == "magnitude":
        apply_mask(module, magnitude_mask(weight, sparsity))
        return
    if stats is None:
        raise RuntimeError(f"no calibration statistics were recorded for {name}")
    if pruner == "wanda":
        apply_mask(module, wanda_mask(weight, stats.sq_norms, sparsity, comparison=wanda_comparison))
    else:
        result = sparsegpt_prune(weight, stats.hessian(), sparsity, blocksize=blocksize, percdamp=percdamp)
        apply_mask(module, result.mask, new_weight=result.weight)


class _NoAttentionFastPath:
    """Disable the fused fast path of ``nn.TransformerEncoderLayer`` / ``nn.MultiheadAttention`` in eval mode, which
    reads weights directly and would bypass the calibration hooks of its Linear layers."""

    def __enter__(self):
        self.previous = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)

    def __exit__(self, *exc):
        torch.backends.mha.set_fastpath_enabled(self.previous)


def _record(model: nn.Module, modules: Mapping[str, nn.Module], batches: Sequence[Any], forward: Callable,
            record_gram: bool) -> dict[str, InputStatistics]:
    with ActivationRecorder(modules, record_gram=record_gram) as recorder, torch.no_grad(), _NoAttentionFastPath():
        for batch in batches:
            forward(model, batch)
    missing = recorder.missing()
    if missing:
        raise RuntimeError(
            f"calibration never ran these modules: {missing[:5]} — their forward was bypassed (e.g. the fused fast "
            "path of nn.TransformerEncoderLayer in eval mode) or the batches do not reach them; exclude them or "
            "use pruner='magnitude'"
        )
    recorder.all_reduce()
    return recorder.statistics


def _block_output(output: Any) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output[0]


def _blocks_are_chained(model: nn.Module, block_list: nn.ModuleList, batch: Any, forward: Callable) -> bool:
    """True when, on ``batch``, block 1's first input is block 0's output (a residual stack such as a Transformer's
    layers) — the condition for sequential calibration. Parallel members (an ensemble) are not. The forward stops
    at block 1, so the check costs about one block."""
    if len(block_list) < 2:
        return False
    seen: dict[str, torch.Tensor] = {}

    def after_first(module, args, output):
        out = output if isinstance(output, torch.Tensor) else (output[0] if isinstance(output, (tuple, list)) else None)
        if isinstance(out, torch.Tensor):
            seen["output"] = out

    def before_second(module, args, kwargs):
        first = args[0] if args else next(iter(kwargs.values()), None)
        if isinstance(first, torch.Tensor):
            seen["input"] = first
        raise _StopForward

    handles = [block_list[0].register_forward_hook(after_first),
               block_list[1].register_forward_pre_hook(before_second, with_kwargs=True)]
    try:
        with torch.no_grad(), _NoAttentionFastPath():
            forward(model, batch)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    previous, current = seen.get("output"), seen.get("input")
    return previous is not None and current is not None and previous.shape == current.shape \
        and torch.equal(previous, current)


def _sequential_prune(model, block_list: nn.ModuleList, list_name: str, modules, sparsities, batches, forward,
                      pruner, options) -> None:
    captured: list[tuple[tuple, dict]] = []

    def capture(module, args, kwargs):
        kwargs = dict(kwargs)
        for key in ("past_key_value", "past_key_values"):
            if key in kwargs:
                kwargs[key] = None  # a KV cache would grow on every re-run of the block
        if "use_cache" in kwargs:
            kwargs["use_cache"] = False
        captured.append((tuple(args), kwargs))
        raise _StopForward

    handle = block_list[0].register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with torch.no_grad(), _NoAttentionFastPath():
            for batch in batches:
                try:
                    forward(model, batch)
                except _StopForward:
                    pass
    finally:
        handle.remove()
    if len(captured) != len(batches):
        raise RuntimeError(f"sequential calibration: block 0 of {list_name!r} did not run on every batch")
    prefix = f"{list_name}." if list_name else ""
    for index, block in enumerate(block_list):
        child_prefix = f"{prefix}{index}."
        members = {n: m for n, m in modules.items() if n.startswith(child_prefix)}
        with torch.no_grad(), _NoAttentionFastPath():
            if members:
                with ActivationRecorder(members, record_gram=pruner == "sparsegpt") as recorder:
                    for args, kwargs in captured:
                        block(*args, **kwargs)
                missing = recorder.missing()
                if missing:
                    raise RuntimeError(f"calibration never ran these modules: {missing[:5]}")
                recorder.all_reduce()
                for name, module in members.items():
                    _prune_layer(name, module, sparsities[name], pruner, recorder.statistics[name], **options)
                del recorder
            if index + 1 < len(block_list):
                captured = [((_block_output(block(*args, **kwargs)), *args[1:]), kwargs) for args, kwargs in captured]


def alpha_prune(
    model: nn.Module,
    *,
    target_sparsity: float,
    epsilon: float = 0.3,
    metric: str = "alpha_peak",
    pruner: str = "wanda",
    allocation: str = "alpha",
    mapping: str = "layer",
    blocks: Mapping[str, int] | Sequence[Sequence[str]] | None = None,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    calibration: Iterable[Any] | None = None,
    num_calibration_batches: int | None = None,
    forward: Callable[[nn.Module, Any], Any] = default_forward,
    sequential: str | bool = "auto",
    wanda_comparison: str = "row",
    sparsegpt_blocksize: int = 128,
    percdamp: float = 0.01,
    eigenvalue_method: str = "gram",
    eigen_dtype: torch.dtype = torch.float32,
    faithful_window: bool = True,
    min_eigenvalues: int = 10,
    metrics: Mapping[str, SpectralMetrics] | None = None,
    keep_eigenvalues: bool = False,
    max_sparsity: float = DEFAULT_MAX_SPARSITY,
) -> PruningReport:
    """Prune ``model`` in place with AlphaPruning's layer-wise allocation and a base pruner.

    Args:
        model: any ``nn.Module`` (a Transformers model, a LightningModule, ...).
        target_sparsity: S in [0, 1), the parameter-weighted mean sparsity of the selected layers.
        epsilon: ε in [0, 1), the relative spread of the allocation.
        metric: one of :data:`~framework.callbacks.pruning.spectral_metrics.METRICS` (default ``alpha_peak``).
        pruner: ``"magnitude"``, ``"wanda"`` or ``"sparsegpt"``.
        allocation: ``"alpha"`` (metric-based) or ``"uniform"`` (every layer at S, the baseline).
        mapping: ``"layer"`` or ``"block"`` (metrics averaged per block before allocation).
        blocks: explicit blocks for ``mapping="block"`` (name → id or a list of name lists); default: the children
            of the model's ModuleLists.
        include, exclude: regexes on module names (see :func:`select_prunable_modules`).
        calibration: iterable of batches (required by Wanda and SparseGPT).
        num_calibration_batches: use at most this many batches.
        forward: ``forward(model, batch)`` runs one calibration batch (default :func:`default_forward`).
        sequential: ``"auto"``, True or False (see the module docstring).
        wanda_comparison: ``"row"`` (per output, the LLM default) or ``"layer"``.
        sparsegpt_blocksize, percdamp: SparseGPT settings.
        eigenvalue_method, eigen_dtype, faithful_window, min_eigenvalues: spectral-metric settings.
        metrics: precomputed metrics (name → SpectralMetrics) to skip the ESD step (e.g. reused across sparsities).
        keep_eigenvalues: return each layer's eigenvalues in the report (for plots).
        max_sparsity: cap on any one layer's sparsity (default 0.99: no matrix is zeroed whole); layers the formula
            puts above it are set to it and the excess is spread over the others (the mean stays at the target);
            the warning and ``report.allocation.clipped`` name them. 1.0 allows whole matrices to be pruned.

    Returns:
        A :class:`PruningReport`.
    """
    validate_pruning_arguments(target_sparsity=target_sparsity, epsilon=epsilon, metric=metric, pruner=pruner,
                               allocation=allocation, mapping=mapping, wanda_comparison=wanda_comparison,
                               max_sparsity=max_sparsity)
    if sequential not in SEQUENTIAL:
        raise ValueError(f"sequential must be 'auto', True or False, got {sequential!r}")
    modules = select_prunable_modules(model, include=include, exclude=exclude)
    names = list(modules)
    batches: list[Any] = []
    if pruner != "magnitude":
        for name, module in modules.items():
            check_calibration_support(name, module)
        if calibration is None:
            raise ValueError(f"pruner={pruner!r} needs calibration data (a few batches of inputs); pass "
                             "calibration=... or use pruner='magnitude'")
        device = next(iter(modules.values())).weight.device
        batches = _device_batches(calibration, device, num_calibration_batches)
        if not batches:
            raise ValueError(f"pruner={pruner!r} needs calibration data, but the calibration iterable is empty")

    seconds: dict[str, float] = {}
    start = time.perf_counter()
    spectra: dict[str, torch.Tensor] = {}
    if metrics is None and (allocation == "alpha" or keep_eigenvalues):
        metrics, spectra = compute_layer_metrics(
            modules, metric=metric, eigenvalue_method=eigenvalue_method, eigen_dtype=eigen_dtype,
            faithful_window=faithful_window, min_eigenvalues=min_eigenvalues, keep_eigenvalues=keep_eigenvalues,
        )
    seconds["metrics"] = time.perf_counter() - start

    sizes = {name: module.weight.numel() for name, module in modules.items()}
    block_of = None
    if mapping == "block" or blocks is not None:
        block_of = dict(blocks) if isinstance(blocks, Mapping) else (
            {n: b for b, group in enumerate(blocks) for n in group} if blocks is not None else block_ids(names, model)
        )
    fallbacks: list[str] = []
    plan: Allocation | None = None
    if allocation == "alpha":
        missing = [n for n in names if n not in metrics]
        if missing:
            raise ValueError(f"metrics lack layers {missing[:5]}")
        values, fallbacks = metric_values_with_fallback({n: metrics[n].value(metric) for n in names})
        plan = allocate(values, sizes, target_sparsity=target_sparsity, epsilon=epsilon,
                        blocks=block_of if mapping == "block" else None, max_sparsity=max_sparsity)
        sparsities = plan.sparsities
    else:
        sparsities = {n: float(target_sparsity) for n in names}

    start = time.perf_counter()
    options = dict(wanda_comparison=wanda_comparison, blocksize=sparsegpt_blocksize, percdamp=percdamp)
    if pruner == "magnitude":
        for name, module in modules.items():
            _prune_layer(name, module, sparsities[name], pruner, None, **options)
    else:
        lists = find_block_lists(model, names)
        in_one_list = len(lists) == 1 and all(n.startswith(f"{lists[0][0]}.") for n in names)
        if sequential is True and len(lists) != 1:
            raise ValueError(f"sequential=True needs the pruned modules in one ModuleList, found {len(lists)} lists")
        was_training = model.training
        model.eval()
        try:
            use_sequential = bool(sequential) if sequential != "auto" else (
                in_one_list and len(lists[0][1]) > 1 and _blocks_are_chained(model, lists[0][1], batches[0], forward))
            if sequential is True and not _blocks_are_chained(model, lists[0][1], batches[0], forward):
                raise ValueError(f"sequential=True: the blocks of {lists[0][0]!r} are not chained (a block's input "
                                 "is not the previous block's output); use sequential=False")
            if use_sequential:
                list_name, block_list = lists[0]
                outside = {n: m for n, m in modules.items() if not n.startswith(f"{list_name}.")}
                outside_stats = _record(model, outside, batches, forward, pruner == "sparsegpt") if outside else {}
                inside = {n: m for n, m in modules.items() if n not in outside}
                _sequential_prune(model, block_list, list_name, inside, sparsities, batches, forward, pruner, options)
                for name, module in outside.items():
                    _prune_layer(name, module, sparsities[name], pruner, outside_stats[name], **options)
            else:
                stats = _record(model, modules, batches, forward, pruner == "sparsegpt")
                for name, module in modules.items():
                    _prune_layer(name, module, sparsities[name], pruner, stats[name], **options)
                    del stats[name]
        finally:
            model.train(was_training)
    seconds["pruning"] = time.perf_counter() - start

    layers = {
        name: LayerReport(
            metric=plan.metrics[name] if plan else float("nan"), allocated=sparsities[name],
            achieved=mask_sparsity(module), size=sizes[name],
            block=block_of.get(name) if block_of else None, fallback=name in fallbacks,
            spectral=metrics.get(name) if metrics else None,
        )
        for name, module in modules.items()
    }
    total = sum(sizes.values())
    achieved = sum(layers[n].achieved * sizes[n] for n in names) / total
    if fallbacks:
        warnings.warn(f"alpha_prune: {len(fallbacks)} layer(s) used the median metric as a fallback: {fallbacks[:5]}",
                      stacklevel=2)
    return PruningReport(layers=layers, allocation=plan, target_sparsity=float(target_sparsity),
                         achieved_sparsity=achieved, fallbacks=fallbacks, eigenvalues=spectra, seconds=seconds)
