"""Graph-captured decode equals the eager step; no host sync in a decode step; flash prefill = Triton prefill (GPU)."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from framework.models.components.squeezed import FixedContextIndex, SqueezedAttention
from framework.models.components.squeezed.static_decoding import (
    SelectionRule,
    StaticLlamaRunner,
    compile_fixed_context,
)

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
N, STEPS = 4096, 8


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=1000, hidden_size=1024, intermediate_size=2048, num_hidden_layers=3,
                      num_attention_heads=8, num_key_value_heads=2, head_dim=128, rope_theta=500000.0,
                      max_position_embeddings=N + 512, tie_word_embeddings=False)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    model.set_attn_implementation("sdpa")
    context = torch.randint(0, 1000, (1, N), generator=torch.Generator().manual_seed(1))
    settings = SqueezedAttention(observation_window=100, centroid_fraction=0.05, kmeans_iters=3)
    index = FixedContextIndex.build(model.model, context, attention=settings, calibration_budgets=(0.3,),
                                    kmeans_init="random")
    compiled = compile_fixed_context(index, budgets=(0.3,))
    question = torch.randint(0, 1000, (2, 64), generator=torch.Generator().manual_seed(2)).cuda()
    return model, compiled, question, context


RUNS = [("dense", None), ("squeezed", SelectionRule(0.1, "topk")), ("squeezed", SelectionRule(0.3, "calibrated"))]


@pytest.fixture(params=["split", "fused"])
def decode_path(request):
    """Run a test with each Triton decode path (``set_decode_path``), restoring the default after."""
    from framework.kernels.squeezed_attention import decode_path as current, set_decode_path

    before = current()
    set_decode_path(request.param)
    yield request.param
    set_decode_path(before)


@pytest.mark.parametrize("attention,rule", RUNS, ids=["dense", "topk", "calibrated"])
def test_graph_step_equals_eager_step(setup, attention, rule, decode_path):
    model, compiled, question, _ = setup
    kw = dict(batch_size=2, capacity=128, attention=attention, rule=rule)
    eager = StaticLlamaRunner(model, compiled, **kw)
    eager.prefill(question)
    expected = [eager.decode_step().clone() for _ in range(STEPS)]
    graphed = StaticLlamaRunner(model, compiled, **kw)
    graphed.prefill(question)
    captured = graphed.capture_decode()
    graphed.prefill(question)
    got = [captured.step().clone() for _ in range(STEPS)]
    torch.cuda.synchronize()
    got, expected = torch.stack(got), torch.stack(expected)
    assert torch.equal(got.argmax(-1), expected.argmax(-1))  # same greedy tokens, hence the same sequences
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-2)  # same kernels; cuBLAS may pick another algorithm


@pytest.mark.parametrize("attention,rule", RUNS, ids=["dense", "topk", "calibrated"])
def test_decode_step_never_syncs_with_the_host(setup, attention, rule, decode_path):
    model, compiled, question, _ = setup
    runner = StaticLlamaRunner(model, compiled, batch_size=2, capacity=128, attention=attention, rule=rule)
    runner.prefill(question)
    runner.decode_step()  # first call compiles kernels and fills per-index caches
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        runner.decode_step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


def test_flash_prefill_equals_triton_prefill(setup):
    """Both bf16 prefill implementations against a float32 forward of the same weights.

    Tolerance from the arithmetic, not fitted to a run: bf16 keeps 8 significant bits (eps = 2^-7), so every
    rounded stage of this 3-layer model (activations, the final bf16 logit) adds a relative error of at most
    eps / 2 of its magnitude; a handful of such stages keeps a logit within ``4 * eps * scale`` of the float32
    logit, ``scale`` = the largest |float32 logit|. The two bf16 implementations must then agree within twice that
    (triangle inequality). The old absolute 0.02 was about one bf16 ulp at |logit| in [2, 4): two correct
    implementations with different accumulation orders can differ by one ulp after the final rounding alone."""
    import copy

    model, compiled, question, context = setup
    out = {}
    for impl in ("triton", "sdpa_flash"):
        runner = StaticLlamaRunner(model, compiled, batch_size=2, capacity=128, attention="dense", dense_prefill=impl)
        out[impl] = runner.prefill(question)
    model32 = copy.deepcopy(model).float()
    prompt = torch.cat([context.cuda().expand(2, -1), question], 1)
    with torch.no_grad():
        ref32 = model32(input_ids=prompt, logits_to_keep=1).logits[:, -1].float()
    del model32
    eps = torch.finfo(torch.bfloat16).eps
    tol = 4 * eps * ref32.abs().max().item()
    for impl, got in out.items():
        err = (got - ref32).abs().max().item()
        assert err <= tol, f"{impl}: max |bf16 - fp32| = {err:.4f} > 4 eps scale = {tol:.4f}"
    gap = (out["sdpa_flash"] - out["triton"]).abs().max().item()
    assert gap <= 2 * tol, f"flash vs triton: {gap:.4f} > {2 * tol:.4f}"


def test_full_budget_runner_matches_transformers_sdpa(setup):
    model, compiled, question, context = setup
    prompt = torch.cat([context.cuda().expand(2, -1), question], 1)
    with torch.no_grad():
        expected = model(input_ids=prompt, logits_to_keep=1).logits[:, -1].float()
    runner = StaticLlamaRunner(model, compiled, batch_size=2, capacity=128, attention="dense")
    got = runner.prefill(question)
    # bf16 model, other summation order: logits within bf16 noise and pointing the same way
    torch.testing.assert_close(got, expected, rtol=0, atol=0.1)
    assert torch.nn.functional.cosine_similarity(got, expected, dim=-1).min() > 0.999


@pytest.mark.parametrize("attention,rule", [("dense", None), ("squeezed", SelectionRule(1.0, "topk"))],
                         ids=["dense", "squeezed-full"])
def test_decode_steps_match_transformers_sdpa(setup, attention, rule, decode_path):
    """Every decode step (fixed context and tail in one split-K buffer) against one Transformers forward."""
    model, compiled, question, context = setup
    runner = StaticLlamaRunner(model, compiled, batch_size=2, capacity=128, attention=attention, rule=rule)
    logits = [runner.prefill(question)]
    tokens = [runner.next_ids.clone()]
    for _ in range(4):
        logits.append(runner.decode_step())
        tokens.append(runner.next_ids.clone())
    generated = torch.cat(tokens[:-1], 1)  # the tokens fed to the decode steps
    full = torch.cat([context.cuda().expand(2, -1), question, generated], 1)
    with torch.no_grad():
        expected = model(input_ids=full, logits_to_keep=generated.shape[1] + 1).logits.float()  # [2, 5, V]
    got = torch.stack(logits, 1)
    torch.testing.assert_close(got, expected, rtol=0, atol=0.1)
    assert torch.nn.functional.cosine_similarity(got, expected, dim=-1).min() > 0.999
