"""Triton kernels behind :mod:`pretrainctl_kernels.attention` (FlashAttention-2, arXiv:2307.08691).

Layout (B, T, H, D). Logits are produced in log2 units with one multiply (``qk_scale`` = scale *
log2(e), or scale / softcap before the tanh and softcap * log2(e) after it). A QK head dim that is
not a power of two but the sum of two (MLA's 192 = 128 + 64) is split into two tiles (``SPLIT``) so
no zero padding is multiplied: every QK product is ``dot(a, b) + dot(a2, b2)``.

Backward (Alg. 2 of the paper, without atomics): ``_attn_bwd_delta`` computes delta = rowsum(dO * O);
``_attn_bwd_dkdv`` runs one program per key block, loops over every query head of its GQA group and
works in the transposed frame (S^T = K Q^T, so P^T and dS^T come out of the matrix unit already in
the layout the dV and dK products consume: no register transposes); ``_attn_bwd_dq`` runs one program
per query block. Each loop visits the unmasked interior of the causal/window band without a mask and
only the boundary blocks with one; blocks outside the band are never visited.
"""

from __future__ import annotations

import triton
import triton.language as tl


# Kernel signatures carry ~30 scalar arguments (strides, sizes, flags); ruff format would put each on
# its own line and triple the length of this file, so the kernels keep a compact layout.
# fmt: off
@triton.jit
def _tanh(x):
    # tl.tanh is not in every Triton release we target; this form saturates cleanly at +-1.
    return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)


@triton.jit
def _scores(a, b, a2, b2, rows, cols, T, window, qk_scale, softcap, SPLIT: tl.constexpr, MASK: tl.constexpr,
            CAUSAL: tl.constexpr, WINDOW: tl.constexpr, SOFTCAP: tl.constexpr):
    """dot(a, b) (+ dot(a2, b2)) as masked log2-unit logits, plus the tanh the soft-cap backward needs.
    ``rows`` (query index) and ``cols`` (key index) broadcast to the tile, so one body serves S and S^T."""
    s = tl.dot(a, b)
    if SPLIT:
        s = tl.dot(a2, b2, s)
    t = s
    if SOFTCAP:
        t = _tanh(s * qk_scale)
        s = t * softcap
    else:
        s = s * qk_scale
    if MASK:
        keep = (cols < T) & (rows < T)
        if CAUSAL:
            keep = keep & (cols <= rows)
        if WINDOW:
            keep = keep & (cols > rows - window)
        s = tl.where(keep, s, float("-inf"))
    return s, t


@triton.jit
def _load_qk(ptr, offs_t, stride_t, T, DQK: tl.constexpr, BD1: tl.constexpr, BD2: tl.constexpr,
             SPLIT: tl.constexpr):
    """Rows ``offs_t`` of a (T, DQK) head as tiles (R, BD1) and, when split, (R, BD2) for dims BD1..."""
    d1 = tl.arange(0, BD1)
    x = tl.load(ptr + offs_t[:, None] * stride_t + d1[None, :],
                mask=(offs_t[:, None] < T) & (d1[None, :] < DQK), other=0.0)
    x2 = x
    if SPLIT:
        d2 = BD1 + tl.arange(0, BD2)
        x2 = tl.load(ptr + offs_t[:, None] * stride_t + d2[None, :],
                     mask=(offs_t[:, None] < T) & (d2[None, :] < DQK), other=0.0)
    return x, x2


@triton.jit
def _load_v(ptr, offs_t, stride_t, T, DV: tl.constexpr, BDV: tl.constexpr):
    dv = tl.arange(0, BDV)
    return tl.load(ptr + offs_t[:, None] * stride_t + dv[None, :],
                   mask=(offs_t[:, None] < T) & (dv[None, :] < DV), other=0.0)


@triton.jit
def _store_qk(ptr, x, x2, offs_t, stride_t, T, DQK: tl.constexpr, BD1: tl.constexpr, BD2: tl.constexpr,
              SPLIT: tl.constexpr):
    d1 = tl.arange(0, BD1)
    tl.store(ptr + offs_t[:, None] * stride_t + d1[None, :], x.to(ptr.dtype.element_ty),
             mask=(offs_t[:, None] < T) & (d1[None, :] < DQK))
    if SPLIT:
        d2 = BD1 + tl.arange(0, BD2)
        tl.store(ptr + offs_t[:, None] * stride_t + d2[None, :], x2.to(ptr.dtype.element_ty),
                 mask=(offs_t[:, None] < T) & (d2[None, :] < DQK))


@triton.jit
def _row_ranges(m0, T, window, BM: tl.constexpr, BN: tl.constexpr, CAUSAL: tl.constexpr,
                WINDOW: tl.constexpr):
    """For query rows [m0, m0+BM): key blocks [lo, hi) to visit; [flo, fhi) need no mask."""
    zero = m0 * 0  # keeps every bound a tensor even when T is specialised to a constant
    lo = zero
    hi = zero + T
    fhi = zero + (T // BN) * BN
    if CAUSAL:
        hi = tl.minimum(T, m0 + BM)
        fhi = (tl.minimum(m0 + 1, T) // BN) * BN
    flo = lo
    if WINDOW:
        lo = (tl.maximum(0, m0 - window + 1) // BN) * BN
        flo = tl.cdiv(tl.maximum(0, m0 + BM - window), BN) * BN
    if m0 + BM > T:
        fhi = lo  # the last row block holds padding rows: mask everything
    flo = tl.minimum(tl.maximum(flo, lo), hi)
    fhi = tl.minimum(tl.maximum(fhi, flo), hi)
    return lo, hi, flo, fhi


@triton.jit
def _fwd_inner(acc, m_i, l_i, q, q2, k_ptrs, v_ptrs, skt, svt, offs_m, start, end, T, window, qk_scale,
               softcap,
               BN: tl.constexpr, DQK: tl.constexpr, DV: tl.constexpr, BD1: tl.constexpr, BD2: tl.constexpr,
               BDV: tl.constexpr, SPLIT: tl.constexpr, MASK: tl.constexpr, CAUSAL: tl.constexpr,
               WINDOW: tl.constexpr, SOFTCAP: tl.constexpr):
    for n0 in range(start, end, BN):
        offs_n = n0 + tl.arange(0, BN)
        k, k2 = _load_qk(k_ptrs, offs_n, skt, T, DQK, BD1, BD2, SPLIT)  # (BN, BD1), (BN, BD2)
        s, _ = _scores(q, tl.trans(k), q2, tl.trans(k2), offs_m[:, None], offs_n[None, :], T, window,
                       qk_scale,
                       softcap, SPLIT, MASK, CAUSAL, WINDOW, SOFTCAP)  # (BM, BN)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing visible yet
        p = tl.exp2(s - m_use[:, None])
        alpha = tl.exp2(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = _load_v(v_ptrs, offs_n, svt, T, DV, BDV)  # (BN, BDV)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
        m_i = m_new
    return acc, m_i, l_i


@triton.jit
def _attn_fwd(Q, K, V, O, LSE, sqb, sqt, sqh, skb, skt, skh, svb, svt, svh, sob, sot, soh, T, HQ, GROUP,
              window, qk_scale, softcap, DQK: tl.constexpr, DV: tl.constexpr, BM: tl.constexpr,
              BN: tl.constexpr, BD1: tl.constexpr, BD2: tl.constexpr, BDV: tl.constexpr, SPLIT: tl.constexpr,
              CAUSAL: tl.constexpr, WINDOW: tl.constexpr, SOFTCAP: tl.constexpr):
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)  # causal: the longest rows start first
    pid_bh = tl.program_id(1)
    b = pid_bh // HQ
    h = pid_bh % HQ
    hk = h // GROUP
    m0 = pid_m * BM
    offs_m = m0 + tl.arange(0, BM)
    q, q2 = _load_qk(Q + b * sqb + h * sqh, offs_m, sqt, T, DQK, BD1, BD2, SPLIT)  # (BM, BD1), (BM, BD2)
    k_ptrs = K + b * skb + hk * skh
    v_ptrs = V + b * svb + hk * svh
    m_i = tl.zeros([BM], dtype=tl.float32) + float("-inf")
    l_i = tl.zeros([BM], dtype=tl.float32)
    acc = tl.zeros([BM, BDV], dtype=tl.float32)
    lo, hi, flo, fhi = _row_ranges(m0, T, window, BM, BN, CAUSAL, WINDOW)
    acc, m_i, l_i = _fwd_inner(acc, m_i, l_i, q, q2, k_ptrs, v_ptrs, skt, svt, offs_m, lo, flo, T, window,
                               qk_scale, softcap, BN, DQK, DV, BD1, BD2, BDV, SPLIT, True, CAUSAL, WINDOW,
                               SOFTCAP)
    acc, m_i, l_i = _fwd_inner(acc, m_i, l_i, q, q2, k_ptrs, v_ptrs, skt, svt, offs_m, flo, fhi, T, window,
                               qk_scale, softcap, BN, DQK, DV, BD1, BD2, BDV, SPLIT, False, CAUSAL, WINDOW,
                               SOFTCAP)
    acc, m_i, l_i = _fwd_inner(acc, m_i, l_i, q, q2, k_ptrs, v_ptrs, skt, svt, offs_m, fhi, hi, T, window,
                               qk_scale, softcap, BN, DQK, DV, BD1, BD2, BDV, SPLIT, True, CAUSAL, WINDOW,
                               SOFTCAP)
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    acc = acc / l_safe[:, None]
    offs_dv = tl.arange(0, BDV)
    tl.store(O + b * sob + h * soh + offs_m[:, None] * sot + offs_dv[None, :], acc.to(O.dtype.element_ty),
             mask=(offs_m[:, None] < T) & (offs_dv[None, :] < DV))
    # LSE is (B, HQ, T) float32 in log2 units; kernel-internal, never returned to the caller.
    tl.store(LSE + pid_bh * T + offs_m, m_i + tl.log2(l_safe), mask=offs_m < T)


@triton.jit
def _attn_bwd_delta(O, DO, DELTA, sob, sot, soh, T, HQ, DV: tl.constexpr, BM: tl.constexpr,
                    BDV: tl.constexpr):
    """delta_i = sum_d dO_id O_id (Alg. 2 line 4), (B, HQ, T) float32. DO shares O's strides."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    offs_m = pid_m * BM + tl.arange(0, BM)
    off = (pid_bh // HQ) * sob + (pid_bh % HQ) * soh
    o = _load_v(O + off, offs_m, sot, T, DV, BDV).to(tl.float32)
    do = _load_v(DO + off, offs_m, sot, T, DV, BDV).to(tl.float32)
    tl.store(DELTA + pid_bh * T + offs_m, tl.sum(o * do, 1), mask=offs_m < T)


@triton.jit
def _dq_inner(dq, dq2, q, q2, do, lse, delta, k_ptrs, v_ptrs, skt, svt, offs_m, start, end, T, window,
              qk_scale,
              softcap, BN: tl.constexpr, DQK: tl.constexpr, DV: tl.constexpr, BD1: tl.constexpr,
              BD2: tl.constexpr, BDV: tl.constexpr, SPLIT: tl.constexpr, MASK: tl.constexpr,
              CAUSAL: tl.constexpr, WINDOW: tl.constexpr, SOFTCAP: tl.constexpr):
    for n0 in range(start, end, BN):
        offs_n = n0 + tl.arange(0, BN)
        k, k2 = _load_qk(k_ptrs, offs_n, skt, T, DQK, BD1, BD2, SPLIT)  # (BN, BD1), (BN, BD2)
        v = _load_v(v_ptrs, offs_n, svt, T, DV, BDV)  # (BN, BDV)
        s, t = _scores(q, tl.trans(k), q2, tl.trans(k2), offs_m[:, None], offs_n[None, :], T, window,
                       qk_scale,
                       softcap, SPLIT, MASK, CAUSAL, WINDOW, SOFTCAP)
        p = tl.exp2(s - lse[:, None])  # (BM, BN)
        dp = tl.dot(do, tl.trans(v))  # (BM, BN)
        ds = p * (dp - delta[:, None])
        if SOFTCAP:
            ds = ds * (1.0 - t * t)
        ds = ds.to(k.dtype)
        dq = tl.dot(ds, k, dq)
        if SPLIT:
            dq2 = tl.dot(ds, k2, dq2)
    return dq, dq2


@triton.jit
def _attn_bwd_dq(Q, K, V, DO, DQ, LSE, DELTA, sqb, sqt, sqh, skb, skt, skh, svb, svt, svh, sob, sot, soh,
                 T, HQ, GROUP, window, scale, qk_scale, softcap, DQK: tl.constexpr, DV: tl.constexpr,
                 BM: tl.constexpr, BN: tl.constexpr, BD1: tl.constexpr, BD2: tl.constexpr, BDV: tl.constexpr,
                 SPLIT: tl.constexpr, CAUSAL: tl.constexpr, WINDOW: tl.constexpr, SOFTCAP: tl.constexpr):
    # DQ shares Q's strides and DO shares O's strides (the launcher makes them contiguous alike).
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)  # causal: the longest rows start first
    pid_bh = tl.program_id(1)
    b = pid_bh // HQ
    h = pid_bh % HQ
    hk = h // GROUP
    m0 = pid_m * BM
    offs_m = m0 + tl.arange(0, BM)
    q, q2 = _load_qk(Q + b * sqb + h * sqh, offs_m, sqt, T, DQK, BD1, BD2, SPLIT)
    do = _load_v(DO + b * sob + h * soh, offs_m, sot, T, DV, BDV)  # (BM, BDV)
    lse = tl.load(LSE + pid_bh * T + offs_m, mask=offs_m < T, other=0.0)
    delta = tl.load(DELTA + pid_bh * T + offs_m, mask=offs_m < T, other=0.0)
    k_ptrs = K + b * skb + hk * skh
    v_ptrs = V + b * svb + hk * svh
    dq = tl.zeros([BM, BD1], dtype=tl.float32)
    dq2 = tl.zeros([BM, BD2], dtype=tl.float32)
    lo, hi, flo, fhi = _row_ranges(m0, T, window, BM, BN, CAUSAL, WINDOW)
    dq, dq2 = _dq_inner(dq, dq2, q, q2, do, lse, delta, k_ptrs, v_ptrs, skt, svt, offs_m, lo, flo, T, window,
                        qk_scale, softcap, BN, DQK, DV, BD1, BD2, BDV, SPLIT, True, CAUSAL, WINDOW, SOFTCAP)
    dq, dq2 = _dq_inner(dq, dq2, q, q2, do, lse, delta, k_ptrs, v_ptrs, skt, svt, offs_m, flo, fhi, T, window,
                        qk_scale, softcap, BN, DQK, DV, BD1, BD2, BDV, SPLIT, False, CAUSAL, WINDOW, SOFTCAP)
    dq, dq2 = _dq_inner(dq, dq2, q, q2, do, lse, delta, k_ptrs, v_ptrs, skt, svt, offs_m, fhi, hi, T, window,
                        qk_scale, softcap, BN, DQK, DV, BD1, BD2, BDV, SPLIT, True, CAUSAL, WINDOW, SOFTCAP)
    _store_qk(DQ + b * sqb + h * sqh, dq * scale, dq2 * scale, offs_m, sqt, T, DQK, BD1, BD2, SPLIT)


@triton.jit
def _dkdv_inner(dk, dk2, dv, k, k2, v, q_ptrs, do_ptrs, lse_ptr, delta_ptr, sqt, sot, offs_n, start, end, T,
                window, qk_scale, softcap, BM: tl.constexpr, DQK: tl.constexpr, DV: tl.constexpr,
                BD1: tl.constexpr, BD2: tl.constexpr, BDV: tl.constexpr, SPLIT: tl.constexpr,
                MASK: tl.constexpr,
                CAUSAL: tl.constexpr, WINDOW: tl.constexpr, SOFTCAP: tl.constexpr):
    for m0 in range(start, end, BM):
        offs_m = m0 + tl.arange(0, BM)
        q, q2 = _load_qk(q_ptrs, offs_m, sqt, T, DQK, BD1, BD2, SPLIT)  # (BM, BD1), (BM, BD2)
        lse = tl.load(lse_ptr + offs_m, mask=offs_m < T, other=0.0)
        # Transposed frame: S^T (BN, BM) = K Q^T; P^T and dS^T feed dV and dK as the left operand.
        st, tt = _scores(k, tl.trans(q), k2, tl.trans(q2), offs_m[None, :], offs_n[:, None], T, window,
                         qk_scale,
                         softcap, SPLIT, MASK, CAUSAL, WINDOW, SOFTCAP)
        pt = tl.exp2(st - lse[None, :])  # (BN, BM)
        do = _load_v(do_ptrs, offs_m, sot, T, DV, BDV)  # (BM, BDV)
        dv = tl.dot(pt.to(do.dtype), do, dv)
        delta = tl.load(delta_ptr + offs_m, mask=offs_m < T, other=0.0)
        dpt = tl.dot(v, tl.trans(do))  # (BN, BM)
        dst = pt * (dpt - delta[None, :])
        if SOFTCAP:
            dst = dst * (1.0 - tt * tt)
        dst = dst.to(q.dtype)
        dk = tl.dot(dst, q, dk)
        if SPLIT:
            dk2 = tl.dot(dst, q2, dk2)
    return dk, dk2, dv


@triton.jit
def _attn_bwd_dkdv(Q, K, V, DO, DK, DV_, LSE, DELTA, sqb, sqt, sqh, skb, skt, skh, svb, svt, svh, sob, sot,
                   soh, T, HQ, HKV, GROUP, window, scale, qk_scale, softcap, DQK: tl.constexpr,
                   DV: tl.constexpr,
                   BM: tl.constexpr, BN: tl.constexpr, BD1: tl.constexpr, BD2: tl.constexpr,
                   BDV: tl.constexpr,
                   SPLIT: tl.constexpr, CAUSAL: tl.constexpr, WINDOW: tl.constexpr, SOFTCAP: tl.constexpr):
    # DK shares K's strides, DV_ shares V's strides.
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // HKV
    hk = pid_bh % HKV
    n0 = pid_n * BN
    offs_n = n0 + tl.arange(0, BN)
    k, k2 = _load_qk(K + b * skb + hk * skh, offs_n, skt, T, DQK, BD1, BD2, SPLIT)  # (BN, BD1), (BN, BD2)
    v = _load_v(V + b * svb + hk * svh, offs_n, svt, T, DV, BDV)  # (BN, BDV)
    dk = tl.zeros([BN, BD1], dtype=tl.float32)
    dk2 = tl.zeros([BN, BD2], dtype=tl.float32)
    dv = tl.zeros([BN, BDV], dtype=tl.float32)
    # Query blocks [lo, hi) see this key block; [flo, fhi) see all of it with no mask.
    zero = n0 * 0
    lo = zero
    hi = zero + T
    flo = lo
    fhi = zero + (T // BM) * BM
    if CAUSAL:
        lo = (n0 // BM) * BM
        flo = tl.cdiv(n0 + BN - 1, BM) * BM
    if WINDOW:
        hi = tl.minimum(T, n0 + BN - 1 + window)
        fhi = (tl.minimum(T, n0 + window) // BM) * BM
    if n0 + BN > T:
        fhi = lo
    flo = tl.minimum(tl.maximum(flo, lo), hi)
    fhi = tl.minimum(tl.maximum(fhi, flo), hi)
    for g in range(0, GROUP):
        h = hk * GROUP + g
        q_ptrs = Q + b * sqb + h * sqh
        do_ptrs = DO + b * sob + h * soh
        lse_ptr = LSE + (b * HQ + h) * T
        delta_ptr = DELTA + (b * HQ + h) * T
        dk, dk2, dv = _dkdv_inner(dk, dk2, dv, k, k2, v, q_ptrs, do_ptrs, lse_ptr, delta_ptr, sqt, sot,
                                  offs_n,
                                  lo, flo, T, window, qk_scale, softcap, BM, DQK, DV, BD1, BD2, BDV, SPLIT,
                                  True,
                                  CAUSAL, WINDOW, SOFTCAP)
        dk, dk2, dv = _dkdv_inner(dk, dk2, dv, k, k2, v, q_ptrs, do_ptrs, lse_ptr, delta_ptr, sqt, sot,
                                  offs_n,
                                  flo, fhi, T, window, qk_scale, softcap, BM, DQK, DV, BD1, BD2, BDV, SPLIT,
                                  False,
                                  CAUSAL, WINDOW, SOFTCAP)
        dk, dk2, dv = _dkdv_inner(dk, dk2, dv, k, k2, v, q_ptrs, do_ptrs, lse_ptr, delta_ptr, sqt, sot,
                                  offs_n,
                                  fhi, hi, T, window, qk_scale, softcap, BM, DQK, DV, BD1, BD2, BDV, SPLIT,
                                  True,
                                  CAUSAL, WINDOW, SOFTCAP)
    _store_qk(DK + b * skb + hk * skh, dk * scale, dk2 * scale, offs_n, skt, T, DQK, BD1, BD2, SPLIT)
    dvc = tl.arange(0, BDV)
    tl.store(DV_ + b * svb + hk * svh + offs_n[:, None] * svt + dvc[None, :], dv.to(DV_.dtype.element_ty),
             mask=(offs_n[:, None] < T) & (dvc[None, :] < DV))
# fmt: on
