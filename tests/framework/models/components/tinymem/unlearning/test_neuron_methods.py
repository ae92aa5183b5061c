import copy
import math

import pytest
import torch

from framework.models.components.tinymem.unlearning import (
    Activations,
    HardConcrete,
    IntegratedGradients,
    Slimming,
    UnlearningData,
    ZeroOut,
    locate_mlp_blocks,
    neuron_hook,
)
from framework.models.components.tinymem.unlearning.unlearning_data import token_nll
from tests.framework.models.components.tinymem.unlearning.conftest import snapshot, tiny_gpt2

FAST = {
    ZeroOut: {},
    Activations: {},
    Slimming: {"epochs": 2},
    HardConcrete: {"epochs": 2},
    IntegratedGradients: {"ig_steps": 2, "max_sequences": 2},
}


@torch.no_grad()
def _loss(model, ids):
    nll, w = token_nll(model(input_ids=ids).logits, ids)
    return float((nll * w).sum() / w.sum())


@pytest.mark.parametrize("method", list(FAST), ids=lambda c: c.name)
def test_ablates_floor_ratio_neurons_per_layer_and_nothing_else(method, model, data):
    before = snapshot(model)
    blocks = locate_mlp_blocks(model)
    result = method(ratio=0.1, batch_size=4, **FAST[method])(model, data)
    k = math.floor(0.1 * blocks[0].inner_dim)
    assert result.edited == k * len(blocks) and result.total == sum(b.inner_dim for b in blocks)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    allowed = {f"{name}.{part}" for b in blocks for name in b.projections()
               for part in ("weight", "bias") if name != f"{b.name}.{b.output_name}"}
    assert changed <= allowed  # only input projections of the MLP blocks
    for block in blocks:
        chosen = torch.tensor(result.details["neurons"][block.name])
        assert len(chosen) == k
        for proj in block.input_projections:
            w = proj.weight
            per_neuron = w if isinstance(proj, torch.nn.Linear) else w.t()  # [I, H]
            zero_rows = (per_neuron == 0).all(dim=1)
            assert zero_rows[chosen].all()
            assert zero_rows.sum() == k  # exactly the chosen ones
            old = before[f"{block.name}.{block.input_names[0]}.weight"]
            if proj is block.input_projections[0]:
                old_rows = old if isinstance(proj, torch.nn.Linear) else old.t()
                keep = torch.ones(block.inner_dim, dtype=torch.bool)
                keep[chosen] = False
                torch.testing.assert_close(per_neuron[keep], old_rows[keep])
    assert all(p.requires_grad for p in model.parameters())  # restored


def test_zero_out_scores_equal_single_neuron_ablation_loss_increase(data):
    model = tiny_gpt2()
    block = locate_mlp_blocks(model)[1]
    scores = ZeroOut(ratio=0.1, layers=[1], batch_size=2, neurons_per_pass=3).score(model, [block], data, None)[0]
    base = _loss(model, data.memorized)
    for neuron in (0, 7, 31):
        ablated = copy.deepcopy(model)
        locate_mlp_blocks(ablated)[1].zero_neurons(torch.tensor([neuron]))
        assert scores[neuron].item() == pytest.approx(_loss(ablated, data.memorized) - base, abs=1e-5)
    # The method ablates the neurons whose removal hurts the memorized set most.
    result = ZeroOut(ratio=0.1, layers=[1])(model, data)
    assert sorted(result.details["neurons"][block.name]) == sorted(torch.topk(scores, 3).indices.tolist())


def test_activation_scores_match_a_forward_hook_on_the_relu(data):
    model = tiny_gpt2()
    blocks = locate_mlp_blocks(model)
    scores = Activations(ratio=0.1).score(model, blocks, data, None)
    captured = []
    handle = model.transformer.h[0].mlp.act.register_forward_hook(lambda m, i, o: captured.append(o.detach()))
    model(input_ids=data.memorized)
    handle.remove()
    act = captured[0][:, data.prompt_len - 1 : -1]
    expected = act.abs().mean(dim=(0, 1)) * model.transformer.h[0].mlp.c_proj.weight.norm(dim=1)
    torch.testing.assert_close(scores[0], expected, rtol=1e-5, atol=1e-7)


def test_integrated_gradients_satisfy_completeness():
    """Σ_i IG_i(t) ≈ p_t(a) − p_t(a with position t zeroed) per position, hence also averaged over positions."""
    model = tiny_gpt2()
    seq = torch.randint(0, 14, (1, 10), generator=torch.Generator().manual_seed(3))
    data = UnlearningData(memorized=seq, prompt_len=4)
    block = locate_mlp_blocks(model)[0]
    ig = IntegratedGradients(ratio=0.1, ig_steps=200, rows_per_pass=1200).score(model, [block], data, None)[0]
    deltas = []
    for t in range(3, 9):
        probs = []
        for zero in (False, True):
            def patch(a, t=t, zero=zero):
                a = a.clone()
                if zero:
                    a[:, t] = 0
                return a
            with torch.no_grad(), neuron_hook(block, patch):
                logits = model(input_ids=seq).logits
            probs.append(torch.softmax(logits[0, t], -1)[seq[0, t + 1]].item())
        deltas.append(probs[0] - probs[1])
    assert ig.sum().item() == pytest.approx(sum(deltas) / len(deltas), abs=2e-3)


def test_learned_masks_score_and_stop(data):
    model = tiny_gpt2()
    slim = Slimming(ratio=0.1, epochs=50, lr=0.05, lambda_l1=1000.0, stop_loss=0.5)
    result = slim(model, data)
    assert result.details["final_penalty"] < 0.5  # stopped by the L1 criterion, well before 50 epochs
    assert result.details["steps"] < 50 * 2
    hc = HardConcrete(ratio=0.1, epochs=1)
    scores = hc.score(tiny_gpt2(), locate_mlp_blocks(tiny_gpt2()), data, torch.Generator().manual_seed(0))
    assert all(((s > 0) & (s < 1)).all() for s in scores)  # sigmoid(log α)


def test_bad_inputs_raise():
    for bad in (0.0, 1.0, -0.2, 1.5, float("nan")):
        with pytest.raises(ValueError, match="ratio"):
            ZeroOut(ratio=bad)
    with pytest.raises(ValueError, match="0 neurons"):
        Activations(ratio=0.01)(tiny_gpt2(), UnlearningData(memorized=torch.zeros(2, 8, dtype=torch.long), prompt_len=2))
    with pytest.raises(ValueError, match="empty"):
        UnlearningData(memorized=torch.zeros(0, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="vocabulary"):
        Activations(ratio=0.1)(tiny_gpt2(), UnlearningData(memorized=torch.full((2, 8), 50), prompt_len=2))
    with pytest.raises(ValueError, match="prompt_len"):
        UnlearningData(memorized=torch.zeros(2, 8, dtype=torch.long), prompt_len=8)
