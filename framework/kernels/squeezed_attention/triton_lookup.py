"""Triton kernels scoring centroids: estimated cluster probabilities (notes §3.2), computed in log2 space.

Two shapes of work:
- few query rows (decode, short inputs): ``_logits_kernel`` splits the centroid axis over many programs (so a
  single decode token still fills the GPU), writes the scaled logits and per-split (max, size-weighted sum);
  ``_scores_kernel`` reduces the splits and turns logits into averaged probabilities.
- many query rows (prefill): ``_rows_kernel`` takes a block of query rows, streams every centroid twice (pass 1:
  running max and size-weighted denominator; pass 2: probabilities summed over its rows) and writes one partial
  score row per row block; the host sums the row blocks.
Both can run over a per-(batch, head) list of cluster ids (hierarchical second level: only surviving clusters).
Query rows of a KV head are ``(b, g, t)``; GQA heads of a group share one selection, so their rows are averaged.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _load_rows(q_ptr, r, R, GT, G, T, h, sqb, sqh, sqt, offs_d):
    """Rows ``r`` -> query vectors ``[BLOCK_R, D]``; row r = (b, g, t) with b = r // GT, g = (r // T) % G."""
    b = r // GT
    rem = r % GT
    g = rem // T
    t = rem % T
    ptrs = q_ptr + b[:, None] * sqb + (h * G + g)[:, None] * sqh + t[:, None] * sqt + offs_d[None, :]
    return tl.load(ptrs, mask=(r < R)[:, None], other=0.0)


@triton.jit
def _logits_chunk(
    q_ptr, c_ptr, n_ptr, ids_ptr, ids_cnt_ptr, logit_ptr, pm_ptr, pl_ptr, pid_s, prog,
    qk_scale, R, GT, G, T, C, H, ID_CAP, L_CAP,
    sqb, sqh, sqt, sch, scc, snh,
    NS, D: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
    USE_IDS: tl.constexpr, ALL_BATCHES: tl.constexpr, IEEE: tl.constexpr,
):
    """Body of ``_logits_kernel`` for split ``pid_s`` of program ``prog`` (shared with the fused decode lookup)."""
    if ALL_BATCHES:
        h = prog
        q_base = q_ptr
    else:
        h = prog % H
        q_base = q_ptr + (prog // H) * sqb
    if USE_IDS:
        count = tl.load(ids_cnt_ptr + prog)
    else:
        count = C
    chunk = tl.cdiv(tl.cdiv(count, NS), BLOCK_C) * BLOCK_C
    start = pid_s * chunk
    end = tl.minimum(start + chunk, count)
    offs_r = tl.arange(0, BLOCK_R)
    offs_d = tl.arange(0, D)
    offs_c = tl.arange(0, BLOCK_C)
    q = _load_rows(q_base, offs_r, R, GT, G, T, h, sqb, sqh, sqt, offs_d)
    q = (q.to(tl.float32) * qk_scale).to(c_ptr.dtype.element_ty)
    m = tl.full([BLOCK_R], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_R], tl.float32)
    for c0 in range(start, end, BLOCK_C):
        slot = c0 + offs_c
        valid = slot < end
        if USE_IDS:
            cid = tl.load(ids_ptr + prog * ID_CAP + slot, mask=valid, other=0)
        else:
            cid = slot
        cen = tl.load(c_ptr + h * sch + cid[:, None] * scc + offs_d[None, :], mask=valid[:, None], other=0.0)
        if IEEE:
            s = tl.dot(q, tl.trans(cen), input_precision="ieee")
        else:
            s = tl.dot(q, tl.trans(cen))
        n = tl.load(n_ptr + h * snh + cid, mask=valid, other=0).to(tl.float32)
        tl.store(logit_ptr + (prog * R + offs_r[:, None]) * L_CAP + slot[None, :], s,
                 mask=(offs_r[:, None] < R) & valid[None, :])
        s = tl.where((n > 0)[None, :], s, float("-inf"))  # empty clusters leave the denominator
        m_new = tl.maximum(m, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        l = l * tl.exp2(m - m_safe) + tl.sum(n[None, :] * tl.exp2(s - m_safe[:, None]), axis=1)
        m = m_new
    out = (prog * NS + pid_s) * R + offs_r
    tl.store(pm_ptr + out, m, mask=offs_r < R)
    tl.store(pl_ptr + out, l, mask=offs_r < R)


@triton.jit
def _row_log_z(pm_ptr, pl_ptr, prog, row0, R, GT, NS, BLOCK_NS: tl.constexpr, BLOCK_GT: tl.constexpr,
               CACHE: tl.constexpr):
    """``[BLOCK_GT]`` log2 of the size-weighted softmax denominator of rows ``row0 ..`` from the NS split partials
    (+inf for a row without a non-empty cluster, so all its probabilities are 0)."""
    offs_s = tl.arange(0, BLOCK_NS)
    offs_g = tl.arange(0, BLOCK_GT)
    rows = row0 + offs_g
    pmask = (offs_s[:, None] < NS) & (offs_g[None, :] < GT)
    pidx = (prog * NS + offs_s[:, None]) * R + rows[None, :]
    pm = tl.load(pm_ptr + pidx, mask=pmask, other=float("-inf"), cache_modifier=CACHE)
    pl = tl.load(pl_ptr + pidx, mask=pmask, other=0.0, cache_modifier=CACHE)
    big_m = tl.max(pm, axis=0)
    m_safe = tl.where(big_m == float("-inf"), 0.0, big_m)
    z = tl.sum(pl * tl.exp2(pm - m_safe[None, :]), axis=0)
    return tl.where(z > 0, m_safe + tl.log2(tl.where(z > 0, z, 1.0)), float("inf"))


@triton.jit
def _logits_kernel(
    q_ptr, c_ptr, n_ptr, ids_ptr, ids_cnt_ptr, logit_ptr, pm_ptr, pl_ptr,
    qk_scale, R, GT, G, T, C, H, ID_CAP, L_CAP,
    sqb, sqh, sqt, sch, scc, snh,
    NS, D: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
    USE_IDS: tl.constexpr, ALL_BATCHES: tl.constexpr, IEEE: tl.constexpr,
):
    """Grid (NS, H) when ALL_BATCHES (rows = every (b, g, t) of head h) else (NS, B*H) (rows = (g, t) of one b).

    Writes logits ``[prog, R, L_CAP]`` (log2 domain, scaled) and split partials ``pm, pl [prog, NS, R]``.
    """
    _logits_chunk(
        q_ptr, c_ptr, n_ptr, ids_ptr, ids_cnt_ptr, logit_ptr, pm_ptr, pl_ptr, tl.program_id(0), tl.program_id(1),
        qk_scale, R, GT, G, T, C, H, ID_CAP, L_CAP, sqb, sqh, sqt, sch, scc, snh,
        NS, D, BLOCK_R, BLOCK_C, USE_IDS, ALL_BATCHES, IEEE,
    )


@triton.jit
def _scores_kernel(
    logit_ptr, pm_ptr, pl_ptr, n_ptr, ids_ptr, ids_cnt_ptr, score_ptr,
    R, GT, C, H, ID_CAP, L_CAP, snh,
    NS, BLOCK_NS: tl.constexpr, BLOCK_GT: tl.constexpr, BLOCK_C: tl.constexpr,
    USE_IDS: tl.constexpr, ALL_BATCHES: tl.constexpr,
    BLOCK_SUMS: tl.constexpr = False, thr_ptr=None, avail_ptr=None, bsum_ptr=None, NBLK=1,
):
    """Grid (cdiv(L_CAP, BLOCK_C), B*H): scores ``[B*H, C]`` = mean over the (g, t) rows of batch b of
    ``n_j``-normalized probabilities; slots beyond the id count are skipped, empty clusters score 0."""
    pid_c = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    if ALL_BATCHES:
        prog = h
        row0 = b * GT
    else:
        prog = bh
        row0 = 0
    if USE_IDS:
        count = tl.load(ids_cnt_ptr + bh)
    else:
        count = C
    log_z = _row_log_z(pm_ptr, pl_ptr, prog, row0, R, GT, NS, BLOCK_NS, BLOCK_GT, "")
    offs_g = tl.arange(0, BLOCK_GT)
    rows = row0 + offs_g
    slot = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    valid = slot < count
    lg = tl.load(logit_ptr + (prog * R + rows[:, None]) * L_CAP + slot[None, :],
                 mask=(offs_g[:, None] < GT) & valid[None, :], other=float("-inf"))
    p = tl.exp2(lg - log_z[:, None])
    score = tl.sum(p, axis=0) / GT
    if USE_IDS:
        cid = tl.load(ids_ptr + bh * ID_CAP + slot, mask=valid, other=0)
    else:
        cid = slot
    n = tl.load(n_ptr + h * snh + cid, mask=valid, other=0)
    score = tl.where(n > 0, score, 0.0)
    tl.store(score_ptr + bh * C + cid, score, mask=valid)
    if BLOCK_SUMS:  # threshold mode: keys this block of clusters contributes (for the parallel expansion)
        av = tl.load(avail_ptr + h * C + cid, mask=valid, other=0)
        taken = tl.sum(tl.where(valid & (score > tl.load(thr_ptr + h)), av, 0), axis=0)
        tl.store(bsum_ptr + (bh * NBLK + pid_c) * 2, taken)
        tl.store(bsum_ptr + (bh * NBLK + pid_c) * 2 + 1, 0)


@triton.jit
def _rows_kernel(
    q_ptr, c_ptr, n_ptr, ids_ptr, ids_cnt_ptr, part_ptr,
    qk_scale, GT, G, T, C, H, ID_CAP, L_CAP, NRB,
    sqb, sqh, sqt, sch, scc, snh,
    D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, USE_IDS: tl.constexpr,
):
    """Grid (NRB, B*H): block of BLOCK_M (g, t) rows of batch b; writes ``part [B*H, NRB, L_CAP]`` = sum over its
    rows of the probabilities of every listed cluster (two passes over the centroids, nothing else stored)."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    if USE_IDS:
        count = tl.load(ids_cnt_ptr + bh)
    else:
        count = C
    offs_r = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    offs_c = tl.arange(0, BLOCK_C)
    q = _load_rows(q_ptr + b * sqb, offs_r, GT, GT, G, T, h, sqb, sqh, sqt, offs_d)
    q = (q.to(tl.float32) * qk_scale).to(c_ptr.dtype.element_ty)
    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_M], tl.float32)
    for c0 in range(0, count, BLOCK_C):
        slot = c0 + offs_c
        valid = slot < count
        if USE_IDS:
            cid = tl.load(ids_ptr + bh * ID_CAP + slot, mask=valid, other=0)
        else:
            cid = slot
        cen = tl.load(c_ptr + h * sch + cid[:, None] * scc + offs_d[None, :], mask=valid[:, None], other=0.0)
        n = tl.load(n_ptr + h * snh + cid, mask=valid, other=0).to(tl.float32)
        s = tl.dot(q, tl.trans(cen))
        s = tl.where((n > 0)[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        l = l * tl.exp2(m - m_safe) + tl.sum(n[None, :] * tl.exp2(s - m_safe[:, None]), axis=1)
        m = m_new
    log_z = tl.where(l > 0, m + tl.log2(tl.where(l > 0, l, 1.0)), float("inf"))
    log_z = tl.where(offs_r < GT, log_z, float("inf"))  # padding rows add nothing
    q_t = tl.trans(q)  # pass 2 works on S^T so the sum over query rows is a within-warp row reduction
    for c0 in range(0, count, BLOCK_C):
        slot = c0 + offs_c
        valid = slot < count
        if USE_IDS:
            cid = tl.load(ids_ptr + bh * ID_CAP + slot, mask=valid, other=0)
        else:
            cid = slot
        cen = tl.load(c_ptr + h * sch + cid[:, None] * scc + offs_d[None, :], mask=valid[:, None], other=0.0)
        s_t = tl.dot(cen, q_t)  # [BLOCK_C, BLOCK_M]
        p = tl.exp2(s_t - log_z[None, :])
        tl.store(part_ptr + (bh * NRB + pid_m) * L_CAP + slot, tl.sum(p, axis=1), mask=valid)
