import math

import pytest
import torch

from framework.models.components.tinymem.unlearning import (
    BalancedSubnet,
    Durable,
    DurableAggregate,
    Greedy,
    SecondOrderUnlearning,
    Subnet,
    UnlearningData,
    balanced_loss,
    locate_mlp_blocks,
    mlp_weight_parameters,
    supermask,
)
from framework.models.components.tinymem.unlearning.unlearning_data import sequence_nll, token_nll
from framework.models.components.tinymem.unlearning.weight_methods import mixed_pool
from tests.framework.models.components.tinymem.unlearning.conftest import snapshot, tiny_gpt2

FAST = {
    Greedy: {"weights_per_step": 16},
    Durable: {},
    DurableAggregate: {},
    SecondOrderUnlearning: {"num_grads": 8, "block_size": 10},
    Subnet: {"epochs": 2},
    BalancedSubnet: {"epochs": 1},
}


@pytest.mark.parametrize("method", list(FAST), ids=lambda c: c.name)
def test_zeroes_ratio_of_mlp_weights_and_leaves_everything_else(method, model, data):
    before = snapshot(model)
    weights = mlp_weight_parameters(locate_mlp_blocks(model))
    total = sum(w.numel() for w in weights.values())
    result = method(ratio=0.05, batch_size=4, **FAST[method])(model, data)
    assert result.total == total
    for name, p in model.named_parameters():
        if name not in weights:
            assert torch.equal(p, before[name]), f"{name} is outside the MLP weights but changed"
            continue
        changed = p != before[name]
        assert (p[changed] == 0).all(), f"{name}: weights were changed to something other than 0"
    newly_zero = {n: int(((w == 0) & (before[n] != 0)).sum()) for n, w in weights.items()}
    if method in (Durable, Subnet, BalancedSubnet):  # per-matrix top-k
        assert newly_zero == {n: int(0.05 * w.numel()) for n, w in weights.items()}
    else:  # one global count
        assert sum(newly_zero.values()) == int(0.05 * total) == result.edited
    assert all(p.requires_grad for p in model.parameters())


def test_durable_removes_the_largest_memorized_gradient_magnitudes(data):
    model = tiny_gpt2()
    weights = mlp_weight_parameters(locate_mlp_blocks(model))
    sums = {n: torch.zeros_like(w) for n, w in weights.items()}
    for rows in torch.arange(len(data.memorized)).split(2):
        model.zero_grad()
        nll, w = token_nll(model(input_ids=data.memorized[rows]).logits, data.memorized[rows])
        ((nll * w).sum() / w.sum()).backward()
        for n, p in weights.items():
            sums[n] += p.grad.abs()
    DurableAggregate(ratio=0.02, batch_size=2)(model, data)
    score = torch.cat([s.flatten() for s in sums.values()])
    expected = torch.topk(score, int(0.02 * score.numel())).indices
    zero = torch.cat([w.detach().flatten() == 0 for w in weights.values()])
    assert zero[expected].all() and zero.sum() == len(expected)


def test_greedy_first_removal_is_argmax_of_weight_times_gradient(data):
    model = tiny_gpt2()
    reference = tiny_gpt2()
    ids, is_mem = mixed_pool(data, "Greedy", True)
    labels = torch.where(is_mem, 1.0, -1.0)
    rows = torch.randperm(len(ids), generator=torch.Generator().manual_seed(0)).split(len(ids))[0]
    params = list(mlp_weight_parameters(locate_mlp_blocks(reference)).values())
    objective = (-labels[rows] * sequence_nll(reference, ids[rows])).mean()
    grads = torch.autograd.grad(objective, params)
    score = torch.cat([(w * g).flatten() for w, g in zip(params, grads)])
    expected = int(torch.argmax(score))
    Greedy(ratio=1 / score.numel() + 1e-9, batch_size=len(ids), seed=0)(model, data)
    flat = torch.cat([w.detach().flatten() for w in mlp_weight_parameters(locate_mlp_blocks(model)).values()])
    assert flat[expected] == 0 and int((flat == 0).sum()) == 1


def test_second_order_saliency_matches_dense_fisher(data):
    model = tiny_gpt2(n_layer=1)
    reference = tiny_gpt2(n_layer=1)
    params = list(mlp_weight_parameters(locate_mlp_blocks(reference)).values())
    total = sum(p.numel() for p in params)
    # Per-sequence gradients in the method's (seeded) order; the dense Fisher per block of 64 weights.
    order = torch.randperm(len(data.memorized), generator=torch.Generator().manual_seed(0))
    grads = []
    for i in order:
        nll, w = token_nll(reference(input_ids=data.memorized[i : i + 1]).logits, data.memorized[i : i + 1])
        grads.append(torch.cat([g.flatten() for g in torch.autograd.grad((nll * w).sum() / w.sum(), params)]).double())
    g = torch.stack(grads).view(len(grads), total // 64, 64)
    fisher = torch.einsum("gbi,gbj->bij", g, g) / len(grads) + 1e-3 * torch.eye(64, dtype=torch.float64)
    inv_diag = torch.stack([torch.linalg.inv(f).diagonal() for f in fisher]).flatten()
    w = torch.cat([p.detach().flatten() for p in params]).double()
    saliency = w.square() / (2 * inv_diag)
    k = int(0.03 * total)
    expected = set(torch.topk(saliency, k).indices.tolist())
    SecondOrderUnlearning(ratio=0.03, num_grads=len(data.memorized), block_size=64, damping=1e-3)(model, data)
    flat = torch.cat([p.detach().flatten() for p in mlp_weight_parameters(locate_mlp_blocks(model)).values()])
    assert set(torch.nonzero(flat == 0).flatten().tolist()) == expected


def test_supermask_zeroes_smallest_scores_with_straight_through_gradient():
    scores = torch.tensor([[0.3, -0.1], [2.0, -0.05]], requires_grad=True)
    mask = supermask(scores, 0.5)
    assert mask.detach().tolist() == [[1.0, 0.0], [1.0, 0.0]]
    mask.sum().backward()
    torch.testing.assert_close(scores.grad, torch.sign(scores.detach()))  # d|s|/ds · 1


def test_balanced_loss_has_no_nan_without_memorized_or_clean_rows():
    nll = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    assert balanced_loss(nll, torch.tensor([False, False, False]), 0.05).item() == pytest.approx(0.05 * 2.0)
    assert balanced_loss(nll, torch.tensor([True, True, True]), 0.05).item() == pytest.approx(-0.95 * 2.0)
    mixed = balanced_loss(nll, torch.tensor([True, False, False]), 0.05)
    assert mixed.item() == pytest.approx(-0.95 * 1.0 + 0.05 * 2.5)
    mixed.backward()
    assert torch.isfinite(nll.grad).all()


def test_balanced_subnet_on_batches_without_memorized_rows_stays_finite(data):
    # batch_size 1: most batches hold a clean row only (the public code returned NaN there and poisoned the scores).
    model = tiny_gpt2()
    result = BalancedSubnet(ratio=0.05, batch_size=1, epochs=1)(model, data)
    assert math.isfinite(result.details["final_loss"])
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_clean_pool_excludes_memorized_rows_by_default(data):
    clean = torch.cat([data.clean, data.memorized[:2]])
    mixed = UnlearningData(memorized=data.memorized, clean=clean, prompt_len=data.prompt_len)
    ids, is_mem = mixed_pool(mixed, "BalancedSubnet", exclude_memorized=True)
    assert int(is_mem.sum()) == len(data.memorized) and len(ids) == len(data.memorized) + len(data.clean)
    ids, is_mem = mixed_pool(mixed, "BalancedSubnet", exclude_memorized=False)
    assert len(ids) == len(data.memorized) + len(clean)


def test_bad_inputs_raise(data):
    with pytest.raises(ValueError, match="ratio"):
        Subnet(ratio=1.0)
    with pytest.raises(ValueError, match="clean pool"):
        BalancedSubnet(ratio=0.1)(tiny_gpt2(), UnlearningData(memorized=data.memorized, prompt_len=6))
    with pytest.raises(ValueError, match="same length"):
        Greedy(ratio=0.1)(tiny_gpt2(), UnlearningData(memorized=data.memorized, clean=data.clean[:, :8], prompt_len=6))
    with pytest.raises(ValueError, match="0 weights"):
        Subnet(ratio=1e-6)(tiny_gpt2(), data)
    with pytest.raises(ValueError, match="loss_weighting"):
        BalancedSubnet(ratio=0.1, loss_weighting=1.5)
