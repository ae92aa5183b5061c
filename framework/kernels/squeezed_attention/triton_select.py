"""Triton kernels turning cluster scores into key index lists, on the GPU and without a host sync.

- ``_select_kernel`` (one program per (batch, KV head)): how many keys every cluster contributes. Threshold: all
  available keys of a cluster scoring above it. Budget: an exact k-th-largest search by bisection over the float
  bit patterns of the (non-negative) scores, weighted by cluster sizes, then ties resolved by cluster id and the
  last cluster cut; writes ``take [BH, C]``, its exclusive prefix ``tstart [BH, C + 1]`` and the key count.
- ``_budget_search_kernel`` + ``_take_expand_kernel`` (cluster-contiguous layout, everything sized in advance):
  the search finds the budget cut and per-block key sums; the expansion then runs in parallel over blocks of
  clusters, each block placing its output from the sums of earlier blocks (threshold mode gets its block sums from
  the scores kernel and needs no search).
- ``_expand_layout_kernel``: serial-path expansion for the layout; every taken cluster writes its run
  ``cluster_offsets[j] + r`` at slots ``tstart[j] + r``; the always-kept tail and zero padding follow. No label
  reads, no per-slot search.
- ``_keep_count_kernel`` / ``_keep_write_kernel``: arbitrary labels; per block of keys, keep = always-kept or
  ``rank_in_cluster < take[label]``; block counts, then an exclusive prefix over blocks gives ascending write
  positions (two launches, no atomics, deterministic).
- ``_alive_compact_kernel``: hierarchical first level; marks fine clusters whose coarse parent survived and
  compacts their ids per (batch, KV head).
"""

from __future__ import annotations

import triton
import triton.language as tl

from .triton_lookup import _row_log_z


@triton.jit
def _weight_ge(score_row, alive_row, avail_row, C, u, HAS_ALIVE: tl.constexpr, BLOCK_C: tl.constexpr):
    """Sum of available keys over clusters whose score bit pattern is >= u."""
    tot = tl.full([], 0, tl.int32)
    for c0 in range(0, C, BLOCK_C):
        offs = c0 + tl.arange(0, BLOCK_C)
        mask = offs < C
        bits = tl.load(score_row + offs, mask=mask, other=0.0).to(tl.int32, bitcast=True)
        av = tl.load(avail_row + offs, mask=mask, other=0)
        if HAS_ALIVE:
            av = tl.where(tl.load(alive_row + offs, mask=mask, other=0) != 0, av, 0)
        tot += tl.sum(tl.where(bits >= u, av, 0), axis=0)
    return tot


@triton.jit
def _select_kernel(
    score_ptr, alive_ptr, avail_ptr, thr_ptr, krest_ptr, nalw_ptr, take_ptr, tstart_ptr, count_ptr,
    C, H,
    BUDGET: tl.constexpr, HAS_ALIVE: tl.constexpr, BLOCK_C: tl.constexpr, SINGLE: tl.constexpr,
):
    """One program per (batch, KV head). With SINGLE the whole score row lives in registers (BLOCK_C >= C), so
    the 31 bisection steps cost one block reduction each; otherwise the row is streamed in tiles per step."""
    bh = tl.program_id(0)
    h = bh % H
    score_row = score_ptr + bh * C
    alive_row = alive_ptr + bh * C
    avail_row = avail_ptr + h * C
    if SINGLE:
        offs = tl.arange(0, BLOCK_C)
        mask = offs < C
        sc = tl.load(score_row + offs, mask=mask, other=0.0)
        av = tl.load(avail_row + offs, mask=mask, other=0)
        if HAS_ALIVE:
            av = tl.where(tl.load(alive_row + offs, mask=mask, other=0) != 0, av, 0)
        if BUDGET:
            bits = sc.to(tl.int32, bitcast=True)
            kr = tl.minimum(tl.load(krest_ptr + h), tl.sum(av, axis=0))
            lo = tl.full([], 0, tl.int32)
            hi = tl.full([], 0x7F800001, tl.int32)  # above every finite non-negative float
            for _ in range(31):  # invariant: weight(bits >= lo) >= kr > weight(bits >= hi)
                mid = lo + (hi - lo) // 2
                ok = tl.sum(tl.where(bits >= mid, av, 0), axis=0) >= kr
                lo = tl.where(ok, mid, lo)
                hi = tl.where(ok, hi, mid)
            rest = kr - tl.sum(tl.where(bits > lo, av, 0), axis=0)
            eq_av = tl.where(bits == lo, av, 0)
            take_eq = tl.minimum(tl.maximum(rest - (tl.cumsum(eq_av, axis=0) - eq_av), 0), eq_av)
            take = tl.where(bits > lo, av, take_eq)
        else:
            take = tl.where(sc > tl.load(thr_ptr + h), av, 0)
        take = tl.where(mask, take, 0)
        tl.store(take_ptr + bh * C + offs, take, mask=mask)
        tl.store(tstart_ptr + bh * (C + 1) + offs, tl.cumsum(take, axis=0) - take, mask=mask)
        taken = tl.sum(take, axis=0)
    else:
        if BUDGET:
            total = _weight_ge(score_row, alive_row, avail_row, C, 0, HAS_ALIVE, BLOCK_C)
            kr = tl.minimum(tl.load(krest_ptr + h), total)
            lo = tl.full([], 0, tl.int32)
            hi = tl.full([], 0x7F800001, tl.int32)
            for _ in range(31):
                mid = lo + (hi - lo) // 2
                ok = _weight_ge(score_row, alive_row, avail_row, C, mid, HAS_ALIVE, BLOCK_C) >= kr
                lo = tl.where(ok, mid, lo)
                hi = tl.where(ok, hi, mid)
            rest = kr - _weight_ge(score_row, alive_row, avail_row, C, lo + 1, HAS_ALIVE, BLOCK_C)
        else:
            thr = tl.load(thr_ptr + h)
        taken = tl.full([], 0, tl.int32)
        eq_before = tl.full([], 0, tl.int32)
        for c0 in range(0, C, BLOCK_C):
            offs = c0 + tl.arange(0, BLOCK_C)
            mask = offs < C
            sc = tl.load(score_row + offs, mask=mask, other=0.0)
            av = tl.load(avail_row + offs, mask=mask, other=0)
            if HAS_ALIVE:
                av = tl.where(tl.load(alive_row + offs, mask=mask, other=0) != 0, av, 0)
            if BUDGET:
                bits = sc.to(tl.int32, bitcast=True)
                eq_av = tl.where(bits == lo, av, 0)
                eq_excl = eq_before + tl.cumsum(eq_av, axis=0) - eq_av
                take_eq = tl.minimum(tl.maximum(rest - eq_excl, 0), eq_av)
                take = tl.where(bits > lo, av, take_eq)
                eq_before += tl.sum(eq_av, axis=0)
            else:
                take = tl.where(sc > thr, av, 0)
            take = tl.where(mask, take, 0)
            tl.store(take_ptr + bh * C + offs, take, mask=mask)
            tl.store(tstart_ptr + bh * (C + 1) + offs, taken + tl.cumsum(take, axis=0) - take, mask=mask)
            taken += tl.sum(take, axis=0)
    tl.store(tstart_ptr + bh * (C + 1) + C, taken)
    tl.store(count_ptr + bh, taken + tl.load(nalw_ptr + h))


@triton.jit
def _expand_layout_kernel(
    take_ptr, tstart_ptr, off_ptr, count_ptr, idx_ptr,
    C, H, K_CAP, NB_C, NB_PAD,
    BLOCK_C: tl.constexpr, RUN: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """Grid (NB_C + NB_PAD, BH). The first NB_C programs each take BLOCK_C clusters and write every taken run
    ``cluster_offsets[j] + r`` at slot ``tstart[j] + r`` (runs stored RUN slots at a time: no per-slot search);
    the last NB_PAD programs write the always-kept tail and the zero padding up to K_CAP."""
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    h = bh % H
    out = idx_ptr + bh * K_CAP
    if pid < NB_C:
        offs_c = pid * BLOCK_C + tl.arange(0, BLOCK_C)
        mask = offs_c < C
        take = tl.load(take_ptr + bh * C + offs_c, mask=mask, other=0)
        start = tl.load(tstart_ptr + bh * (C + 1) + offs_c, mask=mask, other=0)
        run0 = tl.load(off_ptr + h * (C + 1) + offs_c, mask=mask, other=0)
        longest = tl.max(take, axis=0)
        for r0 in range(0, longest, RUN):
            r = r0 + tl.arange(0, RUN)
            slot = start[:, None] + r[None, :]
            keep = (r[None, :] < take[:, None]) & (slot < K_CAP)
            tl.store(out + slot, run0[:, None] + r[None, :], mask=keep)
    else:
        j = pid - NB_C
        total = tl.load(tstart_ptr + bh * (C + 1) + C)
        count = tl.load(count_ptr + bh)
        tail0 = tl.load(off_ptr + h * (C + 1) + C)
        for p0 in range(total + j * BLOCK_P, K_CAP, NB_PAD * BLOCK_P):
            slot = p0 + tl.arange(0, BLOCK_P)
            val = tl.where(slot < count, tail0 + (slot - total), 0)
            tl.store(out + slot, val, mask=slot < K_CAP)


@triton.jit
def _budget_cut(score_row, alive_row, avail_row, krest, C,
                HAS_ALIVE: tl.constexpr, BLOCK_C: tl.constexpr, SINGLE: tl.constexpr):
    """Exact budget cut of one (batch, KV head): the score bit pattern ``lo`` of the last cluster taken and the keys
    ``rest`` still to take from clusters scoring exactly ``lo`` (bisection over the bits of non-negative floats)."""
    lo = tl.full([], 0, tl.int32)
    hi = tl.full([], 0x7F800001, tl.int32)
    if SINGLE:
        offs = tl.arange(0, BLOCK_C)
        mask = offs < C
        bits = tl.load(score_row + offs, mask=mask, other=0.0).to(tl.int32, bitcast=True)
        av = tl.load(avail_row + offs, mask=mask, other=0)
        if HAS_ALIVE:
            av = tl.where(tl.load(alive_row + offs, mask=mask, other=0) != 0, av, 0)
        kr = tl.minimum(krest, tl.sum(av, axis=0))
        for _ in range(31):
            mid = lo + (hi - lo) // 2
            ok = tl.sum(tl.where(bits >= mid, av, 0), axis=0) >= kr
            lo = tl.where(ok, mid, lo)
            hi = tl.where(ok, hi, mid)
        rest = kr - tl.sum(tl.where(bits > lo, av, 0), axis=0)
    else:
        total = _weight_ge(score_row, alive_row, avail_row, C, 0, HAS_ALIVE, BLOCK_C)
        kr = tl.minimum(krest, total)
        for _ in range(31):
            mid = lo + (hi - lo) // 2
            ok = _weight_ge(score_row, alive_row, avail_row, C, mid, HAS_ALIVE, BLOCK_C) >= kr
            lo = tl.where(ok, mid, lo)
            hi = tl.where(ok, hi, mid)
        rest = kr - _weight_ge(score_row, alive_row, avail_row, C, lo + 1, HAS_ALIVE, BLOCK_C)
    return lo, rest


@triton.jit
def _cut_block_sums(score_row, alive_row, avail_row, bsum_row, lo, C, NBLK,
                    HAS_ALIVE: tl.constexpr, BLOCK_C: tl.constexpr, SUM_BLOCK: tl.constexpr):
    """Per block of SUM_BLOCK clusters: keys of clusters above the cut and of clusters tied at it (``bsum [NBLK, 2]``),
    from which ``_take_expand_kernel`` places every block's output without a serial pass."""
    for c0 in range(0, C, BLOCK_C):
        offs = c0 + tl.arange(0, BLOCK_C)
        mask = offs < C
        bits_t = tl.load(score_row + offs, mask=mask, other=0.0).to(tl.int32, bitcast=True)
        av_t = tl.load(avail_row + offs, mask=mask, other=0)
        if HAS_ALIVE:
            av_t = tl.where(tl.load(alive_row + offs, mask=mask, other=0) != 0, av_t, 0)
        full = tl.sum(tl.reshape(tl.where(mask & (bits_t > lo), av_t, 0), [BLOCK_C // SUM_BLOCK, SUM_BLOCK]), axis=1)
        tie = tl.sum(tl.reshape(tl.where(mask & (bits_t == lo), av_t, 0), [BLOCK_C // SUM_BLOCK, SUM_BLOCK]), axis=1)
        blk = c0 // SUM_BLOCK + tl.arange(0, BLOCK_C // SUM_BLOCK)
        tl.store(bsum_row + blk * 2, full, mask=blk < NBLK)
        tl.store(bsum_row + blk * 2 + 1, tie, mask=blk < NBLK)


@triton.jit
def _budget_search_kernel(
    score_ptr, alive_ptr, avail_ptr, krest_ptr, search_ptr, bsum_ptr, C, H, NBLK,
    HAS_ALIVE: tl.constexpr, BLOCK_C: tl.constexpr, SINGLE: tl.constexpr, SUM_BLOCK: tl.constexpr,
):
    """Budget mode, one program per (batch, KV head): the bisection of ``_select_kernel`` alone; stores the cut
    score bits ``lo`` and the keys ``rest`` still to take from clusters scoring exactly ``lo``."""
    bh = tl.program_id(0)
    h = bh % H
    score_row = score_ptr + bh * C
    alive_row = alive_ptr + bh * C
    avail_row = avail_ptr + h * C
    lo, rest = _budget_cut(score_row, alive_row, avail_row, tl.load(krest_ptr + h), C, HAS_ALIVE, BLOCK_C, SINGLE)
    tl.store(search_ptr + bh * 2, lo)
    tl.store(search_ptr + bh * 2 + 1, rest)
    _cut_block_sums(score_row, alive_row, avail_row, bsum_ptr + bh * NBLK * 2, lo, C, NBLK,
                    HAS_ALIVE, BLOCK_C, SUM_BLOCK)


@triton.jit
def _block_take(score_row, alive_row, avail_row, offs, C, thr, lo, rest, eq_before,
                BUDGET: tl.constexpr, HAS_ALIVE: tl.constexpr):
    """Keys taken from each cluster of one block (same rule as ``_select_kernel``) and the block's tie weight."""
    mask = offs < C
    sc = tl.load(score_row + offs, mask=mask, other=0.0)
    av = tl.load(avail_row + offs, mask=mask, other=0)
    if HAS_ALIVE:
        av = tl.where(tl.load(alive_row + offs, mask=mask, other=0) != 0, av, 0)
    if BUDGET:
        bits = sc.to(tl.int32, bitcast=True)
        eq_av = tl.where(bits == lo, av, 0)
        eq_excl = eq_before + tl.cumsum(eq_av, axis=0) - eq_av
        take = tl.where(bits > lo, av, tl.minimum(tl.maximum(rest - eq_excl, 0), eq_av))
    else:
        eq_av = tl.zeros_like(av)
        take = tl.where(sc > thr, av, 0)
    take = tl.where(mask, take, 0)
    eq_av = tl.where(mask, eq_av, 0)
    return take, eq_av


@triton.jit
def _take_expand_kernel(
    score_ptr, alive_ptr, avail_ptr, thr_ptr, search_ptr, off_ptr, nalw_ptr, scratch_ptr, count_ptr, idx_ptr,
    bsum_ptr, C, H, K_CAP, NBLK, NB_PAD,
    BUDGET: tl.constexpr, HAS_ALIVE: tl.constexpr, BLOCK: tl.constexpr, SLOTS: tl.constexpr,
    NITER: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_NB: tl.constexpr,
):
    """Selection + index expansion for a cluster-contiguous layout, in parallel over cluster blocks.

    Grid (NBLK + NB_PAD, BH). Program ``pid < NBLK`` owns clusters ``[pid*BLOCK, (pid+1)*BLOCK)``: it recomputes
    the keys taken by all earlier blocks (cheap, L2 resident) to know where its output starts, then writes its
    slots: each slot finds its cluster by a short binary search over the block's exclusive prefix. The last
    NB_PAD programs write the key count, the always-kept tail and the zero padding up to K_CAP."""
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    h = bh % H
    score_row = score_ptr + bh * C
    alive_row = alive_ptr + bh * C
    avail_row = avail_ptr + h * C
    if BUDGET:
        lo = tl.load(search_ptr + bh * 2)
        rest = tl.load(search_ptr + bh * 2 + 1)
        thr = 0.0
    else:
        lo = 0
        rest = 0
        thr = tl.load(thr_ptr + h)
    # where this block's output starts: keys taken by earlier blocks, from the per-block sums written by the
    # scores kernel (threshold) or the budget search (above-cut and tied keys; ties are taken in cluster order)
    ib = tl.arange(0, BLOCK_NB)
    earlier = ib < tl.minimum(pid, NBLK)
    base = tl.sum(tl.load(bsum_ptr + (bh * NBLK + ib) * 2, mask=earlier, other=0), axis=0)
    eq_before = tl.sum(tl.load(bsum_ptr + (bh * NBLK + ib) * 2 + 1, mask=earlier, other=0), axis=0)
    if BUDGET:
        base += tl.minimum(rest, eq_before)
    out = idx_ptr + bh * K_CAP
    if pid < NBLK:
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        take, eq_av = _block_take(score_row, alive_row, avail_row, offs, C, thr, lo, rest, eq_before,
                                  BUDGET, HAS_ALIVE)
        excl = tl.cumsum(take, axis=0) - take
        local_total = tl.sum(take, axis=0)
        scratch = scratch_ptr + bh * (C + 1) + pid * BLOCK
        tl.store(scratch + tl.arange(0, BLOCK), excl, mask=offs < C)
        tl.debug_barrier()  # the block's prefix is read back below by other threads of this program
        n_valid = tl.minimum(C - pid * BLOCK, BLOCK)
        run_row = off_ptr + h * (C + 1) + pid * BLOCK
        for p0 in range(0, local_total, SLOTS):
            p = p0 + tl.arange(0, SLOTS)
            valid = p < local_total
            lo_j = tl.zeros([SLOTS], tl.int32)
            hi_j = tl.zeros([SLOTS], tl.int32) + n_valid  # excl[lo_j] <= p < excl[hi_j] (excl[n_valid] = total)
            for _ in range(NITER):
                mid = (lo_j + hi_j) // 2
                go = tl.load(scratch + mid) <= p
                lo_j = tl.where(go, mid, lo_j)
                hi_j = tl.where(go, hi_j, mid)
            start = tl.load(scratch + lo_j, mask=valid, other=0)
            run0 = tl.load(run_row + lo_j, mask=valid, other=0)
            slot = base + p
            tl.store(out + slot, run0 + (p - start), mask=valid & (slot < K_CAP))
    else:
        j = pid - NBLK
        total = base
        count = total + tl.load(nalw_ptr + h)
        if j == 0:
            tl.store(count_ptr + bh, count)
        tail0 = tl.load(off_ptr + h * (C + 1) + C)
        for p0 in range(total + j * BLOCK_P, K_CAP, NB_PAD * BLOCK_P):
            slot = p0 + tl.arange(0, BLOCK_P)
            tl.store(out + slot, tl.where(slot < count, tail0 + (slot - total), 0), mask=slot < K_CAP)


@triton.jit
def _keep_flags(lab_ptr, alw_ptr, rank_ptr, take_ptr, bh, h, C, N, offs, HAS_ALWAYS: tl.constexpr):
    mask = offs < N
    lab = tl.load(lab_ptr + h * N + offs, mask=mask, other=0)
    rank = tl.load(rank_ptr + h * N + offs, mask=mask, other=0)
    tk = tl.load(take_ptr + bh * C + lab, mask=mask, other=0)
    keep = rank < tk
    if HAS_ALWAYS:
        keep = keep | (tl.load(alw_ptr + h * N + offs, mask=mask, other=0) != 0)
    return keep & mask


@triton.jit
def _keep_count_kernel(
    lab_ptr, alw_ptr, rank_ptr, take_ptr, bcnt_ptr, C, N, H, NB,
    HAS_ALWAYS: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    offs = pid * BLOCK_K + tl.arange(0, BLOCK_K)
    keep = _keep_flags(lab_ptr, alw_ptr, rank_ptr, take_ptr, bh, bh % H, C, N, offs, HAS_ALWAYS)
    tl.store(bcnt_ptr + bh * NB + pid, tl.sum(keep.to(tl.int32), axis=0))


@triton.jit
def _keep_write_kernel(
    lab_ptr, alw_ptr, rank_ptr, take_ptr, bcnt_ptr, idx_ptr, C, N, H, NB, K_CAP,
    HAS_ALWAYS: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_NB: tl.constexpr,
):
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    offs = pid * BLOCK_K + tl.arange(0, BLOCK_K)
    keep = _keep_flags(lab_ptr, alw_ptr, rank_ptr, take_ptr, bh, bh % H, C, N, offs, HAS_ALWAYS)
    ob = tl.arange(0, BLOCK_NB)
    base = tl.sum(tl.load(bcnt_ptr + bh * NB + ob, mask=ob < pid, other=0), axis=0)
    k32 = keep.to(tl.int32)
    pos = base + tl.cumsum(k32, axis=0) - k32
    tl.store(idx_ptr + bh * K_CAP + pos, offs, mask=keep & (pos < K_CAP))


@triton.jit
def _coarse_rows(pm_ptr, pl_ptr, bh, H, R, GT, NS, FROM_LOGITS: tl.constexpr, ALL_BATCHES: tl.constexpr,
                 BLOCK_NS: tl.constexpr, BLOCK_GT: tl.constexpr):
    """(logits program, first row, ``[BLOCK_GT]`` log2 denominators) of the coarse lookup of (batch, KV head) bh."""
    if ALL_BATCHES:
        prog = bh % H
        row0 = (bh // H) * GT
    else:
        prog = bh
        row0 = 0
    if FROM_LOGITS:
        log_z = _row_log_z(pm_ptr, pl_ptr, prog, row0, R, GT, NS, BLOCK_NS, BLOCK_GT, "")
    else:
        log_z = tl.zeros([BLOCK_GT], tl.float32)
    return prog, row0, log_z


@triton.jit
def _alive_flags(cscore_ptr, f2c_ptr, thr, logit_ptr, csize_ptr, scs, prog, row0, log_z, bh, h, offs,
                 R, GT, L_CAP, C1, C2, FROM_LOGITS: tl.constexpr, BLOCK_GT: tl.constexpr):
    """Bool ``[BLOCK]``: fine clusters ``offs`` whose coarse parent scores above the coarse threshold (coarse scores
    read, or computed here from the coarse lookup logits with FROM_LOGITS)."""
    mask = offs < C2
    parent = tl.load(f2c_ptr + h * C2 + offs, mask=mask, other=0)
    if FROM_LOGITS:
        offs_g = tl.arange(0, BLOCK_GT)
        rows = row0 + offs_g
        lg = tl.load(logit_ptr + (prog * R + rows[:, None]) * L_CAP + parent[None, :],
                     mask=(offs_g[:, None] < GT) & mask[None, :], other=float("-inf"))
        cs = tl.sum(tl.exp2(lg - log_z[:, None]), axis=0) / GT
        n = tl.load(csize_ptr + h * scs + parent, mask=mask, other=0)
        cs = tl.where(n > 0, cs, 0.0)
    else:
        cs = tl.load(cscore_ptr + bh * C1 + parent, mask=mask, other=0.0)
    return (cs > thr) & mask


@triton.jit
def _alive_compact_kernel(
    cscore_ptr, f2c_ptr, thr_ptr, flag_ptr, ids_ptr, cnt_ptr, fscore_ptr,
    logit_ptr, pm_ptr, pl_ptr, csize_ptr, scs, R, GT, NS, L_CAP,
    C1, C2, H,
    BLOCK: tl.constexpr, FROM_LOGITS: tl.constexpr, ALL_BATCHES: tl.constexpr, BLOCK_NS: tl.constexpr,
    BLOCK_GT: tl.constexpr,
):
    """Serial compaction (the baseline), one program per (batch, KV head): fine cluster j is alive iff its coarse
    parent scored above the coarse threshold; writes flags ``[BH, C2]`` int8, ascending ids of alive clusters
    ``[BH, C2]``, their count, and 0 as the fine score of every dead cluster."""
    bh = tl.program_id(0)
    h = bh % H
    thr = tl.load(thr_ptr + h)
    prog, row0, log_z = _coarse_rows(pm_ptr, pl_ptr, bh, H, R, GT, NS, FROM_LOGITS, ALL_BATCHES, BLOCK_NS, BLOCK_GT)
    written = tl.full([], 0, tl.int32)
    for c0 in range(0, C2, BLOCK):
        offs = c0 + tl.arange(0, BLOCK)
        mask = offs < C2
        alive = _alive_flags(cscore_ptr, f2c_ptr, thr, logit_ptr, csize_ptr, scs, prog, row0, log_z, bh, h, offs,
                             R, GT, L_CAP, C1, C2, FROM_LOGITS, BLOCK_GT)
        a32 = alive.to(tl.int32)
        tl.store(flag_ptr + bh * C2 + offs, a32.to(tl.int8), mask=mask)
        tl.store(fscore_ptr + bh * C2 + offs, tl.zeros([BLOCK], tl.float32), mask=mask & ~alive)
        pos = written + tl.cumsum(a32, axis=0) - a32
        tl.store(ids_ptr + bh * C2 + pos, offs, mask=alive)
        written += tl.sum(a32, axis=0)
    tl.store(cnt_ptr + bh, written)


@triton.jit
def _alive_block_kernel(
    cscore_ptr, f2c_ptr, thr_ptr, flag_ptr, bcnt_ptr, fscore_ptr,
    logit_ptr, pm_ptr, pl_ptr, csize_ptr, scs, R, GT, NS, L_CAP,
    C1, C2, H, NBLK,
    BLOCK: tl.constexpr, FROM_LOGITS: tl.constexpr, ALL_BATCHES: tl.constexpr, BLOCK_NS: tl.constexpr,
    BLOCK_GT: tl.constexpr,
):
    """Parallel compaction, pass 1. Grid (NBLK, BH): flags and zeroed dead scores of one block of BLOCK fine
    clusters, and the block's alive count ``bcnt [BH, NBLK]``."""
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    h = bh % H
    thr = tl.load(thr_ptr + h)
    prog, row0, log_z = _coarse_rows(pm_ptr, pl_ptr, bh, H, R, GT, NS, FROM_LOGITS, ALL_BATCHES, BLOCK_NS, BLOCK_GT)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < C2
    alive = _alive_flags(cscore_ptr, f2c_ptr, thr, logit_ptr, csize_ptr, scs, prog, row0, log_z, bh, h, offs,
                         R, GT, L_CAP, C1, C2, FROM_LOGITS, BLOCK_GT)
    a32 = alive.to(tl.int32)
    tl.store(flag_ptr + bh * C2 + offs, a32.to(tl.int8), mask=mask)
    tl.store(fscore_ptr + bh * C2 + offs, tl.zeros([BLOCK], tl.float32), mask=mask & ~alive)
    tl.store(bcnt_ptr + bh * NBLK + pid, tl.sum(a32, axis=0))


@triton.jit
def _alive_ids_kernel(flag_ptr, bcnt_ptr, ids_ptr, cnt_ptr, C2, NBLK, BLOCK: tl.constexpr, BLOCK_NB: tl.constexpr):
    """Parallel compaction, pass 2. Grid (NBLK, BH): each block writes its alive ids from the exclusive prefix of
    the block counts (a prefix sum over blocks instead of one serial pass); block 0 writes the total."""
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    ib = tl.arange(0, BLOCK_NB)
    cnts = tl.load(bcnt_ptr + bh * NBLK + ib, mask=ib < NBLK, other=0)
    base = tl.sum(tl.where(ib < pid, cnts, 0), axis=0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < C2
    a32 = (tl.load(flag_ptr + bh * C2 + offs, mask=mask, other=0) != 0).to(tl.int32)
    pos = base + tl.cumsum(a32, axis=0) - a32
    tl.store(ids_ptr + bh * C2 + pos, offs, mask=a32 != 0)
    if pid == 0:
        tl.store(cnt_ptr + bh, tl.sum(cnts, axis=0))
