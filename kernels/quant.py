"""Weight-only quantized matmuls with dequantization fused into the GEMM (inference only).

* int8, symmetric, one scale per output channel (LLM.int8()'s weight format without outliers,
  Dettmers et al. 2022, arXiv:2208.07339): w ~ q * scale[n]. The scale factors out of the K sum, so
  the kernel multiplies it in the epilogue.
* int4, asymmetric, group-wise along K with zero points (the GPTQ/AWQ storage format, Frantar et al.
  2022, arXiv:2210.17323; Lin et al. 2023, arXiv:2306.00978): w ~ (q - zero[n, g]) * scale[n, g],
  q in [0, 15], two values per byte (even k in the low nibble, odd k in the high nibble). The kernels
  dequantize in registers, so only packed bytes cross memory (4x fewer than bf16).

int4 has five kernels; ``int4_matmul(..., tile=...)`` picks one by the tile's type, and each tile's
fields are that kernel's launch parameters (the defaults being its committed, H200-measured tile):

* Int4Half2 (quant_half2): M == 1 GEMV in packed fp16x2 PTX arithmetic -- the M == 1 default for
  fp16/bf16 x since run 8;
* Int4Deq (quant_deq): M <= 16, weights dequantized to bf16 in registers, one dot per K step on the
  matrix units -- the 1 < M <= 16 default since run 9;
* Int4Words (quant_words): M <= 16 on the bytes read as int32 words (M == 1 as a float32 GEMV,
  otherwise exact integer codes on the matrix units) -- the default where neither of those can run
  (float32 x at M == 1);
* Int4Xres (quant_gemv): M == 1 GEMV with x loaded once per program (slower in run 7);
* Int4Bytes (here, _int4_mm): any M and group -- prefill (M > 16) and groups whose group / 8 is not a
  power of two.

quant_frag.py (experimental, not yet run on a GPU) has a sixth, in Gluon, on the weight repacked
offline into mma fragment order (its own storage format, so not an int4_matmul tile).

Weights use nn.Linear's (N, K) = (out, in) layout; ``x @ W.T`` is the product computed. Split-K and
the launch plumbing: quant_launch.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from pretrainctl_kernels.quant_deq import Int4Deq
from pretrainctl_kernels.quant_gemv import Int4Xres
from pretrainctl_kernels.quant_half2 import Int4Half2
from pretrainctl_kernels.quant_launch import launch, reasons
from pretrainctl_kernels.quant_words import Int4Words, _store_out
from torch import Tensor

__all__ = ["quantize_int8", "dequantize_int8", "int8_matmul", "int8_matmul_ref", "quantize_int4",
           "pack_int4", "unpack_int4", "dequantize_int4", "int4_matmul", "int4_matmul_ref", "int4_tile",
           "Int4Half2", "Int4Deq", "Int4Words", "Int4Xres", "Int4Bytes"]  # fmt: skip


# fmt: off
@triton.jit
def _k_range(K, BK: tl.constexpr):
    """This program's K range [k_lo, k_hi): split-K hands each program (axis 1) a run of BK tiles."""
    pid_k = tl.program_id(1)
    per = tl.cdiv(tl.cdiv(K, BK), tl.num_programs(1)) * BK
    k_lo = pid_k * per
    return k_lo, tl.minimum(K, k_lo + per)


@triton.jit
def _int8_mm(X, Q, S, O, W, CNT, M, N, K, s_xm, s_xk, s_qn, s_qk, s_om, s_on,
             BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GEMV: tl.constexpr, SPLIT: tl.constexpr):
    """Grid (N tiles, K splits, M tiles). GEMV (M == 1): multiply-add on the vector units, no MMA."""
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(2)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    k_lo, k_hi = _k_range(K, BK)
    if GEMV:
        accv = tl.zeros([BN], dtype=tl.float32)
    else:
        acc = tl.zeros([BM, BN], dtype=tl.float32)
    for k0 in range(k_lo, k_hi, BK):
        km = k0 + rk < k_hi
        q = tl.load(Q + rn[:, None] * s_qn + (k0 + rk)[None, :] * s_qk, mask=(rn[:, None] < N) & km[None, :],
                    other=0)  # (BN, BK) int8, exact in fp16/bf16
        if GEMV:
            x = tl.load(X + (k0 + rk) * s_xk, mask=km, other=0.0).to(tl.float32)  # (BK,)
            accv += tl.sum(q.to(tl.float32) * x[None, :], 1)
        else:
            x = tl.load(X + rm[:, None] * s_xm + (k0 + rk)[None, :] * s_xk,
                        mask=(rm[:, None] < M) & km[None, :], other=0.0)  # (BM, BK)
            acc = tl.dot(x, tl.trans(q.to(x.dtype)), acc)
    if GEMV:
        acc = tl.zeros([BM, BN], dtype=tl.float32) + accv[None, :]
    s = tl.load(S + rn, mask=rn < N, other=0.0).to(tl.float32)
    _store_out(O, W, CNT, acc * s[None, :], rm, rn, M, N, s_om, s_on, SPLIT)


@triton.jit
def _int4_mm(X, P, S, Z, O, W, CNT, M, N, K, group, s_xm, s_xk, s_pn, s_pk, s_sn, s_sg, s_om, s_on,
             BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GEMV: tl.constexpr, SPLIT: tl.constexpr,
             JOIN: tl.constexpr):
    """BK divides the group size, so one (scale, zero) per row covers a whole K tile. Grid as _int8_mm.
    GEMV factors the zero point out of the tile's sum: sum_k (q - z) s x = s (sum_k q x - z sum_k x).
    The matrix-unit path dequantizes each tile in registers, either as two half-depth dots over the even
    and odd k (low and high nibbles) or, with JOIN, re-interleaved into one full-depth dot."""
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(2)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    rj = tl.arange(0, BK // 2)  # byte index within the tile: holds k = 2j (low) and 2j + 1 (high)
    mmask = rm[:, None] < M
    nmask = rn < N
    k_lo, k_hi = _k_range(K, BK)
    if GEMV:
        accv = tl.zeros([BN], dtype=tl.float32)
    else:
        acc = tl.zeros([BM, BN], dtype=tl.float32)
    for k0 in range(k_lo, k_hi, BK):
        b = tl.load(P + rn[:, None] * s_pn + (k0 // 2 + rj)[None, :] * s_pk, mask=nmask[:, None],
                    other=0)  # (BN, BK/2) uint8
        g = k0 // group
        s = tl.load(S + rn * s_sn + g * s_sg, mask=nmask, other=0.0).to(tl.float32)  # (BN,)
        z = tl.load(Z + rn * s_sn + g * s_sg, mask=nmask, other=0.0).to(tl.float32)
        lo = b & 15
        hi = b >> 4
        if GEMV:
            lo = lo.to(tl.float32)
            hi = hi.to(tl.float32)
            xe = tl.load(X + (k0 + 2 * rj) * s_xk).to(tl.float32)  # (BK/2,)
            xo = tl.load(X + (k0 + 2 * rj + 1) * s_xk).to(tl.float32)
            qx = tl.sum(lo * xe[None, :] + hi * xo[None, :], 1)  # (BN,)
            accv += s * (qx - z * tl.sum(xe + xo, 0))
        elif JOIN:
            # Interleave the nibbles back into k order, (BN, BK/2, 2) -> (BN, BK), for one dot over BK.
            rk = k0 + tl.arange(0, BK)
            x = tl.load(X + rm[:, None] * s_xm + rk[None, :] * s_xk, mask=mmask, other=0.0)  # (BM, BK)
            q = tl.reshape(tl.join(lo, hi), (BN, BK)).to(tl.float32)
            w = ((q - z[:, None]) * s[:, None]).to(x.dtype)  # (BN, BK)
            acc = tl.dot(x, tl.trans(w), acc)
        else:
            x_even = tl.load(X + rm[:, None] * s_xm + (k0 + 2 * rj)[None, :] * s_xk, mask=mmask, other=0.0)
            x_odd = tl.load(X + rm[:, None] * s_xm + (k0 + 2 * rj + 1)[None, :] * s_xk, mask=mmask, other=0.0)
            w_lo = ((lo.to(tl.float32) - z[:, None]) * s[:, None]).to(x_even.dtype)  # (BN, BK/2)
            w_hi = ((hi.to(tl.float32) - z[:, None]) * s[:, None]).to(x_even.dtype)
            acc = tl.dot(x_even, tl.trans(w_lo), acc)
            acc = tl.dot(x_odd, tl.trans(w_hi), acc)
    if GEMV:
        acc = tl.zeros([BM, BN], dtype=tl.float32) + accv[None, :]
    _store_out(O, W, CNT, acc, rm, rn, M, N, s_om, s_on, SPLIT)


# fmt: on


# Decode launch table (M <= 16): (BN, programs along K, warps). int8 from the sweep in tune.py on an H200
# (bench/results/h200_kernels_run2_tune.txt); int4 from the CUDA-graph-timed sweeps of runs 5-5c
# (bench/results/h200_kernels_run5c.txt). Split-K keeps every multiprocessor streaming weight bytes
# when N / BN alone gives too few programs.
DECODE = {
    "int4_gemv": (256, 16, 8), "int4_mma": (64, 8, 4), "int8_gemv": (64, 8, 4), "int8_mma": (64, 8, 4),
}  # fmt: skip
INT4_JOIN = True  # int4 matrix-unit unpacking: one full-depth dot (faster than two half-depth ones in 5c)


def _tiles(kind: str, M: int, K: int, bk: int, bm: int | None, bn: int | None, split_k: int | None,
           warps: int | None) -> tuple[int, int, int, int, bool]:  # fmt: skip
    """(BM, BN, split, num_warps, gemv). Decode (M <= 16) streams the weight; prefill: square tiles."""
    if M <= 16:
        gemv = M == 1
        bn_, split, w = DECODE[f"{kind}_{'gemv' if gemv else 'mma'}"]
        split = max(1, min(split_k or split, triton.cdiv(K, bk)))
        return (1 if gemv else bm or 16), bn or bn_, split, warps or w, gemv
    return bm or 64, bn or 64, max(1, min(split_k or 1, triton.cdiv(K, bk))), warps or 4, False


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
                bk: int = 64, split_k: int | None = None,
                num_warps: int | None = None) -> Tensor:  # fmt: skip
    """x (M, K) @ dequant(q (N, K), scale (N,)).T -> (M, N) in x's dtype."""
    M, K = x.shape
    N = q.shape[0]
    if q.shape[1] != K or scale.shape != (N,):
        raise ValueError(f"int8_matmul: x {tuple(x.shape)}, q {tuple(q.shape)}, scale {tuple(scale.shape)}")
    tiles = _tiles("int8", M, K, bk, bm, bn, split_k, num_warps)
    return launch(_int8_mm, x, (q, scale), (M, N, K, *x.stride(), *q.stride()), N, bk, tiles)


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


@dataclass(frozen=True)
class Int4Bytes:
    """int4_matmul's tile for _int4_mm (any M and group): ``bk`` a K tile dividing the group (default
    min(group, 128)), ``join`` its matrix-unit unpacking (default INT4_JOIN); ``bm``, ``bn``, ``split``,
    ``warps`` default to DECODE's entry at M <= 16 and to square 64 tiles above (_tiles)."""

    bm: int | None = None
    bn: int | None = None
    bk: int | None = None
    split: int | None = None
    warps: int | None = None
    join: bool | None = None

    def why_not(self, M: int, group: int, dtype: torch.dtype) -> list[str]:
        bk = self.bk or min(group, 128)
        return reasons(((group % bk or bk < 32, f"bk dividing group={group} and >= 32 (got bk={bk})"),))

    def launch(self, x: Tensor, packed: Tensor, scales: Tensor, zeros: Tensor, group: int) -> Tensor:
        (M, K), N = x.shape, packed.shape[0]
        bk = self.bk or min(group, 128)
        tiles = _tiles("int4", M, K, bk, self.bm, self.bn, self.split, self.warps)
        pre, post = (packed, scales, zeros), (M, N, K, group, *x.stride(), *packed.stride(), *scales.stride())
        join = INT4_JOIN if self.join is None else self.join
        return launch(_int4_mm, x, pre, post, N, bk, tiles, JOIN=join)


Int4Tile = Int4Half2 | Int4Deq | Int4Words | Int4Xres | Int4Bytes
# The decode tiles int4_matmul runs when it is given none: the first that can run at this M, group and
# x dtype (Int4Words takes float32 x at M == 1); anything else runs Int4Bytes.
INT4_M1: tuple[Int4Tile, ...] = (Int4Half2(), Int4Words())
INT4_M16: tuple[Int4Tile, ...] = (Int4Deq(), Int4Words())


def int4_tile(M: int, group: int, dtype: torch.dtype) -> Int4Tile:
    """The tile int4_matmul runs for x (M, K) of this dtype when it is given none."""
    for tile in INT4_M1 if M == 1 else INT4_M16 if M <= 16 else ():
        if not tile.why_not(M, group, dtype):
            return tile
    return Int4Bytes()


def int4_matmul(x: Tensor, packed: Tensor, scales: Tensor, zeros: Tensor, group: int, *,
                tile: Int4Tile | None = None) -> Tensor:  # fmt: skip
    """x (M, K) @ dequant(packed (N, K/2), scales/zeros (N, K/group)).T -> (M, N) in x's dtype.
    ``tile`` picks the kernel by its type and sets its launch parameters (see the module docstring);
    None: int4_tile's choice for this M, group and dtype."""
    M, K = x.shape
    N = packed.shape[0]
    if packed.shape[1] * 2 != K or scales.shape != (N, K // group) or zeros.shape != scales.shape:
        raise ValueError(f"int4_matmul: x {tuple(x.shape)}, packed {tuple(packed.shape)}, scales "
                         f"{tuple(scales.shape)}, zeros {tuple(zeros.shape)}, group {group}")  # fmt: skip
    if tile is None:
        tile = int4_tile(M, group, x.dtype)
    elif why := tile.why_not(M, group, x.dtype):
        raise ValueError(f"int4_matmul: {tile} needs " + "; ".join(why))
    scales, zeros = scales.contiguous(), zeros.contiguous()  # the kernel indexes both with one stride pair
    return tile.launch(x, packed, scales, zeros, group)


def int4_matmul_ref(x: Tensor, packed: Tensor, scales: Tensor, zeros: Tensor, group: int) -> Tensor:
    return x @ dequantize_int4(packed, scales, zeros, group, x.dtype).t()
