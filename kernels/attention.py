"""Fused attention forward and backward in Triton (FlashAttention-2, Dao 2023, arXiv:2307.08691).

Layout is (B, T, H, D) throughout, the layout the projections produce, so no transpose is needed.
Supported: causal and bidirectional masks, causal sliding windows (query i sees keys in
(i - window, i]), grouped-query / multi-query attention (Hq a multiple of Hkv; a query head reads its
key/value head by index, nothing is repeated in memory), a QK head dim that differs from the V head
dim (MLA's 192/128, DeepSeek-V2, arXiv:2405.04434), tanh logit soft-capping (Gemma 2, arXiv:2408.00118)
and sequence lengths that are not multiples of the block size. Softmax statistics and all matmuls
accumulate in float32; the forward saves the row log-sum-exp for the backward pass.

The backward runs two kernels instead of one with atomics: one program per key block computes dK and
dV, looping over every query head of its group (so GQA needs no atomics and no repeated K/V), and one
program per query block computes dQ. Atomics would also exclude float16 from the CPU interpreter.
Each kernel visits the unmasked interior of the causal/window band without building a mask, and only
the boundary blocks with one.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["attention", "attention_ref", "AttentionBlocks"]

LOG2E = 1.4426950408889634


# Kernel signatures carry ~30 scalar arguments (strides, sizes, flags); ruff format would put each on
# its own line and triple the length of this section, so the kernels keep a compact layout.
# fmt: off
@triton.jit
def _tanh(x):
    # tl.tanh is not in every Triton release we target; this form saturates cleanly at +-1.
    return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)


@triton.jit
def _scores(q, k, offs_m, offs_n, T, window, scale, softcap, MASK: tl.constexpr, CAUSAL: tl.constexpr,
            WINDOW: tl.constexpr, SOFTCAP: tl.constexpr):
    """Logits in log2 units, (BM, BN), plus the tanh value the soft-cap backward needs."""
    s = tl.dot(q, tl.trans(k)) * scale  # (BM, BN), fp32
    t = s
    if SOFTCAP:
        t = _tanh(s / softcap)
        s = softcap * t
    s = s * 1.4426950408889634
    if MASK:
        keep = (offs_n[None, :] < T) & (offs_m[:, None] < T)
        if CAUSAL:
            keep = keep & (offs_n[None, :] <= offs_m[:, None])
        if WINDOW:
            keep = keep & (offs_n[None, :] > offs_m[:, None] - window)
        s = tl.where(keep, s, float("-inf"))
    return s, t


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
def _fwd_inner(acc, m_i, l_i, q, k_ptrs, v_ptrs, stride_kt, stride_vt, offs_m, start, end, T, window,
               scale, softcap, BN: tl.constexpr, DQK: tl.constexpr, DV: tl.constexpr,
               BDQK: tl.constexpr, BDV: tl.constexpr, MASK: tl.constexpr, CAUSAL: tl.constexpr,
               WINDOW: tl.constexpr, SOFTCAP: tl.constexpr):
    offs_dk = tl.arange(0, BDQK)
    offs_dv = tl.arange(0, BDV)
    for n0 in range(start, end, BN):
        offs_n = n0 + tl.arange(0, BN)
        k = tl.load(k_ptrs + offs_n[:, None] * stride_kt + offs_dk[None, :],
                    mask=(offs_n[:, None] < T) & (offs_dk[None, :] < DQK), other=0.0)  # (BN, DQK)
        v = tl.load(v_ptrs + offs_n[:, None] * stride_vt + offs_dv[None, :],
                    mask=(offs_n[:, None] < T) & (offs_dv[None, :] < DV), other=0.0)  # (BN, DV)
        s, _ = _scores(q, k, offs_m, offs_n, T, window, scale, softcap, MASK, CAUSAL, WINDOW, SOFTCAP)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing visible yet
        p = tl.exp2(s - m_use[:, None])
        alpha = tl.exp2(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    return acc, m_i, l_i


@triton.jit
def _attn_fwd(Q, K, V, O, LSE, sqb, sqt, sqh, skb, skt, skh, svb, svt, svh, sob, sot, soh, T, HQ, GROUP,
              window, scale, softcap, DQK: tl.constexpr, DV: tl.constexpr, BM: tl.constexpr,
              BN: tl.constexpr, BDQK: tl.constexpr, BDV: tl.constexpr, CAUSAL: tl.constexpr,
              WINDOW: tl.constexpr, SOFTCAP: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // HQ
    h = pid_bh % HQ
    hk = h // GROUP
    m0 = pid_m * BM
    offs_m = m0 + tl.arange(0, BM)
    offs_dk = tl.arange(0, BDQK)
    offs_dv = tl.arange(0, BDV)
    q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqt + offs_dk[None, :],
                mask=(offs_m[:, None] < T) & (offs_dk[None, :] < DQK), other=0.0)  # (BM, DQK)
    k_ptrs = K + b * skb + hk * skh
    v_ptrs = V + b * svb + hk * svh
    m_i = tl.zeros([BM], dtype=tl.float32) + float("-inf")
    l_i = tl.zeros([BM], dtype=tl.float32)
    acc = tl.zeros([BM, BDV], dtype=tl.float32)
    lo, hi, flo, fhi = _row_ranges(m0, T, window, BM, BN, CAUSAL, WINDOW)
    acc, m_i, l_i = _fwd_inner(acc, m_i, l_i, q, k_ptrs, v_ptrs, skt, svt, offs_m, lo, flo, T, window,
                               scale, softcap, BN, DQK, DV, BDQK, BDV, True, CAUSAL, WINDOW, SOFTCAP)
    acc, m_i, l_i = _fwd_inner(acc, m_i, l_i, q, k_ptrs, v_ptrs, skt, svt, offs_m, flo, fhi, T, window,
                               scale, softcap, BN, DQK, DV, BDQK, BDV, False, CAUSAL, WINDOW, SOFTCAP)
    acc, m_i, l_i = _fwd_inner(acc, m_i, l_i, q, k_ptrs, v_ptrs, skt, svt, offs_m, fhi, hi, T, window,
                               scale, softcap, BN, DQK, DV, BDQK, BDV, True, CAUSAL, WINDOW, SOFTCAP)
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    acc = acc / l_safe[:, None]
    tl.store(O + b * sob + h * soh + offs_m[:, None] * sot + offs_dv[None, :], acc.to(O.dtype.element_ty),
             mask=(offs_m[:, None] < T) & (offs_dv[None, :] < DV))
    # LSE is (B, HQ, T) float32 in log2 units; kernel-internal, never returned to the caller.
    tl.store(LSE + pid_bh * T + offs_m, m_i + tl.log2(l_safe), mask=offs_m < T)


@triton.jit
def _dq_inner(dq, q, do, lse, delta, k_ptrs, v_ptrs, stride_kt, stride_vt, offs_m, start, end, T, window,
              scale, softcap, BN: tl.constexpr, DQK: tl.constexpr, DV: tl.constexpr, BDQK: tl.constexpr,
              BDV: tl.constexpr, MASK: tl.constexpr, CAUSAL: tl.constexpr, WINDOW: tl.constexpr,
              SOFTCAP: tl.constexpr):
    offs_dk = tl.arange(0, BDQK)
    offs_dv = tl.arange(0, BDV)
    for n0 in range(start, end, BN):
        offs_n = n0 + tl.arange(0, BN)
        k = tl.load(k_ptrs + offs_n[:, None] * stride_kt + offs_dk[None, :],
                    mask=(offs_n[:, None] < T) & (offs_dk[None, :] < DQK), other=0.0)  # (BN, DQK)
        v = tl.load(v_ptrs + offs_n[:, None] * stride_vt + offs_dv[None, :],
                    mask=(offs_n[:, None] < T) & (offs_dv[None, :] < DV), other=0.0)  # (BN, DV)
        s, t = _scores(q, k, offs_m, offs_n, T, window, scale, softcap, MASK, CAUSAL, WINDOW, SOFTCAP)
        p = tl.exp2(s - lse[:, None])  # (BM, BN)
        dp = tl.dot(do, tl.trans(v))  # (BM, BN)
        ds = p * (dp - delta[:, None])
        if SOFTCAP:
            ds = ds * (1.0 - t * t)
        dq += tl.dot(ds.to(k.dtype), k)
    return dq


@triton.jit
def _attn_bwd_dq(Q, K, V, DO, DQ, LSE, DELTA, sqb, sqt, sqh, skb, skt, skh, svb, svt, svh, sob, sot, soh,
                 T, HQ, GROUP, window, scale, softcap, DQK: tl.constexpr, DV: tl.constexpr,
                 BM: tl.constexpr, BN: tl.constexpr, BDQK: tl.constexpr, BDV: tl.constexpr,
                 CAUSAL: tl.constexpr, WINDOW: tl.constexpr, SOFTCAP: tl.constexpr):
    # DQ shares Q's strides and DO shares O's strides (the launcher makes them contiguous alike).
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // HQ
    h = pid_bh % HQ
    hk = h // GROUP
    m0 = pid_m * BM
    offs_m = m0 + tl.arange(0, BM)
    offs_dk = tl.arange(0, BDQK)
    offs_dv = tl.arange(0, BDV)
    qmask = (offs_m[:, None] < T) & (offs_dk[None, :] < DQK)
    q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqt + offs_dk[None, :], mask=qmask, other=0.0)
    do = tl.load(DO + b * sob + h * soh + offs_m[:, None] * sot + offs_dv[None, :],
                 mask=(offs_m[:, None] < T) & (offs_dv[None, :] < DV), other=0.0)  # (BM, DV)
    lse = tl.load(LSE + pid_bh * T + offs_m, mask=offs_m < T, other=0.0)
    delta = tl.load(DELTA + pid_bh * T + offs_m, mask=offs_m < T, other=0.0)
    k_ptrs = K + b * skb + hk * skh
    v_ptrs = V + b * svb + hk * svh
    dq = tl.zeros([BM, BDQK], dtype=tl.float32)
    lo, hi, flo, fhi = _row_ranges(m0, T, window, BM, BN, CAUSAL, WINDOW)
    dq = _dq_inner(dq, q, do, lse, delta, k_ptrs, v_ptrs, skt, svt, offs_m, lo, flo, T, window, scale,
                   softcap, BN, DQK, DV, BDQK, BDV, True, CAUSAL, WINDOW, SOFTCAP)
    dq = _dq_inner(dq, q, do, lse, delta, k_ptrs, v_ptrs, skt, svt, offs_m, flo, fhi, T, window, scale,
                   softcap, BN, DQK, DV, BDQK, BDV, False, CAUSAL, WINDOW, SOFTCAP)
    dq = _dq_inner(dq, q, do, lse, delta, k_ptrs, v_ptrs, skt, svt, offs_m, fhi, hi, T, window, scale,
                   softcap, BN, DQK, DV, BDQK, BDV, True, CAUSAL, WINDOW, SOFTCAP)
    tl.store(DQ + b * sqb + h * sqh + offs_m[:, None] * sqt + offs_dk[None, :],
             (dq * scale).to(DQ.dtype.element_ty), mask=qmask)


@triton.jit
def _dkdv_inner(dk, dv, k, v, q_ptrs, do_ptrs, lse_ptr, delta_ptr, stride_qt, stride_ot, offs_n, start,
                end, T, window, scale, softcap, BM: tl.constexpr, DQK: tl.constexpr, DV: tl.constexpr,
                BDQK: tl.constexpr, BDV: tl.constexpr, MASK: tl.constexpr, CAUSAL: tl.constexpr,
                WINDOW: tl.constexpr, SOFTCAP: tl.constexpr):
    offs_dk = tl.arange(0, BDQK)
    offs_dv = tl.arange(0, BDV)
    for m0 in range(start, end, BM):
        offs_m = m0 + tl.arange(0, BM)
        q = tl.load(q_ptrs + offs_m[:, None] * stride_qt + offs_dk[None, :],
                    mask=(offs_m[:, None] < T) & (offs_dk[None, :] < DQK), other=0.0)  # (BM, DQK)
        do = tl.load(do_ptrs + offs_m[:, None] * stride_ot + offs_dv[None, :],
                     mask=(offs_m[:, None] < T) & (offs_dv[None, :] < DV), other=0.0)  # (BM, DV)
        lse = tl.load(lse_ptr + offs_m, mask=offs_m < T, other=0.0)
        delta = tl.load(delta_ptr + offs_m, mask=offs_m < T, other=0.0)
        s, t = _scores(q, k, offs_m, offs_n, T, window, scale, softcap, MASK, CAUSAL, WINDOW, SOFTCAP)
        p = tl.exp2(s - lse[:, None])  # (BM, BN)
        dv += tl.dot(tl.trans(p.to(do.dtype)), do)
        dp = tl.dot(do, tl.trans(v))  # (BM, BN)
        ds = p * (dp - delta[:, None])
        if SOFTCAP:
            ds = ds * (1.0 - t * t)
        dk += tl.dot(tl.trans(ds.to(q.dtype)), q)
    return dk, dv


@triton.jit
def _attn_bwd_dkdv(Q, K, V, DO, DK, DV_, LSE, DELTA, sqb, sqt, sqh, skb, skt, skh, svb, svt, svh, sob, sot,
                   soh, T, HQ, HKV, GROUP, window, scale, softcap, DQK: tl.constexpr, DV: tl.constexpr,
                   BM: tl.constexpr, BN: tl.constexpr, BDQK: tl.constexpr, BDV: tl.constexpr,
                   CAUSAL: tl.constexpr, WINDOW: tl.constexpr, SOFTCAP: tl.constexpr):
    # DK shares K's strides, DV_ shares V's strides.
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // HKV
    hk = pid_bh % HKV
    n0 = pid_n * BN
    offs_n = n0 + tl.arange(0, BN)
    offs_dk = tl.arange(0, BDQK)
    offs_dv = tl.arange(0, BDV)
    kmask = (offs_n[:, None] < T) & (offs_dk[None, :] < DQK)
    vmask = (offs_n[:, None] < T) & (offs_dv[None, :] < DV)
    k = tl.load(K + b * skb + hk * skh + offs_n[:, None] * skt + offs_dk[None, :], mask=kmask, other=0.0)
    v = tl.load(V + b * svb + hk * svh + offs_n[:, None] * svt + offs_dv[None, :], mask=vmask, other=0.0)
    dk = tl.zeros([BN, BDQK], dtype=tl.float32)
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
        dk, dv = _dkdv_inner(dk, dv, k, v, q_ptrs, do_ptrs, lse_ptr, delta_ptr, sqt, sot, offs_n, lo, flo,
                             T, window, scale, softcap, BM, DQK, DV, BDQK, BDV, True, CAUSAL, WINDOW, SOFTCAP)
        dk, dv = _dkdv_inner(dk, dv, k, v, q_ptrs, do_ptrs, lse_ptr, delta_ptr, sqt, sot, offs_n, flo, fhi,
                             T, window, scale, softcap, BM, DQK, DV, BDQK, BDV, False, CAUSAL, WINDOW,
                             SOFTCAP)
        dk, dv = _dkdv_inner(dk, dv, k, v, q_ptrs, do_ptrs, lse_ptr, delta_ptr, sqt, sot, offs_n, fhi, hi,
                             T, window, scale, softcap, BM, DQK, DV, BDQK, BDV, True, CAUSAL, WINDOW, SOFTCAP)
    tl.store(DK + b * skb + hk * skh + offs_n[:, None] * skt + offs_dk[None, :],
             (dk * scale).to(DK.dtype.element_ty), mask=kmask)
    tl.store(DV_ + b * svb + hk * svh + offs_n[:, None] * svt + offs_dv[None, :],
             dv.to(DV_.dtype.element_ty), mask=vmask)
# fmt: on


# --------------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------------


class AttentionBlocks:
    """Tile sizes and launch settings. ``None`` fields are chosen from the head dims.

    Tests pass big tiles relative to their tiny shapes: the CPU interpreter's cost is the number of
    block operations, not their size."""

    def __init__(
        self,
        bm: int | None = None,
        bn: int | None = None,
        num_warps: int | None = None,
        num_stages: int | None = None,
    ) -> None:
        self.bm, self.bn, self.num_warps, self.num_stages = bm, bn, num_warps, num_stages

    def resolve(self, bdqk: int, bdv: int, backward: bool) -> tuple[int, int, int, int]:
        widest = max(bdqk, bdv)
        # Register budget: a (BM, D) fp32 accumulator plus (BN, D) tiles per program. Larger head
        # dims halve the tiles; the backward holds two accumulators, so it uses smaller tiles.
        if backward:
            bm, bn, warps, stages = (64, 64, 4, 2) if widest <= 64 else (64, 64, 8, 2)
            if widest > 128:
                bm, bn, warps, stages = 32, 64, 8, 1
        else:
            bm, bn, warps, stages = (128, 64, 4, 3) if widest <= 64 else (128, 64, 8, 3)
            if widest > 128:
                bm, bn, warps, stages = 64, 64, 8, 2
        return (self.bm or bm, self.bn or bn, self.num_warps or warps, self.num_stages or stages)


def _dims(q: Tensor, k: Tensor, v: Tensor) -> tuple[int, int, int, int, int, int, int]:
    B, T, HQ, DQK = q.shape  # (B, T, Hq, Dqk)
    Bk, Tk, HKV, DQK2 = k.shape  # (B, T, Hkv, Dqk)
    Bv, Tv, HKV2, DV = v.shape  # (B, T, Hkv, Dv)
    if (Bk, Tk, DQK2) != (B, T, DQK) or (Bv, Tv, HKV2) != (B, T, HKV):
        raise ValueError(
            f"attention: shapes q {tuple(q.shape)} k {tuple(k.shape)} v {tuple(v.shape)} disagree"
        )
    if HQ % HKV:
        raise ValueError(f"attention: {HQ} query heads is not a multiple of {HKV} key/value heads")
    return B, T, HQ, HKV, DQK, DV, HQ // HKV


def _pow2(d: int) -> int:
    return max(16, triton.next_power_of_2(d))


def _flags(window: int | None, softcap: float | None) -> tuple[int, float, bool, bool]:
    return (window or 0, softcap or 1.0, window is not None, softcap is not None)


def _attn_forward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    causal: bool,
    window: int | None,
    softcap: float | None,
    scale: float,
    blocks: AttentionBlocks,
) -> tuple[Tensor, Tensor]:
    B, T, HQ, HKV, DQK, DV, group = _dims(q, k, v)
    o = torch.empty(B, T, HQ, DV, device=q.device, dtype=q.dtype)  # (B, T, Hq, Dv)
    lse = torch.empty(B, HQ, T, device=q.device, dtype=torch.float32)  # (B, Hq, T), log2 units
    bdqk, bdv = _pow2(DQK), _pow2(DV)
    bm, bn, warps, stages = blocks.resolve(bdqk, bdv, backward=False)
    win, cap, has_win, has_cap = _flags(window, softcap)
    grid = (triton.cdiv(T, bm), B * HQ)
    _attn_fwd[grid](
        q,
        k,
        v,
        o,
        lse,
        *q.stride()[:3],
        *k.stride()[:3],
        *v.stride()[:3],
        *o.stride()[:3],
        T,
        HQ,
        group,
        win,
        scale,
        cap,
        DQK=DQK,
        DV=DV,
        BM=bm,
        BN=bn,
        BDQK=bdqk,
        BDV=bdv,
        CAUSAL=causal,
        WINDOW=has_win,
        SOFTCAP=has_cap,
        num_warps=warps,
        num_stages=stages,
    )
    return o, lse


def _attn_backward(
    do: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    lse: Tensor,
    causal: bool,
    window: int | None,
    softcap: float | None,
    scale: float,
    blocks: AttentionBlocks,
) -> tuple[Tensor, Tensor, Tensor]:
    B, T, HQ, HKV, DQK, DV, group = _dims(q, k, v)
    do = do.contiguous() if do.stride() != o.stride() else do
    # delta_i = sum_d dO_id O_id, the softmax-backward row term (FlashAttention-2, Alg. 2 line 4).
    delta = (do.float() * o.float()).sum(-1).transpose(1, 2).contiguous()  # (B, Hq, T)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    bdqk, bdv = _pow2(DQK), _pow2(DV)
    bm, bn, warps, stages = blocks.resolve(bdqk, bdv, backward=True)
    win, cap, has_win, has_cap = _flags(window, softcap)
    common = dict(
        DQK=DQK,
        DV=DV,
        BM=bm,
        BN=bn,
        BDQK=bdqk,
        BDV=bdv,
        CAUSAL=causal,
        WINDOW=has_win,
        SOFTCAP=has_cap,
        num_warps=warps,
        num_stages=stages,
    )
    strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *o.stride()[:3])
    _attn_bwd_dkdv[(triton.cdiv(T, bn), B * HKV)](
        q, k, v, do, dk, dv, lse, delta, *strides, T, HQ, HKV, group, win, scale, cap, **common
    )
    _attn_bwd_dq[(triton.cdiv(T, bm), B * HQ)](
        q, k, v, do, dq, lse, delta, *strides, T, HQ, group, win, scale, cap, **common
    )
    return dq, dk, dv


class _Attention(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        causal: bool,
        window: int | None,
        softcap: float | None,
        scale: float,
        blocks: AttentionBlocks,
    ) -> Tensor:
        # Inner dims must be unit-stride for the kernels' pointer arithmetic; (B, T, H) may be strided.
        q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
        o, lse = _attn_forward(q, k, v, causal, window, softcap, scale, blocks)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.cfg = (causal, window, softcap, scale, blocks)
        return o

    @staticmethod
    def backward(ctx, do: Tensor):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = _attn_backward(do, q, k, v, o, lse, *ctx.cfg)
        return dq, dk, dv, None, None, None, None, None


def _check(causal: bool, window: int | None, softcap: float | None) -> None:
    if window is not None and (not causal or window < 1):
        raise ValueError(f"attention: window={window} needs causal=True and window >= 1")
    if softcap is not None and softcap <= 0:
        raise ValueError(f"attention: softcap={softcap} must be positive")


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool,
    window: int | None = None,
    softcap: float | None = None,
    scale: float | None = None,
    blocks: AttentionBlocks | None = None,
) -> Tensor:
    """Scaled dot-product attention on (B, T, H, D) tensors; returns (B, T, Hq, Dv).

    q (B, T, Hq, Dqk), k (B, T, Hkv, Dqk), v (B, T, Hkv, Dv) with Hq % Hkv == 0. ``window`` (with
    ``causal``) limits query i to keys in (i - window, i]; ``softcap`` maps logits s to
    softcap * tanh(s / softcap); ``scale`` defaults to 1/sqrt(Dqk)."""
    _check(causal, window, softcap)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return _Attention.apply(q, k, v, causal, window, softcap, scale, blocks or AttentionBlocks())


def attention_ref(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool,
    window: int | None = None,
    softcap: float | None = None,
    scale: float | None = None,
) -> Tensor:
    """Plain-torch twin of :func:`attention`: matmuls in the input dtype, softmax in float32 (as
    SDPA's math path), repeated K/V heads materialized."""
    _check(causal, window, softcap)
    B, T, HQ, HKV, DQK, DV, group = _dims(q, k, v)
    scale = 1.0 / math.sqrt(DQK) if scale is None else scale
    qh, kh, vh = (x.transpose(1, 2) for x in (q, k, v))  # (B, H, T, D)
    kh, vh = kh.repeat_interleave(group, 1), vh.repeat_interleave(group, 1)
    s = (qh @ kh.transpose(-1, -2)).float() * scale  # (B, Hq, T, T)
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    i = torch.arange(T, device=q.device)
    keep = torch.ones(T, T, dtype=torch.bool, device=q.device)
    if causal:
        keep = i[None, :] <= i[:, None]
    if window is not None:
        keep = keep & (i[None, :] > i[:, None] - window)
    p = s.masked_fill(~keep, float("-inf")).softmax(-1).to(q.dtype)
    return (p @ vh).transpose(1, 2)  # (B, T, Hq, Dv)
