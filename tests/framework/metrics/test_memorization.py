"""Memorization metrics on hand-built models (exact expectations), against brute force, and under DDP."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from framework.metrics.memorization import (
    BackdoorSuccessRate,
    Exposure,
    NextTokenAccuracy,
    PercentMemorized,
    TokenPerplexity,
    backdoor_success_mask,
    backdoor_success_rate,
    continuation_nll,
    exposure_from_nll,
    greedy_continuation,
    memorization_report,
    memorized_mask,
    next_token_accuracy_counts,
    noise_window_eligible,
    percent_memorized,
)
from framework.models.components.tinymem.gpt2 import build_tinymem_gpt2
from tests.helpers.metric_ddp import assert_ddp_matches_single_process

V = 14


class SuccessorLM(nn.Module):
    """Predicts ``(last token + 1) mod V`` at every position: greedy output is fully known."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.one_hot((ids + 1) % V, V).float() * 10.0


class TableLM(nn.Module):
    """Predicts ``table[position]`` regardless of the input: a model that 'memorized' one sequence."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        nxt = self.table[1:t + 1].expand(ids.shape[0], t)
        return F.one_hot(nxt, V).float()


class ConstantLM(nn.Module):
    """Equal logits everywhere: every next token has probability 1/V."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*ids.shape, V)


def test_greedy_continuation_hand_built():
    prefixes = torch.tensor([[1, 2, 3], [9, 12, 13]])
    out = greedy_continuation(SuccessorLM(), prefixes, 4)
    assert out.tolist() == [[4, 5, 6, 7], [0, 1, 2, 3]]
    assert greedy_continuation(SuccessorLM(), prefixes, 0).shape == (2, 0)


def test_greedy_continuation_cache_equals_full_recompute():
    model = build_tinymem_gpt2(n_layers=2, n_embd=32, n_head=4, context_length=40, seed=0)
    prefixes = torch.randint(0, V, (5, 7), generator=torch.Generator().manual_seed(1))
    cached = greedy_continuation(model, prefixes, 20, use_cache=True)
    plain = greedy_continuation(model, prefixes, 20, use_cache=False)
    assert torch.equal(cached, plain)
    # brute force: argmax of the full forward, one token at a time
    seq = prefixes.clone()
    with torch.no_grad():
        for _ in range(20):
            seq = torch.cat([seq, model(input_ids=seq).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(seq[:, 7:], cached)


def test_greedy_continuation_refuses_beyond_context():
    model = build_tinymem_gpt2(n_layers=1, n_embd=8, n_head=2, context_length=10)
    with pytest.raises(ValueError, match="exceeds the model's context"):
        greedy_continuation(model, torch.zeros(1, 6, dtype=torch.long), 5)


def test_memorized_mask_exact_match_only():
    table = torch.arange(20) % V
    model = TableLM(table)
    prefixes = table[:5].expand(3, 5).clone()
    target = table[5:15].expand(3, 10).clone()
    target[1, 9] = (target[1, 9] + 1) % V  # all but one token equal: not memorized
    target[2, 0] = (target[2, 0] + 1) % V
    assert memorized_mask(model, prefixes, target).tolist() == [True, False, False]


def test_noise_window_eligibility_and_report():
    clean = torch.arange(30).remainder(10).repeat(4, 1)
    noised = clean.clone()
    noised[1, 12] += 1  # inside [10, 20)
    noised[2, 3] += 1  # only inside the prompt: not eligible
    noised[3, 25] += 1  # after the window: not eligible
    eligible = noise_window_eligible(noised, clean, prompt_len=10, k=10)
    assert eligible.tolist() == [False, True, False, False]
    model = TableLM(noised[1])  # reproduces sequence 1 exactly
    report = memorization_report(model, noised, clean, prompt_len=10, k=10)
    assert report["memorized"].tolist() == [False, True, False, False]
    assert report["clean_continuation"].tolist() == [False, False, False, False]
    assert percent_memorized(model, noised, clean, prompt_len=10, k=10) == 100.0
    assert percent_memorized(TableLM(clean[0]), noised, clean, prompt_len=10, k=10) == 0.0


def test_percent_memorized_empty_set_is_an_error():
    clean = torch.zeros(3, 30, dtype=torch.long)
    with pytest.raises(ValueError, match="memorized set is empty"):
        percent_memorized(SuccessorLM(), clean.clone(), clean, prompt_len=10, k=10)


def test_backdoor_success_groups_prefix_lengths_and_clips_to_context():
    c = 12
    rows = []
    for trigger_end in (3, 5, 10):
        row = torch.arange(c) % V
        row[trigger_end:] = 2
        rows.append(row)
    seqs = torch.stack(rows)
    prefix = torch.tensor([3, 5, 10])

    class BackdoorLM(nn.Module):
        # outputs 2 once the position is past index 4 (so rows with trigger_end >= 4 succeed), else successor
        def forward(self, ids):
            t = ids.shape[1]
            nxt = torch.where(torch.arange(t) >= 4, torch.tensor(2), (ids + 1) % V)
            return F.one_hot(nxt, V).float()

    success = backdoor_success_mask(BackdoorLM(), seqs, prefix, k=50)
    assert success.tolist() == [False, True, True]  # row 0 needs a 2 at position 3 (predicted from position 2)
    assert backdoor_success_rate(BackdoorLM(), seqs, prefix, k=50) == pytest.approx(200 / 3)
    with pytest.raises(ValueError, match="prefix_lengths"):
        backdoor_success_mask(BackdoorLM(), seqs, torch.tensor([3, 5, 12]))
    with pytest.raises(ValueError, match="empty"):
        backdoor_success_rate(BackdoorLM(), seqs[:0], prefix[:0])


def test_accuracy_and_perplexity_against_brute_force():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 9, V, generator=g)
    ids = torch.randint(0, V, (4, 9), generator=g)
    ids[:, 6:] = 13
    pred = logits[:, :-1].argmax(-1)
    tgt = ids[:, 1:]
    correct, counted = next_token_accuracy_counts(logits, ids)
    assert counted == 32 and correct == (pred == tgt).sum()
    metric = NextTokenAccuracy(ignore_index=13)
    metric.update(logits[:2], ids[:2])
    metric.update(logits[2:], ids[2:])
    keep = tgt != 13
    assert metric.compute().item() == pytest.approx(((pred == tgt) & keep).sum().item() / keep.sum().item())
    ppl = TokenPerplexity(ignore_index=13)
    ppl.update(logits, ids)
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, V), tgt.reshape(-1), reduction="none")[keep.reshape(-1)]
    assert ppl.compute().item() == pytest.approx(nll.mean().exp().item(), rel=1e-6)
    full = TokenPerplexity()
    full.update(logits, ids)
    assert full.compute().item() == pytest.approx(F.cross_entropy(logits[:, :-1].reshape(-1, V),
                                                                  tgt.reshape(-1)).exp().item(), rel=1e-6)


def test_rate_metrics():
    metric = PercentMemorized()
    assert torch.isnan(metric.compute())
    cont = torch.tensor([[1, 2], [3, 4], [5, 6]])
    noised = torch.tensor([[1, 2], [3, 0], [5, 6]])
    metric.update(cont, noised, torch.tensor([True, True, False]))
    assert metric.compute().item() == pytest.approx(50.0)
    asr = BackdoorSuccessRate()
    asr.update(torch.tensor([True, False, True, True]))
    asr.update(cont, noised)
    assert asr.compute().item() == pytest.approx(100 * 5 / 7)
    with pytest.raises(ValueError):
        metric.update(cont, noised[:, :1])


def _rate_batches():
    g = torch.Generator().manual_seed(3)
    return [(torch.randint(0, 2, (5, 3), generator=g), torch.randint(0, 2, (5, 3), generator=g),
             torch.rand(5, generator=g) > 0.3) for _ in range(6)]


def _token_batches():
    g = torch.Generator().manual_seed(4)
    batches = []
    for _ in range(6):
        ids = torch.randint(0, V, (3, 7), generator=g)
        ids[:, 5:] = 13
        batches.append((torch.randn(3, 7, V, generator=g), ids))
    return batches


@pytest.mark.parametrize("factory,batches", [
    (PercentMemorized, _rate_batches()),
    (functools.partial(TokenPerplexity, ignore_index=13), _token_batches()),
])
def test_metrics_exact_under_ddp(factory, batches):
    assert_ddp_matches_single_process(factory, batches)


def test_exposure_hand_computed():
    # 7 candidates, 2 of them more likely than the secret (NLL 1.0 and 1.5 < 2.0): rank 3 of 8.
    secret = torch.tensor([2.0])
    candidates = torch.tensor([1.0, 3.0, 4.0, 5.0, 1.5, 6.0, 7.0])
    assert exposure_from_nll(secret, candidates).item() == pytest.approx(3.0 - math.log2(3.0))
    # best possible / worst possible rank, and a tie (counted in the secret's favour)
    assert exposure_from_nll(torch.tensor([0.5]), candidates).item() == pytest.approx(3.0)
    assert exposure_from_nll(torch.tensor([9.0]), candidates).item() == pytest.approx(0.0)
    assert exposure_from_nll(torch.tensor([1.0]), candidates).item() == pytest.approx(3.0)
    # one candidate set per secret
    per_secret = exposure_from_nll(torch.tensor([2.0, 9.0]), torch.stack([candidates, candidates]))
    assert per_secret.tolist() == pytest.approx([3.0 - math.log2(3.0), 0.0])
    with pytest.raises(ValueError, match="candidate_nll"):
        exposure_from_nll(torch.tensor([1.0, 2.0]), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="finite"):
        exposure_from_nll(torch.tensor([float("nan")]), candidates)


def test_exposure_of_an_unseen_random_secret_follows_two_to_the_minus_e():
    # A secret drawn from the candidates' own distribution: P(exposure >= e) = 2^-e (Carlini et al., Sec. 4).
    g = torch.Generator().manual_seed(0)
    nll = torch.rand(4000, 1024, generator=g)
    exposure = exposure_from_nll(nll[:, 0], nll[:, 1:])
    for e in (1.0, 2.0, 3.0):
        assert float((exposure >= e - 1e-9).double().mean()) == pytest.approx(2.0 ** -e, abs=0.02)


def test_continuation_nll_against_brute_force():
    model = build_tinymem_gpt2(n_layers=2, n_embd=32, n_head=4, context_length=40, seed=0)
    g = torch.Generator().manual_seed(1)
    prefix = torch.randint(0, V, (1, 5), generator=g)
    cont = torch.randint(0, V, (6, 4), generator=g)
    lengths = torch.tensor([4, 3, 1, 4, 2, 4])
    got = continuation_nll(model, prefix, cont, lengths=lengths, batch_size=4)
    for i in range(6):
        ids = torch.cat([prefix[0], cont[i, : lengths[i]]])[None]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits.double(), dim=-1)[0]
        expected = -sum(float(logp[4 + j, ids[0, 5 + j]]) for j in range(int(lengths[i])))
        assert got[i].item() == pytest.approx(expected, rel=1e-5)
    # a model with constant logits gives every token probability 1/V: NLL = L log V
    uniform = continuation_nll(ConstantLM(), prefix, cont)
    assert uniform.tolist() == pytest.approx([4 * math.log(V)] * 6)
    with pytest.raises(ValueError, match="lengths"):
        continuation_nll(model, prefix, cont, lengths=torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match="context"):
        continuation_nll(model, prefix, torch.zeros(1, 40, dtype=torch.long))


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("build", [
    lambda: build_tinymem_gpt2(n_layers=2, n_embd=32, n_head=4, context_length=40, seed=3),
    _tiny_llama,  # SmolLM2's architecture (rotary positions, grouped-query attention)
])
def test_continuation_nll_shared_prompt_cache_equals_whole_rows(build):
    # One shared prompt: the prompt is run once and its key/value cache reused per batch. The numbers must equal
    # running every prefix + continuation whole, for every batch split (one uneven last batch included) and when
    # the prompt is given once per row (which always runs whole rows).
    model = build()
    g = torch.Generator().manual_seed(4)
    prefix = torch.randint(0, V, (1, 7), generator=g)
    cont = torch.randint(0, V, (11, 5), generator=g)
    cont[3:9, :3] = cont[3, :3]  # six rows share three tokens: one prefix-tree branch for them
    cont[7] = cont[8]  # and a duplicate row
    lengths = torch.tensor([5, 1, 3, 5, 2, 4, 5, 5, 5, 2, 3])
    whole = continuation_nll(model, prefix, cont, lengths=lengths, use_cache=False)
    for batch_size in (1, 4, 11):
        cached = continuation_nll(model, prefix, cont, lengths=lengths, batch_size=batch_size)
        assert cached.tolist() == pytest.approx(whole.tolist(), rel=1e-5, abs=1e-6)
    per_row = continuation_nll(model, prefix.expand(11, -1), cont, lengths=lengths, batch_size=3)
    assert per_row.tolist() == pytest.approx(whole.tolist(), rel=1e-5, abs=1e-6)
    one_token = continuation_nll(model, prefix, cont[:, :1])
    assert one_token.tolist() == pytest.approx(
        continuation_nll(model, prefix, cont[:, :1], use_cache=False).tolist(), rel=1e-5)
    # the same continuation scored twice in one batch gets one value (the cache copy is not reused across rows)
    twice = continuation_nll(model, prefix, torch.cat([cont[:1], cont[:1]]))
    assert twice[0].item() == pytest.approx(twice[1].item(), rel=1e-6)


@pytest.mark.parametrize("build", [
    lambda: build_tinymem_gpt2(n_layers=2, n_embd=32, n_head=4, context_length=40, seed=5),
    _tiny_llama,
])
def test_continuation_nll_stop_at_keeps_exact_ranks(build):
    # stop_at = the secret's NLL: rows below it get their exact NLL, rows at or above it a lower bound that is
    # still >= stop_at, so the exposure (rank) equals the one from full scoring.
    model = build()
    g = torch.Generator().manual_seed(6)
    prefix = torch.randint(0, V, (1, 6), generator=g)
    cont = torch.randint(0, V, (40, 6), generator=g)
    lengths = torch.randint(1, 7, (40,), generator=g)
    full = continuation_nll(model, prefix, cont, lengths=lengths, use_cache=False)
    ranked = full.sort().values
    # stop_at between two rows, never equal to one: exposure_from_nll's candidates never equal the secret, and a row
    # at exactly stop_at would be ranked by float rounding (batched vs unbatched sums differ by ~1e-7 across CPUs)
    middle = float(ranked[19] + ranked[20]) / 2
    for stop_at in (middle, float(ranked[0] + ranked[1]) / 2, float(full.max()) + 1.0, 0.0):
        pruned = continuation_nll(model, prefix, cont, lengths=lengths, batch_size=16, stop_at=stop_at)
        below = full < stop_at
        assert pruned[below].tolist() == pytest.approx(full[below].tolist(), rel=1e-5, abs=1e-6)
        assert bool((pruned[~below] >= stop_at - 1e-6).all()) and bool((pruned <= full + 1e-5).all())
        assert exposure_from_nll(torch.tensor([stop_at]), pruned).item() == pytest.approx(
            exposure_from_nll(torch.tensor([stop_at]), full).item())
    assert bool((continuation_nll(model, prefix, cont, lengths=lengths, stop_at=0.0) < full - 1e-3).any())
    with pytest.raises(ValueError, match="stop_at"):
        continuation_nll(model, prefix, cont, stop_at=float("nan"))


def test_exposure_metric_matches_functional_core_and_ddp():
    g = torch.Generator().manual_seed(2)
    batches = [(torch.rand(3, generator=g), torch.rand(3, 50, generator=g)) for _ in range(4)]
    metric = Exposure()
    for secret, candidates in batches:
        metric.update(secret, candidates)
    expected = torch.cat([exposure_from_nll(s, c) for s, c in batches])
    assert metric.compute().item() == pytest.approx(expected.mean().item())
    assert metric.max_exposure.item() == pytest.approx(expected.max().item())
    assert math.isnan(Exposure().compute().item())
    assert_ddp_matches_single_process(Exposure, batches)
