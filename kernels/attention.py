"""Fused attention forward and backward in Triton (FlashAttention-2, Dao 2023, arXiv:2307.08691).

Layout is (B, T, H, D) throughout, the layout the projections produce, so no transpose is needed.
Supported: causal and bidirectional masks, causal sliding windows (query i sees keys in
(i - window, i]), grouped-query / multi-query attention (Hq a multiple of Hkv; a query head reads its
key/value head by index, nothing is repeated in memory), a QK head dim that differs from the V head
dim (MLA's 192/128, DeepSeek-V2, arXiv:2405.04434), tanh logit soft-capping (Gemma 2, arXiv:2408.00118)
and sequence lengths that are not multiples of the block size. Softmax statistics and all matmuls
accumulate in float32; the forward saves the row log-sum-exp for the backward pass.

The kernels live in attention_kernels.py: a forward, and a backward of three launches (delta =
rowsum(dO * O); one program per key block for dK and dV, looping over every query head of its group
so GQA needs no atomics and no repeated K/V; one program per query block for dQ). Tile shapes come
from a per-head-dim table (no run-time autotuning); a 192-wide QK head is computed as 128 + 64.
"""

from __future__ import annotations

import math

import torch
import triton
from pretrainctl_kernels.attention_kernels import _attn_bwd_delta, _attn_bwd_dkdv, _attn_bwd_dq, _attn_fwd
from torch import Tensor

__all__ = ["attention", "attention_ref", "AttentionBlocks"]

LOG2E = 1.4426950408889634

Cfg = tuple[int, int, int, int]  # (rows per program or step, cols, num_warps, num_stages)

# Launch table per head-dim class (the widest of QK and V after splitting, rounded up to 64/128/192/
# 256): forward (BM query rows, BN key step), dK/dV (BM query step, BN key rows per program) and dQ
# (BM query rows, BN key step). Classes 128 and 192 are the winners of tune.py's sweep on an H200
# (bench/results/h200_kernels_run2_tune.txt); 64 and 256 are unswept guesses. No run-time autotuning.
_FWD: dict[int, Cfg] = {64: (128, 64, 4, 3), 128: (128, 64, 8, 3), 192: (128, 64, 8, 2), 256: (64, 64, 8, 2)}
_BWD_KV: dict[int, Cfg] = {
    64: (64, 128, 8, 3),
    128: (64, 128, 8, 2),
    192: (32, 64, 4, 2),
    256: (32, 64, 4, 2),
}
_BWD_Q: dict[int, Cfg] = {64: (128, 64, 8, 3), 128: (128, 64, 8, 2), 192: (64, 64, 4, 2), 256: (64, 32, 4, 2)}


class AttentionBlocks:
    """Tile sizes and launch settings. ``None`` fields come from the head-dim table above.

    ``bm``/``bn`` (with ``num_warps``/``num_stages``) set the forward; they also set the backward's
    query/key tiles unless ``bwd_kv`` / ``bwd_q`` give full (bm, bn, num_warps, num_stages) tuples for
    the dK/dV and dQ kernels. Tests pass big tiles relative to their tiny shapes: the CPU
    interpreter's cost is the number of block operations, not their size."""

    def __init__(
        self,
        bm: int | None = None,
        bn: int | None = None,
        num_warps: int | None = None,
        num_stages: int | None = None,
        bwd_kv: Cfg | None = None,
        bwd_q: Cfg | None = None,
    ) -> None:
        self.bm, self.bn, self.num_warps, self.num_stages = bm, bn, num_warps, num_stages
        self.bwd_kv, self.bwd_q = bwd_kv, bwd_q

    def _pick(self, table: dict[int, Cfg], width: int, given: Cfg | None) -> Cfg:
        if given is not None:
            return given
        bm, bn, warps, stages = table[min(256, -(-width // 64) * 64)]
        return (self.bm or bm, self.bn or bn, self.num_warps or warps, self.num_stages or stages)

    def forward(self, width: int) -> Cfg:
        return self._pick(_FWD, width, None)

    def backward(self, width: int) -> tuple[Cfg, Cfg]:
        return self._pick(_BWD_KV, width, self.bwd_kv), self._pick(_BWD_Q, width, self.bwd_q)


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


def _head_tiles(dqk: int, dv: int) -> dict:
    """QK head-dim tiles: one power of two, or two (192 -> 128 + 64) when that pads less."""
    bd1, bd2, split = _pow2(dqk), 16, False
    low = triton.next_power_of_2(dqk) // 2
    if low >= 16 and dqk > low and low + _pow2(dqk - low) < bd1:
        bd1, bd2, split = low, _pow2(dqk - low), True
    bdv = _pow2(dv)
    width = max(bd1 + (bd2 if split else 0), bdv)
    return dict(DQK=dqk, DV=dv, BD1=bd1, BD2=bd2, BDV=bdv, SPLIT=split), width


def _scalars(window: int | None, softcap: float | None, scale: float) -> tuple[int, float, float]:
    """(window, qk_scale, softcap) as the kernels take them: logits come out in log2 units."""
    if softcap is None:
        return window or 0, scale * LOG2E, 1.0
    return window or 0, scale / softcap, softcap * LOG2E


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
    dims, width = _head_tiles(DQK, DV)
    bm, bn, warps, stages = blocks.forward(width)
    win, qk_scale, cap = _scalars(window, softcap, scale)
    strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *o.stride()[:3])
    _attn_fwd[(triton.cdiv(T, bm), B * HQ)](
        q, k, v, o, lse, *strides, T, HQ, group, win, qk_scale, cap, **dims, BM=bm, BN=bn,
        CAUSAL=causal, WINDOW=window is not None, SOFTCAP=softcap is not None, num_warps=warps,
        num_stages=stages,
    )  # fmt: skip
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
    which: str = "dq,dkdv",
) -> tuple[Tensor, Tensor, Tensor]:
    """``which`` lets tune.py time one kernel alone; the autograd path always runs both."""
    B, T, HQ, HKV, DQK, DV, group = _dims(q, k, v)
    do = do.contiguous() if do.stride() != o.stride() else do
    dims, width = _head_tiles(DQK, DV)
    delta = torch.empty_like(lse)  # (B, Hq, T) float32
    _attn_bwd_delta[(triton.cdiv(T, 64), B * HQ)](
        o, do, delta, *o.stride()[:3], T, HQ, DV=DV, BM=64, BDV=dims["BDV"], num_warps=4
    )
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    (bm1, bn1, w1, s1), (bm2, bn2, w2, s2) = blocks.backward(width)
    win, qk_scale, cap = _scalars(window, softcap, scale)
    flags = dict(**dims, CAUSAL=causal, WINDOW=window is not None, SOFTCAP=softcap is not None)
    strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *o.stride()[:3])
    if "dkdv" in which:
        _attn_bwd_dkdv[(triton.cdiv(T, bn1), B * HKV)](
            q, k, v, do, dk, dv, lse, delta, *strides, T, HQ, HKV, group, win, scale, qk_scale, cap,
            **flags, BM=bm1, BN=bn1, num_warps=w1, num_stages=s1,
        )  # fmt: skip
    if "dq" in which.split(","):
        _attn_bwd_dq[(triton.cdiv(T, bm2), B * HQ)](
            q, k, v, do, dq, lse, delta, *strides, T, HQ, group, win, scale, qk_scale, cap,
            **flags, BM=bm2, BN=bn2, num_warps=w2, num_stages=s2,
        )  # fmt: skip
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
