"""RoPE + cache write: the reference equals Transformers' Llama RoPE; the Triton kernel equals the reference."""

from __future__ import annotations

import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from framework.kernels.squeezed_attention import rope_cache_write

from .helpers import INTERPRET


def _inputs(dtype, b=2, t=5, hq=6, hkv=2, d=16, cap=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, t, h, d, generator=g).to(dtype) for h in (hq, hkv, hkv))
    ang = torch.rand(b, t, d // 2, generator=g) * 6
    cos = torch.cat([ang.cos(), ang.cos()], -1).to(dtype)
    sin = torch.cat([ang.sin(), ang.sin()], -1).to(dtype)
    pos = torch.tensor([3, 4, 5, 6, 7])[:t]
    caches = [torch.full((b, hkv, cap, d), 7.0, dtype=dtype) for _ in range(2)]
    return q, k, v, cos, sin, pos, caches


def test_reference_equals_transformers_rope_and_writes_only_the_positions():
    q, k, v, cos, sin, pos, (kc, vc) = _inputs(torch.float32)
    qo = rope_cache_write(q, k, v, cos, sin, pos, kc, vc, backend="reference")
    eq, ek = apply_rotary_pos_emb(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
    torch.testing.assert_close(qo, eq, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(kc[:, :, pos], ek, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(vc[:, :, pos], v.transpose(1, 2))
    untouched = torch.ones(kc.shape[2], dtype=torch.bool)
    untouched[pos] = False
    assert (kc[:, :, untouched] == 7).all() and (vc[:, :, untouched] == 7).all()
    assert qo.is_contiguous()


@pytest.mark.skipif(not INTERPRET, reason="CPU interpreter tests (TRITON_INTERPRET=1)")
@pytest.mark.parametrize("dtype,hq,hkv", [(torch.float32, 6, 2), (torch.float16, 4, 4), (torch.float32, 3, 1)])
def test_kernel_equals_reference(dtype, hq, hkv):
    q, k, v, cos, sin, pos, (kc, vc) = _inputs(dtype, hq=hq, hkv=hkv, seed=1)
    kc2, vc2 = kc.clone(), vc.clone()
    ref = rope_cache_write(q, k, v, cos, sin, pos, kc, vc, backend="reference")
    got = rope_cache_write(q, k, v, cos, sin, pos, kc2, vc2, backend="triton")
    tol = 1e-6 if dtype == torch.float32 else 2e-3
    torch.testing.assert_close(got, ref, rtol=tol, atol=tol)
    torch.testing.assert_close(kc2, kc, rtol=tol, atol=tol)
    assert torch.equal(vc2, vc)


def test_bad_shapes():
    q, k, v, cos, sin, pos, (kc, vc) = _inputs(torch.float32)
    with pytest.raises(ValueError, match="cos/sin"):
        rope_cache_write(q, k, v, cos[:, :2], sin, pos, kc, vc, backend="reference")
    with pytest.raises(ValueError, match="caches must be contiguous"):
        rope_cache_write(q, k, v, cos, sin, pos, kc.transpose(2, 3), vc, backend="reference")
    with pytest.raises(ValueError, match="k and v"):
        rope_cache_write(q, k[:, :, :1], v, cos, sin, pos, kc, vc, backend="reference")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("t", [1, 2048])
def test_kernel_bf16_on_gpu(t):
    b, hq, hkv, d, cap = 4, 32, 8, 128, 4096
    g = torch.Generator(device="cuda").manual_seed(3)
    q, k, v = (torch.randn(b, t, h, d, generator=g, device="cuda").bfloat16() for h in (hq, hkv, hkv))
    ang = torch.rand(b, t, d // 2, generator=g, device="cuda") * 100
    cos = torch.cat([ang.cos(), ang.cos()], -1).bfloat16()
    sin = torch.cat([ang.sin(), ang.sin()], -1).bfloat16()
    pos = torch.arange(t, device="cuda") + 1000
    kc, vc = (torch.zeros(b, hkv, cap, d, dtype=torch.bfloat16, device="cuda") for _ in range(2))
    kc2, vc2 = kc.clone(), vc.clone()
    ref = rope_cache_write(q, k, v, cos, sin, pos, kc, vc, backend="reference")
    got = rope_cache_write(q, k, v, cos, sin, pos, kc2, vc2, backend="triton")
    torch.testing.assert_close(got, ref, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(kc2, kc, rtol=1e-2, atol=1e-2)
    assert torch.equal(vc2, vc)
