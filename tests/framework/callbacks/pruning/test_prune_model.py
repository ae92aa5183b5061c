"""The plain function on bare nn.Modules (lightning's demo CNN, a Transformers Llama): allocation honoured,
sequential calibration, state-dict round trip, WeightWatcher agreement, bad input."""

from __future__ import annotations

import warnings

import pytest
import torch
from lightning.pytorch.demos.boring_classes import Net
from torch import nn

from framework.callbacks.pruning import alpha_prune, restore_pruning_state, select_prunable_modules
from framework.callbacks.pruning.masking import pruned_modules
from framework.callbacks.pruning.module_selection import NoPrunableModuleError
from framework.callbacks.pruning.prune_model import _blocks_are_chained, default_forward
from framework.callbacks.pruning.spectral_metrics import weight_spectral_metrics


def _images(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 1, 28, 28, generator=g) for _ in range(n)]


def _tiny_llama(seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=97, hidden_size=48, intermediate_size=96, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, use_cache=False)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def _tokens(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(0, 97, (2, 16), generator=g)} for _ in range(n)]


@pytest.mark.parametrize("pruner", ["magnitude", "wanda", "sparsegpt"])
def test_demo_cnn_achieved_equals_allocated(pruner):
    torch.manual_seed(0)
    model = Net()
    # SparseGPT on fc1 (9216 inputs: a 9216² Hessian, 9216 column updates) takes minutes on 2 cores: convs only.
    include = ["conv"] if pruner == "sparsegpt" else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = alpha_prune(model, target_sparsity=0.6, epsilon=0.3, pruner=pruner, calibration=_images(),
                             wanda_comparison="layer", sparsegpt_blocksize=64, include=include)
    # conv1 pools 9 positions x 1 input channel = 9 eigenvalues: too few to fit, warned, median fallback.
    assert report.fallbacks == ["conv1"]
    assert any("too few" in str(w.message) for w in caught)
    expected = {"conv1", "conv2"} if include else {"conv1", "conv2", "fc1"}  # fc2 is the output head
    assert set(report.layers) == expected
    for name, layer in report.layers.items():
        blocks = -(-(layer.size // dict(model.named_modules())[name].weight.shape[0]) // 64)
        slack = 0.5 * (blocks if pruner == "sparsegpt" else 1) * dict(model.named_modules())[name].weight.shape[0]
        assert abs(layer.achieved - layer.allocated) * layer.size <= slack + 1e-6, name
    assert report.achieved_sparsity == pytest.approx(0.6, abs=1e-3)
    # With conv1 at the median of the fitted layers, two layers (convs only) get equal metrics → uniform.
    assert len({round(v.allocated, 6) for v in report.layers.values()}) == (1 if include else 3)
    assert model(_images(1)[0]).shape == (4, 10)


def test_llama_sequential_calibration_and_block_mapping():
    model = _tiny_llama()
    batches = _tokens()
    assert _blocks_are_chained(model, model.model.layers, batches[0], default_forward)
    sequential = alpha_prune(model, target_sparsity=0.5, epsilon=0.2, pruner="wanda", calibration=batches,
                             mapping="block")
    assert sequential.achieved_sparsity == pytest.approx(0.5, abs=0.01)
    for block in range(3):
        ratios = {round(v.allocated, 9) for n, v in sequential.layers.items() if f"layers.{block}." in n}
        assert len(ratios) == 1  # one sparsity per decoder layer
    dense = _tiny_llama()
    parallel = _tiny_llama()
    alpha_prune(parallel, target_sparsity=0.5, epsilon=0.2, pruner="wanda", calibration=batches, mapping="block",
                sequential=False)
    masks_seq = {n: m.weight_mask for n, m in pruned_modules(model).items()}
    masks_par = {n: m.weight_mask for n, m in pruned_modules(parallel).items()}
    # Block 0 sees the same (dense) inputs either way; later blocks see pruned predecessors only when sequential.
    assert all(torch.equal(masks_seq[n], masks_par[n]) for n in masks_seq if "layers.0." in n)
    assert any(not torch.equal(masks_seq[n], masks_par[n]) for n in masks_seq if "layers.2." in n)
    del dense


def test_sparsegpt_on_llama_reconstructs_better_than_magnitude():
    batches = _tokens(3)
    dense = _tiny_llama()
    with torch.no_grad():
        reference = dense(**batches[0]).logits
    errors = {}
    for pruner in ("magnitude", "sparsegpt"):
        model = _tiny_llama()
        alpha_prune(model, target_sparsity=0.5, epsilon=0.2, pruner=pruner, calibration=batches)
        with torch.no_grad():
            errors[pruner] = float((model(**batches[0]).logits - reference).square().mean())
    assert errors["sparsegpt"] < errors["magnitude"]


def test_state_dict_round_trip_restores_masks():
    model = Net()
    alpha_prune(model, target_sparsity=0.5, epsilon=0.2, pruner="magnitude")
    state = model.state_dict()
    fresh = Net()
    with pytest.raises(RuntimeError):
        fresh.load_state_dict(state)  # weight_orig / weight_mask are unexpected without the reparametrisation
    assert sorted(restore_pruning_state(fresh, state)) == ["conv1", "conv2", "fc1"]
    fresh.load_state_dict(state)
    for name, module in pruned_modules(model).items():
        assert torch.equal(dict(fresh.named_modules())[name].weight_mask, module.weight_mask)
        assert next(iter(dict(fresh.named_modules())[name]._parameters)) == "weight_orig"


def test_alpha_matches_weightwatcher():
    ww = pytest.importorskip("weightwatcher")
    import logging

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    g = torch.Generator().manual_seed(0)
    layers = []
    for rows, cols, dof in ((300, 120, 2.5), (200, 160, 4.0), (256, 96, 8.0)):
        linear = nn.Linear(cols, rows, bias=False)
        # Student-t entries: heavy-tailed ESDs like trained layers.
        t = torch.distributions.StudentT(dof).sample((rows, cols)) if True else None
        with torch.no_grad():
            linear.weight.copy_(t)
        layers.append(linear)
    model = nn.Sequential(*layers)
    watcher = ww.WeightWatcher(model=model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        details = watcher.analyze(svd_method="accurate")
    assert len(details) == 3
    for linear, expected in zip(layers, details["alpha"]):
        ours = weight_spectral_metrics(linear.weight, xmin_mode="all", dtype=torch.float64).alpha
        assert abs(ours - expected) < 0.1, (ours, expected)


def test_bad_input():
    with pytest.raises(ValueError, match="needs calibration data"):
        alpha_prune(Net(), target_sparsity=0.5, pruner="wanda")
    with pytest.raises(ValueError, match="calibration iterable is empty"):
        alpha_prune(Net(), target_sparsity=0.5, pruner="sparsegpt", calibration=[])
    with pytest.raises(NoPrunableModuleError, match="no prunable module"):
        alpha_prune(nn.Sequential(nn.Linear(4, 2)), target_sparsity=0.5)
    with pytest.raises(NoPrunableModuleError, match="no prunable module"):
        alpha_prune(Net(), target_sparsity=0.5, include=["nothing_matches"])
    with pytest.raises(ValueError, match=r"target_sparsity must lie in \[0, 1\)"):
        alpha_prune(Net(), target_sparsity=1.2)
    with pytest.raises(ValueError, match=r"epsilon must lie in \[0, 1\)"):
        alpha_prune(Net(), target_sparsity=0.5, epsilon=1.0)
    grouped = nn.Sequential(nn.Conv2d(4, 8, 3, groups=2), nn.Conv2d(8, 8, 1), nn.Linear(8, 2))
    with pytest.raises(ValueError, match="ungrouped"):
        alpha_prune(grouped, target_sparsity=0.5, pruner="wanda", calibration=[torch.randn(1, 4, 5, 5)])


def test_selection_skips_tied_heads_and_attention_out_proj():
    model = _tiny_llama()
    names = list(select_prunable_modules(model))
    assert len(names) == 3 * 7 and "lm_head" not in names
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 2)
    names = list(select_prunable_modules(encoder))
    assert names and not any("out_proj" in n for n in names)
