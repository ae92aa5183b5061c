"""RoPE + KV-cache write for one decoder layer in one launch (static serving; `StaticLlamaRunner`).

Llama's rotary embedding (``x * cos + rotate_half(x) * sin``, ``rotate_half(x) = cat(-x[D/2:], x[:D/2])``) applied
to the projected queries and keys, the queries written head-major for attention and the keys / values written into
a static per-sequence cache at device-held positions. In Transformers these are ~12 kernels per layer (two RoPEs,
two transposes, two ``index_copy_``); `_rope_cache_kernel` does it in one, reading each input once. The PyTorch
reference is the specification (compared in the tests with Transformers' own ``apply_rotary_pos_emb``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .validation import check_backend, interpreting


@triton.jit
def _rope_cache_kernel(
    q_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr, pos_ptr, qo_ptr, kc_ptr, vc_ptr,
    T, HQ, HKV, CAP,
    D: tl.constexpr, HALF: tl.constexpr, BLOCK_H: tl.constexpr,
):
    """Grid (B*T,): token (b, t). Inputs ``q [B, T, HQ*D]``, ``k, v [B, T, HKV*D]``, ``cos, sin [B, T, D]``
    contiguous; outputs ``qo [B, HQ, T, D]``, caches ``[B, HKV, CAP, D]`` contiguous, row ``pos[t]``."""
    pid = tl.program_id(0).to(tl.int64)
    b = pid // T
    t = pid % T
    offs_d = tl.arange(0, D)
    partner = (offs_d + HALF) % D
    sign = tl.where(offs_d < HALF, -1.0, 1.0)
    cs = tl.load(cos_ptr + pid * D + offs_d).to(tl.float32)
    sn = tl.load(sin_ptr + pid * D + offs_d).to(tl.float32)
    offs_h = tl.arange(0, BLOCK_H)
    # queries: all heads of this token
    qm = (offs_h < HQ)[:, None]
    qrow = q_ptr + pid * HQ * D + offs_h[:, None] * D
    x = tl.load(qrow + offs_d[None, :], mask=qm, other=0.0).to(tl.float32)
    xp = tl.load(qrow + partner[None, :], mask=qm, other=0.0).to(tl.float32)
    qv = x * cs[None, :] + sign[None, :] * xp * sn[None, :]
    qdst = qo_ptr + ((b * HQ + offs_h[:, None]) * T + t) * D + offs_d[None, :]
    tl.store(qdst, qv.to(qo_ptr.dtype.element_ty), mask=qm)
    # keys (rotated) and values into the cache at this token's position
    p = tl.load(pos_ptr + t).to(tl.int64)
    km = (offs_h < HKV)[:, None]
    krow = k_ptr + pid * HKV * D + offs_h[:, None] * D
    x = tl.load(krow + offs_d[None, :], mask=km, other=0.0).to(tl.float32)
    xp = tl.load(krow + partner[None, :], mask=km, other=0.0).to(tl.float32)
    kv = x * cs[None, :] + sign[None, :] * xp * sn[None, :]
    cdst = ((b * HKV + offs_h[:, None]) * CAP + p) * D + offs_d[None, :]
    tl.store(kc_ptr + cdst, kv.to(kc_ptr.dtype.element_ty), mask=km)
    vv = tl.load(v_ptr + pid * HKV * D + offs_h[:, None] * D + offs_d[None, :], mask=km, other=0.0)
    tl.store(vc_ptr + cdst, vv.to(vc_ptr.dtype.element_ty), mask=km)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x [B, H, T, D]``, ``cos/sin [B, T, D]``: Llama RoPE computed in fp32."""
    half = x.shape[-1] // 2
    xf = x.float()
    rot = torch.cat([-xf[..., half:], xf[..., :half]], dim=-1)
    return xf * cos.float()[:, None] + rot * sin.float()[:, None]


def rope_cache_write(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    positions: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    *,
    backend: str = "auto",
) -> torch.Tensor:
    """Rotate ``q`` and ``k``, write ``k``/``v`` into the caches at ``positions``; return the rotated queries.

    Args:
        q: ``[B, T, Hq, D]`` projected queries (``q_proj(x).view(B, T, Hq, D)``); k, v: ``[B, T, Hkv, D]``.
        cos, sin: ``[B, T, D]`` from the model's rotary embedding.
        positions: ``[T]`` int64 cache rows written by the T tokens (device tensor; same for every sequence).
        k_cache, v_cache: ``[B, Hkv, CAP, D]`` contiguous, updated in place.
        backend: "auto" (Triton for CUDA tensors), "triton", "reference".

    Returns:
        ``[B, Hq, T, D]`` contiguous rotated queries (dtype of q).
    """
    b, t, hq, d = q.shape
    hkv = k.shape[2]
    if k.shape != (b, t, hkv, d) or v.shape != k.shape:
        raise ValueError(f"k and v must have shape [B, T, Hkv, D]=[{b}, {t}, {hkv}, {d}], got {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    if cos.shape != (b, t, d) or sin.shape != cos.shape:
        raise ValueError(f"cos/sin must have shape [B, T, D]=[{b}, {t}, {d}], got {tuple(cos.shape)}")
    if k_cache.dim() != 4 or tuple(k_cache.shape[:2]) != (b, hkv) or k_cache.shape[3] != d or \
            v_cache.shape != k_cache.shape or not (k_cache.is_contiguous() and v_cache.is_contiguous()):
        raise ValueError(f"caches must be contiguous [B, Hkv, CAP, D] with B={b}, Hkv={hkv}, D={d}, "
                         f"got {tuple(k_cache.shape)} and {tuple(v_cache.shape)}")
    if d % 2 or d & (d - 1):
        raise ValueError(f"head dim must be an even power of two, got {d}")
    be = check_backend(backend, q, k, v, k_cache)
    if be == "reference":
        qo = _rotate(q.transpose(1, 2), cos, sin).to(q.dtype).contiguous()
        k_cache.index_copy_(2, positions, _rotate(k.transpose(1, 2), cos, sin).to(k_cache.dtype))
        v_cache.index_copy_(2, positions, v.transpose(1, 2).to(v_cache.dtype))
        return qo
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    cos, sin, positions = cos.contiguous(), sin.contiguous(), positions.contiguous()
    qo = torch.empty(b, hq, t, d, dtype=q.dtype, device=q.device)
    _rope_cache_kernel[(b * t,)](
        q, k, v, cos, sin, positions, qo, k_cache, v_cache, t, hq, hkv, k_cache.shape[2],
        D=d, HALF=d // 2, BLOCK_H=triton.next_power_of_2(max(hq, hkv)),
        **({} if interpreting() else {"num_warps": 4}),
    )
    return qo
