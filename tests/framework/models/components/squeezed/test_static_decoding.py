"""Static-buffer serving (`static_decoding.py`): full budget equals dense attention token for token, bad input."""

from __future__ import annotations

import pytest
import torch

from framework.models.components.squeezed import SqueezedAttention, serve
from framework.models.components.squeezed.static_decoding import (
    SelectionRule,
    StaticLlamaRunner,
    check_batch_contexts,
    check_kernel_support,
    compile_fixed_context,
    generate_cache_keyword,
    static_cache_from_index,
)
from tests.framework.models.components.squeezed.conftest import tiny_llama

NEW = 6


def _settings(**kw) -> SqueezedAttention:
    return SqueezedAttention(observation_window=16, attention_sinks=2, centroid_fraction=0.1, kmeans_iters=8, **kw)


@pytest.fixture(scope="module")
def compiled(index):
    return compile_fixed_context(index, budgets=(1.0, 0.3))


@pytest.fixture(scope="module")
def question():
    return torch.randint(3, 300, (2, 5), generator=torch.Generator().manual_seed(3))


def _generate_with_runner(runner: StaticLlamaRunner, question: torch.Tensor, new: int):
    """Greedy tokens ``[B, new]`` and the logits of every step ``[new, B, V]``."""
    logits = [runner.prefill(question)]
    tokens = [runner.next_ids.clone()]
    for _ in range(new - 1):
        logits.append(runner.decode_step())
        tokens.append(runner.next_ids.clone())
    return torch.cat(tokens, 1), torch.stack(logits)


def test_generate_cache_keyword_is_the_one_generate_takes_without_a_warning(model, context, index, question):
    """The installed Transformers' keyword for a prepared cache: no deprecation warning, and the cache is used."""
    import warnings

    keyword = generate_cache_keyword()
    assert keyword in ("cache", "past_key_values")
    cache = index.new_cache(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        with torch.no_grad(), serve(model, index, _settings(budget=1.0)):
            model.generate(input_ids=torch.cat([context, question[:1]], 1), **{keyword: cache},
                           max_new_tokens=2, do_sample=False)
    assert cache.get_seq_length() > index.metadata.context_length  # generation wrote into the cache it was given


def test_generate_static_cache_full_budget_equals_sdpa(model, context, index, question):
    """Transformers generate() with a static cache: "squeezed" at budget 1 gives sdpa's tokens."""
    ref = tiny_llama("sdpa")
    prompt = torch.cat([context.expand(2, -1), question], 1)
    length = prompt.shape[1] + NEW
    kw = dict(max_new_tokens=NEW, do_sample=False, output_logits=True, return_dict_in_generate=True)
    with torch.no_grad():
        cache = static_cache_from_index(index, ref, batch_size=2, max_cache_len=length)
        expected = ref.generate(input_ids=prompt, **{generate_cache_keyword(): cache}, **kw)
        plain = ref.generate(input_ids=prompt, **kw)
        with serve(model, index, _settings(budget=1.0)):
            cache = static_cache_from_index(index, model, batch_size=2, max_cache_len=length)
            got = model.generate(input_ids=prompt, **{generate_cache_keyword(): cache}, **kw)
    assert torch.equal(expected.sequences, plain.sequences)  # the prefilled static cache is the context's own KV
    assert torch.equal(got.sequences, expected.sequences)
    torch.testing.assert_close(torch.stack(got.logits), torch.stack(expected.logits), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("attention", ["squeezed", "dense"])
def test_runner_full_budget_equals_sdpa_generation(model, context, compiled, question, attention):
    ref = tiny_llama("sdpa")
    prompt = torch.cat([context.expand(2, -1), question], 1)
    with torch.no_grad():
        out = ref.generate(input_ids=prompt, max_new_tokens=NEW, do_sample=False, output_logits=True,
                           return_dict_in_generate=True)
    expected = out.sequences[:, prompt.shape[1]:]
    expected_logits = torch.stack(out.logits).float()  # [NEW, B, V]
    rule = SelectionRule(budget=1.0) if attention == "squeezed" else None
    runner = StaticLlamaRunner(model, [compiled, compiled], batch_size=2, capacity=16, attention=attention, rule=rule)
    tokens, logits = _generate_with_runner(runner, question, NEW)
    assert torch.equal(tokens, expected)
    torch.testing.assert_close(logits, expected_logits, rtol=1e-4, atol=1e-4)  # every step, not only the argmax


def test_runner_topk_full_budget_equals_dense(model, compiled, question):
    dense = StaticLlamaRunner(model, compiled, batch_size=2, capacity=16, attention="dense")
    topk = StaticLlamaRunner(model, compiled, batch_size=2, capacity=16, rule=SelectionRule(1.0, "topk"))
    (t1, l1), (t2, l2) = _generate_with_runner(topk, question, NEW), _generate_with_runner(dense, question, NEW)
    assert torch.equal(t1, t2)
    torch.testing.assert_close(l1, l2, rtol=1e-5, atol=1e-5)


def test_runner_sparse_budget_selects_a_fraction(model, compiled, question):
    runner = StaticLlamaRunner(model, compiled, batch_size=2, capacity=16, rule=SelectionRule(0.3))
    runner.prefill(question)
    runner.decode_step()
    n = compiled.num_tokens
    counts = torch.stack([s.key_counts for s in runner.last_selection]).float() / n
    assert 0.1 < counts.mean().item() < 0.9  # calibrated to ~30% of the clustered keys + window + sinks
    topk = StaticLlamaRunner(model, compiled, batch_size=2, capacity=16, rule=SelectionRule(0.3, "topk"))
    topk.prefill(question)
    topk.decode_step()
    expected = -(-3 * n // 10)  # ceil(0.3 N)
    assert all(bool((s.key_counts == expected).all()) for s in topk.last_selection)


@pytest.mark.parametrize("decode_path", ["split", "fused"])
def test_runner_triton_interpreter_matches_reference(model, compiled, question, decode_path, monkeypatch):
    from framework.kernels.squeezed_attention.validation import interpreting

    if not interpreting():
        pytest.skip("needs TRITON_INTERPRET=1")
    from framework.kernels.squeezed_attention import triton_ops

    monkeypatch.setitem(triton_ops.CONFIG, "fused_decode", int(decode_path == "fused"))
    runs = {}
    for backend in ("reference", "triton"):
        runner = StaticLlamaRunner(model, compiled, batch_size=2, capacity=8, rule=SelectionRule(0.3, "topk"),
                                   backend=backend)
        logits = [runner.prefill(question)]
        for _ in range(2):
            logits.append(runner.decode_step())
        runs[backend] = torch.stack(logits)
    torch.testing.assert_close(runs["triton"], runs["reference"], rtol=2e-4, atol=2e-4)


# ------------------------------------------------------------------------------------------------ bad input

def test_budget_outside_unit_interval(compiled, index):
    for bad in (0.0, -0.1, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match="budget"):
            SelectionRule(bad)
        with pytest.raises(ValueError, match="budget"):
            compile_fixed_context(index, budgets=(bad,))
    with pytest.raises(ValueError, match="mode"):
        SelectionRule(0.5, "random")


def test_uncalibrated_budget_is_named(model, compiled):
    with pytest.raises(ValueError, match="budget 0.2 was not calibrated"):
        StaticLlamaRunner(model, compiled, batch_size=1, capacity=4, rule=SelectionRule(0.2))


def test_batch_with_different_contexts(model, compiled, index):
    other = compile_fixed_context(index, budgets=(0.3,))
    other.fingerprint = "f" * 64
    with pytest.raises(ValueError, match="batch row 1 uses fixed context ffffffffffff"):
        check_batch_contexts([compiled, other])
    with pytest.raises(ValueError, match="batch row 1"):
        StaticLlamaRunner(model, [compiled, other], batch_size=2, capacity=4, rule=SelectionRule(0.3))


def test_input_longer_than_capacity(model, compiled):
    runner = StaticLlamaRunner(model, compiled, batch_size=1, capacity=4, rule=SelectionRule(0.3))
    with pytest.raises(ValueError, match="0 tail tokens \\+ 5 more exceed the runner's capacity of 4"):
        runner.prefill(torch.randint(3, 300, (1, 5)))
    runner.prefill(torch.randint(3, 300, (1, 4)))
    with pytest.raises(ValueError, match="capacity of 4"):
        runner.decode_step()
    with pytest.raises(ValueError, match="max_position_embeddings"):
        StaticLlamaRunner(model, compiled, batch_size=1, capacity=1000, rule=SelectionRule(0.3))


def test_wrong_batch_shape(model, compiled):
    runner = StaticLlamaRunner(model, compiled, batch_size=2, capacity=4, rule=SelectionRule(0.3))
    with pytest.raises(ValueError, match="batch_size=2"):
        runner.prefill(torch.randint(3, 300, (3, 2)))


def test_unsupported_head_dim_and_dtype():
    with pytest.raises(ValueError, match="head dim 96"):
        check_kernel_support(96, torch.float32, torch.device("cpu"))
    with pytest.raises(ValueError, match="torch.float64"):
        check_kernel_support(128, torch.float64, torch.device("cpu"))


def test_model_of_another_shape(compiled):
    other = tiny_llama("squeezed", layers=3)
    with pytest.raises(ValueError, match="3 x 2 x 16"):
        StaticLlamaRunner(other, compiled, batch_size=1, capacity=4, rule=SelectionRule(0.3))


def test_static_cache_must_exceed_context(model, index):
    with pytest.raises(ValueError, match="above the fixed context length 160"):
        static_cache_from_index(index, model, batch_size=1, max_cache_len=160)


def test_context_longer_than_the_index(model, compiled, context):
    runner = StaticLlamaRunner(model, compiled, batch_size=2, capacity=8, rule=SelectionRule(0.3))
    q = torch.randint(3, 300, (2, 3))
    longer = torch.cat([context, context[:, :5]], 1)
    with pytest.raises(ValueError, match="165 tokens, longer than the compiled index \\(160 tokens\\)"):
        runner.prefill(q, context_ids=longer)
    other = context.clone()
    other[0, 7] += 1
    with pytest.raises(ValueError, match="not the one the index was built from"):
        runner.prefill(q, context_ids=other)
    with pytest.raises(ValueError, match="batch rows give different fixed contexts"):
        runner.prefill(q, context_ids=torch.cat([context, other]))
    runner.prefill(q, context_ids=context.expand(2, -1))  # the right context passes
