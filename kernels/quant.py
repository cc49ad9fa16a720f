"""Weight-only quantized matmuls with dequantization fused into the GEMM (inference only).

* int8, symmetric, one scale per output channel (LLM.int8()'s weight format without outliers,
  Dettmers et al. 2022, arXiv:2208.07339): w ~ q * scale[n]. The scale factors out of the K sum, so
  the kernel multiplies it in the epilogue.
* int4, asymmetric, group-wise along K with zero points (the GPTQ/AWQ storage format, Frantar et al.
  2022, arXiv:2210.17323; Lin et al. 2023, arXiv:2306.00978): w ~ (q - zero[n, g]) * scale[n, g],
  q in [0, 15], two values per byte (even k in the low nibble, odd k in the high nibble). The kernel
  dequantizes each (BN, BK) tile in registers, so only packed bytes cross memory: at decode sizes
  (M <= 16) the GEMM is bandwidth-bound and reads 4x fewer bytes than bf16.

Weights use nn.Linear's (N, K) = (out, in) layout; ``x @ W.T`` is the product computed.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["quantize_int8", "dequantize_int8", "int8_matmul", "int8_matmul_ref", "quantize_int4",
           "pack_int4", "unpack_int4", "dequantize_int4", "int4_matmul", "int4_matmul_ref"]  # fmt: skip


# fmt: off
@triton.jit
def _int8_mm(X, Q, S, O, M, N, K, s_xm, s_xk, s_qn, s_qk, s_om, s_on,
             BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    for k0 in range(0, K, BK):
        km = k0 + rk < K
        x = tl.load(X + rm[:, None] * s_xm + (k0 + rk)[None, :] * s_xk, mask=(rm[:, None] < M) & km[None, :],
                    other=0.0)  # (BM, BK)
        q = tl.load(Q + rn[:, None] * s_qn + (k0 + rk)[None, :] * s_qk, mask=(rn[:, None] < N) & km[None, :],
                    other=0)  # (BN, BK) int8, exact in fp16/bf16
        acc += tl.dot(x, tl.trans(q.to(x.dtype)))
    s = tl.load(S + rn, mask=rn < N, other=0.0).to(tl.float32)
    tl.store(O + rm[:, None] * s_om + rn[None, :] * s_on, (acc * s[None, :]).to(O.dtype.element_ty),
             mask=(rm[:, None] < M) & (rn[None, :] < N))


@triton.jit
def _int4_mm(X, P, S, Z, O, M, N, K, group, s_xm, s_xk, s_pn, s_pk, s_sn, s_sg, s_om, s_on,
             BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """BK divides the group size, so one (scale, zero) per row covers a whole K tile."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    rj = tl.arange(0, BK // 2)  # byte index within the tile: holds k = 2j (low) and 2j + 1 (high)
    mmask = rm[:, None] < M
    nmask = rn < N
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    for k0 in range(0, K, BK):
        b = tl.load(P + rn[:, None] * s_pn + (k0 // 2 + rj)[None, :] * s_pk, mask=nmask[:, None],
                    other=0).to(tl.int32)  # (BN, BK/2)
        g = k0 // group
        s = tl.load(S + rn * s_sn + g * s_sg, mask=nmask, other=0.0).to(tl.float32)  # (BN,)
        z = tl.load(Z + rn * s_sn + g * s_sg, mask=nmask, other=0.0).to(tl.float32)
        x_even = tl.load(X + rm[:, None] * s_xm + (k0 + 2 * rj)[None, :] * s_xk, mask=mmask, other=0.0)
        x_odd = tl.load(X + rm[:, None] * s_xm + (k0 + 2 * rj + 1)[None, :] * s_xk, mask=mmask, other=0.0)
        w_lo = (((b & 15).to(tl.float32) - z[:, None]) * s[:, None]).to(x_even.dtype)  # (BN, BK/2)
        w_hi = (((b >> 4).to(tl.float32) - z[:, None]) * s[:, None]).to(x_even.dtype)
        acc += tl.dot(x_even, tl.trans(w_lo))
        acc += tl.dot(x_odd, tl.trans(w_hi))
    tl.store(O + rm[:, None] * s_om + rn[None, :] * s_on, acc.to(O.dtype.element_ty),
             mask=mmask & nmask[None, :])
# fmt: on


def _tiles(M: int, bm: int | None, bn: int | None) -> tuple[int, int, int]:
    # Decode (M <= 16): one 16-row tile, narrow column tiles so enough programs stream the weight;
    # prefill: square-ish tiles.
    if M <= 16:
        return bm or 16, bn or 32, 4
    return bm or 64, bn or 64, 4


# ---------------------------------------------------------------------------------------------- int8


def quantize_int8(w: Tensor) -> tuple[Tensor, Tensor]:
    """w (N, K) float -> q (N, K) int8, scale (N,) in w's dtype; w ~ q * scale[:, None]."""
    amax = w.float().abs().amax(dim=1).clamp(min=1e-12)  # (N,)
    scale = amax / 127.0
    q = torch.round(w.float() / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale.to(w.dtype)


def dequantize_int8(q: Tensor, scale: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    dtype = dtype or scale.dtype
    return (q.float() * scale.float()[:, None]).to(dtype)  # (N, K)


def int8_matmul(x: Tensor, q: Tensor, scale: Tensor, *, bm: int | None = None, bn: int | None = None,
                bk: int = 64) -> Tensor:  # fmt: skip
    """x (M, K) @ dequant(q (N, K), scale (N,)).T -> (M, N) in x's dtype."""
    M, K = x.shape
    N = q.shape[0]
    if q.shape[1] != K or scale.shape != (N,):
        raise ValueError(f"int8_matmul: x {tuple(x.shape)}, q {tuple(q.shape)}, scale {tuple(scale.shape)}")
    bm_, bn_, warps = _tiles(M, bm, bn)
    out = torch.empty(M, N, device=x.device, dtype=x.dtype)
    grid = (triton.cdiv(M, bm_), triton.cdiv(N, bn_))
    _int8_mm[grid](x, q, scale, out, M, N, K, *x.stride(), *q.stride(), *out.stride(), BM=bm_, BN=bn_, BK=bk,
                   num_warps=warps)  # fmt: skip
    return out


def int8_matmul_ref(x: Tensor, q: Tensor, scale: Tensor) -> Tensor:
    return x @ dequantize_int8(q, scale, x.dtype).t()


# ---------------------------------------------------------------------------------------------- int4


def pack_int4(q: Tensor) -> Tensor:
    """q (N, K) integers in [0, 15], K even -> (N, K/2) uint8; k even in the low nibble."""
    q = q.to(torch.uint8)
    return q[:, 0::2] | (q[:, 1::2] << 4)


def unpack_int4(packed: Tensor) -> Tensor:
    """(N, K/2) uint8 -> (N, K) uint8 in [0, 15]; inverse of :func:`pack_int4`."""
    lo, hi = packed & 15, packed >> 4
    return torch.stack((lo, hi), dim=-1).reshape(packed.shape[0], -1)


def quantize_int4(w: Tensor, group: int = 128) -> tuple[Tensor, Tensor, Tensor]:
    """w (N, K) -> packed (N, K/2) uint8, scales (N, K/group), zeros (N, K/group) in w's dtype.

    Asymmetric per group: scale = (max - min) / 15, zero = round(-min / scale) in [0, 15], so
    w ~ (q - zero) * scale with q = clamp(round(w / scale) + zero, 0, 15)."""
    N, K = w.shape
    if K % group or group % 2:
        raise ValueError(f"quantize_int4: K={K} must be a multiple of group={group} (even)")
    wg = w.float().reshape(N, K // group, group)  # (N, G, group)
    lo, hi = wg.amin(-1).clamp(max=0), wg.amax(-1).clamp(min=0)  # keep 0 representable
    scale = ((hi - lo) / 15).clamp(min=1e-8)
    zero = torch.round(-lo / scale).clamp(0, 15)
    q = torch.clamp(torch.round(wg / scale[..., None]) + zero[..., None], 0, 15).reshape(N, K)
    return pack_int4(q), scale.to(w.dtype), zero.to(w.dtype)


def dequantize_int4(packed: Tensor, scales: Tensor, zeros: Tensor, group: int,
                    dtype: torch.dtype | None = None) -> Tensor:  # fmt: skip
    q = unpack_int4(packed).float()  # (N, K)
    N, K = q.shape
    w = (q.reshape(N, K // group, group) - zeros.float()[..., None]) * scales.float()[..., None]
    return w.reshape(N, K).to(dtype or scales.dtype)


def int4_matmul(x: Tensor, packed: Tensor, scales: Tensor, zeros: Tensor, group: int, *,
                bm: int | None = None, bn: int | None = None, bk: int | None = None) -> Tensor:  # fmt: skip
    """x (M, K) @ dequant(packed (N, K/2), scales/zeros (N, K/group)).T -> (M, N) in x's dtype."""
    M, K = x.shape
    N = packed.shape[0]
    if packed.shape[1] * 2 != K or scales.shape != (N, K // group) or zeros.shape != scales.shape:
        raise ValueError(f"int4_matmul: x {tuple(x.shape)}, packed {tuple(packed.shape)}, scales "
                         f"{tuple(scales.shape)}, zeros {tuple(zeros.shape)}, group {group}")  # fmt: skip
    bk = bk or min(group, 128)
    if group % bk or bk < 32:
        raise ValueError(f"int4_matmul: bk={bk} must divide group={group} and be >= 32")
    bm_, bn_, warps = _tiles(M, bm, bn)
    scales, zeros = scales.contiguous(), zeros.contiguous()  # the kernel indexes both with one stride pair
    out = torch.empty(M, N, device=x.device, dtype=x.dtype)
    grid = (triton.cdiv(M, bm_), triton.cdiv(N, bn_))
    _int4_mm[grid](x, packed, scales, zeros, out, M, N, K, group, *x.stride(), *packed.stride(),
                   *scales.stride(), *out.stride(), BM=bm_, BN=bn_, BK=bk, num_warps=warps)  # fmt: skip
    return out


def int4_matmul_ref(x: Tensor, packed: Tensor, scales: Tensor, zeros: Tensor, group: int) -> Tensor:
    return x @ dequantize_int4(packed, scales, zeros, group, x.dtype).t()
