"""The "squeezed" Transformers backend: exactness at full budget, generation, GQA, padding."""

from __future__ import annotations

import pytest
import torch

from framework.models.components.squeezed import SqueezedAttention, serve
from tests.framework.models.components.squeezed.conftest import tiny_llama


def _settings(**kw) -> SqueezedAttention:
    return SqueezedAttention(observation_window=16, attention_sinks=2, centroid_fraction=0.1, kmeans_iters=8, **kw)


def test_without_index_equals_sdpa(model, context):
    ref = tiny_llama("sdpa")
    with torch.no_grad():
        a = model(input_ids=context).logits
        b = ref(input_ids=context).logits
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("budget_mode", ["calibrated", "topk"])
def test_full_budget_matches_sdpa_logits(model, context, index, budget_mode):
    ref = tiny_llama("sdpa")
    question = torch.randint(3, 300, (1, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = ref(input_ids=torch.cat([context, question], 1)).logits[:, -9:]
        with serve(model, index, _settings(budget=1.0, budget_mode=budget_mode)) as session:
            got = model(input_ids=question, cache=index.new_cache(), use_cache=True).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert session.budget().kept_fraction == pytest.approx(1.0)


def test_generation_full_budget_equals_dense_generation(model, context, index):
    ref = tiny_llama("sdpa")
    prompt = torch.cat([context, torch.randint(3, 300, (1, 5), generator=torch.Generator().manual_seed(3))], 1)
    with torch.no_grad():
        expected = ref.generate(input_ids=prompt, max_new_tokens=6, do_sample=False)
        with serve(model, index, _settings(budget=1.0)):
            got = model.generate(input_ids=prompt, cache=index.new_cache(), max_new_tokens=6, do_sample=False)
    assert torch.equal(got, expected)


def test_generation_sparse_runs_and_measures_budget(model, context, index):
    prompt = torch.cat([context, torch.randint(3, 300, (1, 5), generator=torch.Generator().manual_seed(4))], 1)
    with torch.no_grad(), serve(model, index, _settings(budget=0.3), diagnostics=True) as session:
        out = model.generate(input_ids=prompt, cache=index.new_cache(), max_new_tokens=4, do_sample=False)
    assert out.shape == (1, prompt.shape[1] + 4)
    report = session.budget()
    # one prefill + 3 decode steps, 2 layers, 2 KV heads
    assert report.lookups == 4 * 2 * 2
    assert 0.0 < report.kept_fraction < 1.0
    diag = session.attention_diagnostics()
    assert 0.0 <= diag.mass_recall <= 1.0 and diag.output_error >= 0.0


def test_batch_of_questions_sharing_the_context(model, context, index):
    ref = tiny_llama("sdpa")
    questions = torch.randint(3, 300, (3, 6), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = ref(input_ids=torch.cat([context.expand(3, -1), questions], 1)).logits[:, -6:]
        with serve(model, index, _settings(budget=1.0)):
            got = model(input_ids=questions, cache=index.new_cache(3), use_cache=True).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_cache_without_fixed_context_is_an_error(model, index):
    with torch.no_grad(), serve(model, index, _settings(budget=0.5)):
        with pytest.raises(ValueError, match="fixed context"):
            model(input_ids=torch.randint(3, 300, (1, 4)))


def test_backend_is_restored_after_serving(model, index):
    with serve(model, index, _settings(budget=0.5)):
        pass
    assert model.config._attn_implementation == "squeezed"
    assert all("_squeezed_state" not in m.__dict__ for m in model.modules())


def test_padded_user_inputs_match_sdpa(model, context, index):
    ref = tiny_llama("sdpa")
    questions = torch.randint(3, 300, (2, 6), generator=torch.Generator().manual_seed(6))
    pad = torch.ones(2, 6, dtype=torch.long)
    pad[1, 4:] = 0  # second question is 4 tokens, right-padded
    full_mask = torch.cat([torch.ones(2, context.shape[1], dtype=torch.long), pad], 1)
    with torch.no_grad():
        expected = ref(input_ids=torch.cat([context.expand(2, -1), questions], 1), attention_mask=full_mask).logits
        with serve(model, index, _settings(budget=1.0)):
            got = model(input_ids=questions, attention_mask=full_mask, cache=index.new_cache(2), use_cache=True).logits
    torch.testing.assert_close(got[0], expected[0, -6:], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got[1, :4], expected[1, -6:-2], rtol=1e-4, atol=1e-4)


def test_drop_in_module_forward_equals_dense_attention(index):
    layer = index.layers[0]
    n = layer.num_tokens
    q = torch.randn(1, 4, 3, 16)
    k_dyn, v_dyn = torch.randn(1, 2, 3, 16), torch.randn(1, 2, 3, 16)
    key = torch.cat([layer.keys, k_dyn], 2)
    value = torch.cat([layer.values, v_dyn], 2)
    attn = _settings(budget=1.0).bind(index)
    out = attn(q, key, value, layer=layer, scale=0.25)
    causal = torch.ones(3, n + 3, dtype=torch.bool).tril(diagonal=n)
    expected = torch.nn.functional.scaled_dot_product_attention(
        q, key.repeat_interleave(2, 1), value.repeat_interleave(2, 1), attn_mask=causal, scale=0.25
    )
    torch.testing.assert_close(out.out, expected, rtol=1e-5, atol=1e-5)
    assert torch.all(out.selection.key_counts == n)
