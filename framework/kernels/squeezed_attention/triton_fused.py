"""Fused decode lookup: centroid logits -> cluster scores -> selection cut in ONE launch (no host sync).

``_fused_lookup_kernel`` runs the split-over-centroids logits of ``_logits_kernel`` (grid (NS, B*Hkv), so one
decode token still fills the GPU); each program then counts itself in a per-(batch, KV head) counter, and the last
program of a (batch, KV head) (the "last CTA", found by an atomic add after its partials are stored) finishes the
lookup: it turns the logits into scores, and writes what ``_take_expand_kernel`` needs to expand the selection in
parallel — the per-block key sums (threshold mode) or the exact budget cut and its per-block sums (budget mode).
That replaces three launches of the split path (logits, scores, budget search) by one. The counter is reset by the
program that finishes, so the next launch (or CUDA-graph replay) finds it at zero.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .triton_lookup import _logits_chunk, _row_log_z
from .triton_select import _budget_cut, _cut_block_sums


@triton.jit
def _fused_lookup_kernel(
    q_ptr, c_ptr, n_ptr, logit_ptr, pm_ptr, pl_ptr, lock_ptr,
    score_ptr, avail_ptr, thr_ptr, krest_ptr, search_ptr, bsum_ptr,
    qk_scale, R, G, T, C, H, NBLK,
    sqb, sqh, sqt, sch, scc, snh,
    NS, D: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, IEEE: tl.constexpr,
    BUDGET: tl.constexpr, BLOCK_NS: tl.constexpr, BLOCK_GT: tl.constexpr, SUM_BLOCK: tl.constexpr,
    SEARCH_BLOCK: tl.constexpr, SINGLE: tl.constexpr,
):
    """Grid (NS, B*Hkv); the R = G*T query rows of one (batch, KV head) per program. Writes ``score [B*Hkv, C]``,
    ``bsum [B*Hkv, NBLK, 2]`` and (budget) ``search [B*Hkv, 2]`` = (cut score bits, keys left at the cut)."""
    pid_s = tl.program_id(0)
    bh = tl.program_id(1)
    _logits_chunk(
        q_ptr, c_ptr, n_ptr, n_ptr, n_ptr, logit_ptr, pm_ptr, pl_ptr, pid_s, bh,
        qk_scale, R, R, G, T, C, H, C, C, sqb, sqh, sqt, sch, scc, snh,
        NS, D, BLOCK_R, BLOCK_C, False, False, IEEE,
    )
    tl.debug_barrier()  # every thread's logits and partials are stored before the release below
    done = tl.atomic_add(lock_ptr + bh, 1, sem="acq_rel")
    if done == NS - 1:
        tl.atomic_xchg(lock_ptr + bh, 0)
        h = bh % H
        # other programs wrote the logits and partials: read them through L2 (.cg)
        log_z = _row_log_z(pm_ptr, pl_ptr, bh, 0, R, R, NS, BLOCK_NS, BLOCK_GT, ".cg")
        offs_g = tl.arange(0, BLOCK_GT)
        score_row = score_ptr + bh * C
        avail_row = avail_ptr + h * C
        bsum_row = bsum_ptr + bh * NBLK * 2
        for c0 in range(0, C, SUM_BLOCK):
            slot = c0 + tl.arange(0, SUM_BLOCK)
            valid = slot < C
            lg = tl.load(logit_ptr + (bh * R + offs_g[:, None]) * C + slot[None, :],
                         mask=(offs_g[:, None] < R) & valid[None, :], other=float("-inf"), cache_modifier=".cg")
            score = tl.sum(tl.exp2(lg - log_z[:, None]), axis=0) / R
            n = tl.load(n_ptr + h * snh + slot, mask=valid, other=0)
            score = tl.where(n > 0, score, 0.0)
            tl.store(score_row + slot, score, mask=valid)
            if not BUDGET:  # keys this block contributes above the threshold (no ties in threshold mode)
                av = tl.load(avail_row + slot, mask=valid, other=0)
                taken = tl.sum(tl.where(valid & (score > tl.load(thr_ptr + h)), av, 0), axis=0)
                tl.store(bsum_row + (c0 // SUM_BLOCK) * 2, taken)
                tl.store(bsum_row + (c0 // SUM_BLOCK) * 2 + 1, 0)
        if BUDGET:
            tl.debug_barrier()  # the score row just stored is read back by other threads of this program
            lo, rest = _budget_cut(score_row, score_row, avail_row, tl.load(krest_ptr + h), C, False,
                                   SEARCH_BLOCK, SINGLE)
            tl.store(search_ptr + bh * 2, lo)
            tl.store(search_ptr + bh * 2 + 1, rest)
            _cut_block_sums(score_row, score_row, avail_row, bsum_row, lo, C, NBLK, False, SEARCH_BLOCK, SUM_BLOCK)
