"""Triton attention over selected fixed-context keys (and dense, for baselines and the dynamic part).

- ``_decode_kernel`` (T == 1): flash-decoding. Grid (NSPLIT, B*Hkv); every program takes an equal share of the
  selected keys of one (batch, KV head) (the share is computed on the device from the key count, so no host sync)
  and attends all G query heads of the group to it at once (K/V loaded once per group); writes a normalized
  partial output and its log2-sum-exp. ``_decode_reduce_kernel`` merges the splits exactly and returns the
  natural-log lse.
- ``_prefill_kernel`` (T > 1): FlashAttention-2 forward over the selected keys; rows of a program are
  ``(t, g)`` pairs of one KV head (token-major), so the G query heads of a group share every K/V tile.
With ``DENSE`` the keys are ``0..N-1`` (our dense split-K decode baseline, and dense prefill with optional
bottom-right causal masking for the user-input part).
All softmax arithmetic is fp32 in base 2 (scores pre-multiplied by ``scale * log2(e)``).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _decode_kernel(
    q_ptr, k_ptr, v_ptr, idx_ptr, cnt_ptr, po_ptr, pl_ptr,
    qk_scale, H, G, N, K_CAP,
    sqb, sqh, skb, skh, skn, svb, svh, svn,
    NSPLIT, NS_STRIDE, SPLIT0, D: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr,
    DENSE: tl.constexpr, PREFETCH: tl.constexpr,
    FUSED_REDUCE: tl.constexpr = False, lock_ptr=None, o_ptr=None, lse_ptr=None, sob=0, soh=0, slb=0, slh=0,
):
    """Partials go to split slots ``SPLIT0 .. SPLIT0 + NSPLIT - 1`` of ``NS_STRIDE`` per (batch, KV head): a second
    launch over another key source (the user-input / generated tail) can fill the other slots, and one reduce merges
    both (no separate merge).

    With FUSED_REDUCE there is no reduce launch: every program counts itself in ``lock [B*Hkv]`` (zero on entry)
    after its partial is stored, and the program that completes the NS_STRIDE slots of its (batch, KV head) merges
    them, writes ``o``/``lse`` and resets the counter (so the next launch or graph replay starts from zero)."""
    pid_s = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)  # 64-bit bases: B * Hkv * N * D exceeds 2^31 at batch 8, 32 heads, 128K
    h = (bh % H).to(tl.int64)
    if DENSE:
        count = N
    else:
        count = tl.load(cnt_ptr + bh)
    chunk = tl.cdiv(tl.cdiv(count, NSPLIT), BLOCK_N) * BLOCK_N
    start = pid_s * chunk
    end = tl.minimum(start + chunk, count)
    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, D)
    offs_n = tl.arange(0, BLOCK_N)
    q = tl.load(q_ptr + b * sqb + (h * G + offs_g)[:, None] * sqh + offs_d[None, :],
                mask=(offs_g < G)[:, None], other=0.0)
    q = (q.to(tl.float32) * qk_scale).to(k_ptr.dtype.element_ty)
    k_base = k_ptr + b * skb + h * skh
    v_base = v_ptr + b * svb + h * svh
    m = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, D], tl.float32)
    idx_row = idx_ptr + bh.to(tl.int64) * K_CAP
    if PREFETCH:  # next tile's key ids are loaded one iteration ahead, so K/V gathers never wait on them
        kid_next = tl.load(idx_row + start + offs_n, mask=start + offs_n < end, other=0)
    for n0 in range(start, end, BLOCK_N):
        offs = n0 + offs_n
        valid = offs < end
        if DENSE:
            kid = offs
        elif PREFETCH:
            kid = kid_next
            nxt = offs + BLOCK_N
            kid_next = tl.load(idx_row + nxt, mask=nxt < end, other=0)
        else:
            kid = tl.load(idx_row + offs, mask=valid, other=0)
        kid = kid.to(tl.int64)
        kt = tl.load(k_base + kid[:, None] * skn + offs_d[None, :], mask=valid[:, None], other=0.0)
        vt = tl.load(v_base + kid[:, None] * svn + offs_d[None, :], mask=valid[:, None], other=0.0)
        s = tl.dot(q, tl.trans(kt))
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=1))
        alpha = tl.exp2(m - m_new)
        p = tl.exp2(s - m_new[:, None])
        l = l * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(vt.dtype), vt)
        m = m_new
    has = l > 0
    out = acc / tl.where(has, l, 1.0)[:, None]
    lse2 = tl.where(has, m + tl.log2(tl.where(has, l, 1.0)), float("-inf"))
    row = (bh * NS_STRIDE + SPLIT0 + pid_s) * BLOCK_G + offs_g
    tl.store(po_ptr + row[:, None] * D + offs_d[None, :], out)
    tl.store(pl_ptr + row, lse2)
    if FUSED_REDUCE:
        tl.debug_barrier()  # every thread's partial is stored before the release below
        done = tl.atomic_add(lock_ptr + bh, 1, sem="acq_rel")
        if done == NS_STRIDE - 1:
            tl.atomic_xchg(lock_ptr + bh, 0)
            _merge_splits(po_ptr, pl_ptr, o_ptr, lse_ptr, bh, b, h, G, NS_STRIDE, sob, soh, slb, slh,
                          D, BLOCK_G)


@triton.jit
def _merge_splits(po_ptr, pl_ptr, o_ptr, lse_ptr, bh, b, h, G, NS, sob, soh, slb, slh,
                  D: tl.constexpr, BLOCK_G: tl.constexpr):
    """Exact merge of the NS split partials of the G query heads of (batch ``b``, KV head ``h``) (fused reduce).
    Partials are read through L2 (``.cg``): other programs wrote them."""
    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, D)
    base = bh * NS
    big = tl.full([BLOCK_G], float("-inf"), tl.float32)
    for s in range(0, NS):
        big = tl.maximum(big, tl.load(pl_ptr + (base + s) * BLOCK_G + offs_g, cache_modifier=".cg"))
    big_safe = tl.where(big == float("-inf"), 0.0, big)
    wsum = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, D], tl.float32)
    for s in range(0, NS):
        row = (base + s) * BLOCK_G + offs_g
        w = tl.exp2(tl.load(pl_ptr + row, cache_modifier=".cg") - big_safe)
        wsum += w
        acc += tl.load(po_ptr + row[:, None] * D + offs_d[None, :], cache_modifier=".cg") * w[:, None]
    has = wsum > 0
    out = acc / tl.where(has, wsum, 1.0)[:, None]
    lse = tl.where(has, (big_safe + tl.log2(tl.where(has, wsum, 1.0))) * 0.6931471805599453, float("-inf"))
    hq = h * G + offs_g
    gmask = offs_g < G
    tl.store(o_ptr + b * sob + hq[:, None] * soh + offs_d[None, :], out.to(o_ptr.dtype.element_ty),
             mask=gmask[:, None])
    tl.store(lse_ptr + b * slb + hq * slh, lse, mask=gmask)


@triton.jit
def _decode_reduce_kernel(
    po_ptr, pl_ptr, o_ptr, lse_ptr, H, G,
    sob, soh, slb, slh,
    NSPLIT, BLOCK_S: tl.constexpr, D: tl.constexpr, BLOCK_G: tl.constexpr,
):
    """Grid (B*Hq,): exact merge of the NSPLIT partials of one query head."""
    pid = tl.program_id(0).to(tl.int64)
    hq_all = H * G
    b = pid // hq_all
    hq = pid % hq_all
    h = hq // G
    g = hq % G
    bh = b * H + h
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, D)
    row = (bh * NSPLIT + offs_s) * BLOCK_G + g
    smask = offs_s < NSPLIT
    lse2 = tl.load(pl_ptr + row, mask=smask, other=float("-inf"))
    big = tl.max(lse2, axis=0)
    big_safe = tl.where(big == float("-inf"), 0.0, big)
    w = tl.exp2(lse2 - big_safe)
    wsum = tl.sum(w, axis=0)
    po = tl.load(po_ptr + row[:, None] * D + offs_d[None, :], mask=smask[:, None], other=0.0)
    out = tl.sum(po * w[:, None], axis=0) / tl.where(wsum > 0, wsum, 1.0)
    lse = tl.where(wsum > 0, (big_safe + tl.log2(tl.where(wsum > 0, wsum, 1.0))) * 0.6931471805599453,
                   float("-inf"))
    tl.store(o_ptr + b * sob + hq * soh + offs_d, out.to(o_ptr.dtype.element_ty))
    tl.store(lse_ptr + b * slb + hq * slh, lse)


@triton.jit
def _prefill_kernel(
    q_ptr, k_ptr, v_ptr, idx_ptr, cnt_ptr, o_ptr, lse_ptr,
    qk_scale, H, G, T, N, K_CAP,
    sqb, sqh, sqt, skb, skh, skn, svb, svh, svn, sob, soh, sot, slb, slh,
    D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    DENSE: tl.constexpr, CAUSAL: tl.constexpr,
):
    """Grid (cdiv(T*G, BLOCK_M), B*Hkv); row r = t * G + g."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    offs_r = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = offs_r < T * G
    t = offs_r // G
    g = offs_r % G
    offs_d = tl.arange(0, D)
    offs_n = tl.arange(0, BLOCK_N)
    q = tl.load(q_ptr + b * sqb + (h * G + g)[:, None] * sqh + t[:, None] * sqt + offs_d[None, :],
                mask=rmask[:, None], other=0.0)
    q = (q.to(tl.float32) * qk_scale).to(k_ptr.dtype.element_ty)
    if DENSE:
        count = N
    else:
        count = tl.load(cnt_ptr + bh)
    if CAUSAL:
        t_last = tl.minimum((pid_m * BLOCK_M + BLOCK_M - 1) // G, T - 1)
        count = tl.maximum(tl.minimum(count, t_last + N - T + 1), 0)
    k_base = k_ptr + b * skb + h * skh
    v_base = v_ptr + b * svb + h * svh
    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D], tl.float32)
    for n0 in range(0, count, BLOCK_N):
        offs = n0 + offs_n
        valid = offs < count
        if DENSE:
            kid = offs
        else:
            kid = tl.load(idx_ptr + bh.to(tl.int64) * K_CAP + offs, mask=valid, other=0)
        kid = kid.to(tl.int64)
        kt = tl.load(k_base + kid[:, None] * skn + offs_d[None, :], mask=valid[:, None], other=0.0)
        vt = tl.load(v_base + kid[:, None] * svn + offs_d[None, :], mask=valid[:, None], other=0.0)
        s = tl.dot(q, tl.trans(kt))
        allowed = valid[None, :]
        if CAUSAL:
            allowed = allowed & (offs[None, :] <= t[:, None] + (N - T))
        s = tl.where(allowed, s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # causal rows may see no key of this tile yet
        alpha = tl.exp2(m - m_safe)
        p = tl.exp2(s - m_safe[:, None])
        l = l * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(vt.dtype), vt)
        m = m_new
    has = l > 0
    out = acc / tl.where(has, l, 1.0)[:, None]
    lse = tl.where(has, (m + tl.log2(tl.where(has, l, 1.0))) * 0.6931471805599453, float("-inf"))
    hq = h * G + g
    tl.store(o_ptr + b * sob + hq[:, None] * soh + t[:, None] * sot + offs_d[None, :],
             out.to(o_ptr.dtype.element_ty), mask=rmask[:, None])
    tl.store(lse_ptr + b * slb + hq * slh + t, lse, mask=rmask)


@triton.jit
def _merge_kernel(
    oa_ptr, la_ptr, ob_ptr, lb_ptr, o_ptr, l_ptr, R,
    D: tl.constexpr, BLOCK_R: tl.constexpr,
):
    """Grid (cdiv(R, BLOCK_R),): exact log-sum-exp merge of two attentions of the same R query rows (one launch
    instead of the ~15 elementwise kernels of the PyTorch merge). An empty side (lse -inf) is neutral; rows empty
    on both sides get out 0 and lse -inf."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < R
    la = tl.load(la_ptr + rows, mask=rmask, other=float("-inf"))
    lb = tl.load(lb_ptr + rows, mask=rmask, other=float("-inf"))
    m = tl.maximum(la, lb)
    m_safe = tl.where(m == float("-inf"), 0.0, m)
    wa = tl.exp(la - m_safe)
    wb = tl.exp(lb - m_safe)
    den = wa + wb
    ok = den > 0
    den_safe = tl.where(ok, den, 1.0)
    inv = tl.where(ok, 1.0 / den_safe, 0.0)
    lse = tl.where(ok, m_safe + tl.log(den_safe), float("-inf"))
    offs_d = tl.arange(0, D)
    ptrs = rows[:, None] * D + offs_d[None, :]
    oa = tl.load(oa_ptr + ptrs, mask=rmask[:, None], other=0.0).to(tl.float32)
    ob = tl.load(ob_ptr + ptrs, mask=rmask[:, None], other=0.0).to(tl.float32)
    out = oa * (wa * inv)[:, None] + ob * (wb * inv)[:, None]
    tl.store(o_ptr + ptrs, out.to(o_ptr.dtype.element_ty), mask=rmask[:, None])
    tl.store(l_ptr + rows, lse, mask=rmask)
