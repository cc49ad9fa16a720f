"""Weight-only quantized matmuls with dequantization fused into the GEMM (inference only).

* int8, symmetric, one scale per output channel (LLM.int8()'s weight format without outliers,
  Dettmers et al. 2022, arXiv:2208.07339): w ~ q * scale[n]. The scale factors out of the K sum, so
  the kernel multiplies it in the epilogue.
* int4, asymmetric, group-wise along K with zero points (the GPTQ/AWQ storage format, Frantar et al.
  2022, arXiv:2210.17323; Lin et al. 2023, arXiv:2306.00978): w ~ (q - zero[n, g]) * scale[n, g],
  q in [0, 15], two values per byte (even k in the low nibble, odd k in the high nibble). The kernels
  dequantize in registers, so only packed bytes cross memory (4x fewer than bf16). M == 1 with fp16 or
  bf16 x runs quant_half2._int4_h2, a GEMV in packed fp16x2 PTX arithmetic (the default since run 8;
  ``half2=False`` opts out). 1 < M <= 16 runs quant_deq._int4_deq (the default since run 9), weights
  dequantized to bf16 in registers and one dot per K step on the matrix units. ``words=True`` (or a word
  kernel keyword) runs quant_words._int4_words on the bytes read as int32 words (M == 1 as a float32
  GEMV, otherwise exact integer codes on the matrix units); larger M and ``words=False`` run _int4_mm
  here. ``xres=True`` runs M == 1 as quant_gemv's GEMV with x loaded once per program (slower in run 7).

Decode sizes may split K across programs so that enough programs stream the weight; the float32
partials meet in a zeroed workspace through atomics and the last split of each tile writes the output,
all in one launch (decode is launch- and latency-bound: a second launch costs as much as the GEMM).

Weights use nn.Linear's (N, K) = (out, in) layout; ``x @ W.T`` is the product computed.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from pretrainctl_kernels.quant_deq import _int4_deq, launch_two_pass
from pretrainctl_kernels.quant_gemv import _int4_xres
from pretrainctl_kernels.quant_half2 import _int4_h2
from pretrainctl_kernels.quant_words import _int4_words, _store_out
from torch import Tensor

__all__ = ["quantize_int8", "dequantize_int8", "int8_matmul", "int8_matmul_ref", "quantize_int4",
           "pack_int4", "unpack_int4", "dequantize_int4", "int4_matmul", "int4_matmul_ref"]  # fmt: skip


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
# int4 decode on int32 words (_int4_words) for M == 1 ("m1") and 1 < M <= 16 ("m16"): (BN, K splits,
# warps, groups per step, loop stages, swap, asm, vec); vec: M == 1 on the vector units (float32 GEMV)
# instead of the matrix units; asm: the matrix-unit codes are 128 + q (inline PTX for bf16 x on a GPU).
# Used whenever group / 8 is a power of two; ``words=False`` takes _int4_mm instead. From the CUDA-graph
# sweeps of runs 6c-6f on an H200 (bench/results/h200_kernels_run6*.txt; see BENCHMARKS.md, run 6).
INT4_WORDS = {"m1": (16, 1, 4, 16, 2, False, False, True), "m16": (64, 8, 4, 1, 2, True, True, False)}
# M == 1 with x resident in registers (quant_gemv._int4_xres): (BN rows per program, K splits, warps,
# rows per loop step, loop stages, zin); INT4_XRES_DEFAULT: whether M == 1 takes it unless ``xres=False``.
# Run 7 (H200, bench/results/h200_kernels_run7.txt): its best tile took 10.0 us against 9.4 us for the
# word kernel's default in the same run, so it is not the default.
INT4_XRES = (32, 1, 4, 4, 2, True)
INT4_XRES_DEFAULT = False
# M == 1 in fp16x2 arithmetic (quant_half2._int4_h2): (BN, K splits, warps, groups per step, loop stages,
# hacc); INT4_HALF2_DEFAULT: whether M == 1 with fp16/bf16 x takes it unless ``half2=False``. Run 8 (H200,
# bench/results/h200_kernels_run8*.txt): this tile 7.8 us against 9.3 us for the word kernel's M == 1
# default and 12.4 us for bf16 cuBLAS in the same run.
INT4_HALF2 = (16, 1, 4, 8, 2, 1)
INT4_HALF2_DEFAULT = True
# M <= 16 on weights dequantized to bf16 in registers, GB groups per dot (quant_deq._int4_deq): (BN, K
# splits, warps, groups per step, loop stages, swap, order, pipe, two_pass); INT4_DEQ_DEFAULT: whether
# 1 < M <= 16 takes it unless a keyword picks another kernel. Run 9 (H200, bench/results/h200_kernels_run9*):
# this tile 10.8-10.9 us against 11.4-11.5 us for the word kernel and 12.6 us for bf16 cuBLAS (M = 16).
INT4_DEQ = (64, 8, 4, 1, 2, True, 1, 1, False)
INT4_DEQ_DEFAULT = True


def _tiles(kind: str, M: int, K: int, bk: int, bm: int | None, bn: int | None, split_k: int | None,
           warps: int | None) -> tuple[int, int, int, int, bool]:  # fmt: skip
    """(BM, BN, split, num_warps, gemv). Decode (M <= 16) streams the weight; prefill: square tiles."""
    if M <= 16:
        gemv = M == 1
        bn_, split, w = DECODE[f"{kind}_{'gemv' if gemv else 'mma'}"]
        split = max(1, min(split_k or split, triton.cdiv(K, bk)))
        return (1 if gemv else bm or 16), bn or bn_, split, warps or w, gemv
    return bm or 64, bn or 64, max(1, min(split_k or 1, triton.cdiv(K, bk))), warps or 4, False


# Split-K workspace per device: float32 partial sums and per-tile arrival counters, allocated zeroed once
# and left zeroed by every launch (see _store_out). Grown when a larger M * N arrives (so the first call
# of a shape must come before any CUDA-graph capture). One stream at a time per device.
_WS: dict[torch.device, tuple[Tensor, Tensor]] = {}
_RETIRED: list[tuple[Tensor, Tensor]] = []  # outgrown buffers stay alive: a captured graph may point at them


def _workspace(device: torch.device, elems: int, tiles: int) -> tuple[Tensor, Tensor]:
    ws = _WS.get(device)
    if ws is None or ws[0].numel() < elems or ws[1].numel() < tiles:
        old = (0, 0) if ws is None else (ws[0].numel(), ws[1].numel())
        if ws is not None:
            _RETIRED.append(ws)
        ws = (torch.zeros(max(elems, old[0]), device=device, dtype=torch.float32),
              torch.zeros(max(tiles, old[1]), device=device, dtype=torch.int32))  # fmt: skip
        _WS[device] = ws
    return ws


def _launch(kernel, x: Tensor, pre: tuple, post: tuple, N: int, bk: int | None, tiles: tuple,  # noqa: ANN001
            **consts: object) -> Tensor:  # fmt: skip
    """kernel(x, *pre, out, workspace, counters, *post, *out.stride()): one launch, split-K included."""
    bm, bn, split, warps, gemv = tiles
    M = x.shape[0]
    out = torch.empty(M, N, device=x.device, dtype=x.dtype)
    if M == 0 or N == 0:
        return out  # nothing to launch (an empty grid)
    grid = (triton.cdiv(N, bn), split, triton.cdiv(M, bm))
    ws, cnt = _workspace(x.device, M * N, grid[0] * grid[2]) if split > 1 else (out, out)
    if bk:
        consts["BK"] = bk
    kernel[grid](x, *pre, out, ws, cnt, *post, *out.stride(), BM=bm, BN=bn, GEMV=gemv, SPLIT=split > 1,
                 num_warps=warps, **consts)  # fmt: skip
    return out


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
    return _launch(_int8_mm, x, (q, scale), (M, N, K, *x.stride(), *q.stride()), N, bk, tiles)


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


def _as_words(packed: Tensor) -> Tensor:
    """(N, K/2) uint8 -> (N, K/8) int32 view (copied first if it cannot be viewed in place): word j
    holds k = 8j..8j+7, nibble i = k 8j + i."""
    if packed.stride(1) != 1 or packed.stride(0) % 4 or packed.storage_offset() % 4:
        packed = packed.contiguous()
    return packed.view(torch.int32)


def _launch_words(kernel, x: Tensor, packed: Tensor, scales: Tensor, zeros: Tensor, tiles: tuple,  # noqa: ANN001
                  **consts: object) -> Tensor:  # fmt: skip
    """_launch for the decode kernels that read the packed weight as int32 words (_as_words)."""
    M, K = x.shape
    words = _as_words(packed)
    post = (M, packed.shape[0], K, *x.stride(), words.stride(0), *scales.stride())
    return _launch(kernel, x, (words, scales, zeros), post, packed.shape[0], None, tiles, **consts)


def int4_matmul(x: Tensor, packed: Tensor, scales: Tensor, zeros: Tensor, group: int, *,
                bm: int | None = None, bn: int | None = None, bk: int | None = None,
                split_k: int | None = None, num_warps: int | None = None, join: bool | None = None,
                words: bool | None = None, gb: int | None = None, stages: int | None = None,
                swap: bool | None = None, asm: bool | None = None, vec: bool | None = None,
                xres: bool | None = None, rows: int | None = None, zin: bool | None = None,
                half2: bool | None = None, hacc: int | None = None, deq: bool | None = None,
                order: int | None = None, pipe: int | None = None,
                two_pass: bool | None = None) -> Tensor:  # fmt: skip
    """x (M, K) @ dequant(packed (N, K/2), scales/zeros (N, K/group)).T -> (M, N) in x's dtype.
    M == 1 with fp16/bf16 x runs quant_half2's GEMV (``half2`` below) unless a keyword asks otherwise;
    decode sizes (M <= 16) run _int4_words unless ``words=False`` or group / 8 is not a power of two:
    ``vec``: M == 1 as a float32 GEMV on the vector units, ``gb`` whole groups per step; ``stages`` > 1:
    the next step's loads are issued before this step's arithmetic; ``swap``: the matrix-unit product
    as W x^T; ``asm``: codes 128 + q with the zero point factored out, unpacked by inline PTX where x is
    bf16 on a GPU; defaults INT4_WORDS. ``xres`` (M == 1): quant_gemv's GEMV with x loaded once per
    program, ``bn`` rows per program in steps of ``rows``, ``stages`` 1 (no prefetch), 2 (two register
    buffers) or 3 (one loop-carried buffer), ``zin``: the zero point subtracted per element; defaults
    INT4_XRES. ``half2`` (M == 1, fp16/bf16 x): quant_half2's fp16x2 GEMV (``bn``, ``split_k``,
    ``num_warps``, ``gb``, ``stages`` as the float32 GEMV's; ``hacc`` 1: a whole group summed in fp16x2,
    0: one word), default INT4_HALF2; INT4_HALF2_DEFAULT makes it the M == 1 default when none of
    ``words``, ``xres``, ``vec``, ``swap``, ``asm`` is given. ``deq`` (M <= 16): quant_deq's kernel, weights
    dequantized to x's dtype, ``gb`` groups per dot (``bn``, ``split_k``, ``num_warps``, ``stages``,
    ``swap`` as above; ``order`` 0/1: the tile's k order within a word; ``pipe`` > 1: Triton's loop
    pipelining with that many stages; ``two_pass``: K splits summed by a second launch), default
    INT4_DEQ, the default for 1 < M <= 16 if INT4_DEQ_DEFAULT and none of the keywords above is given.
    Otherwise _int4_mm (``bk``: K tile dividing the group; ``join`` picks its matrix-unit unpacking,
    default INT4_JOIN)."""
    M, K = x.shape
    N = packed.shape[0]
    if packed.shape[1] * 2 != K or scales.shape != (N, K // group) or zeros.shape != scales.shape:
        raise ValueError(f"int4_matmul: x {tuple(x.shape)}, packed {tuple(packed.shape)}, scales "
                         f"{tuple(scales.shape)}, zeros {tuple(zeros.shape)}, group {group}")  # fmt: skip
    scales, zeros = scales.contiguous(), zeros.contiguous()  # the kernel indexes both with one stride pair
    fits = group % 8 == 0 and (group // 8) & (group // 8 - 1) == 0
    if words and not fits:
        raise ValueError(f"int4_matmul: words=True needs group / 8 to be a power of two, got group={group}")
    if xres and (M != 1 or not fits):
        raise ValueError(f"int4_matmul: xres=True needs M == 1 and group / 8 a power of two, got M={M}, "
                         f"group={group}")  # fmt: skip
    h2_why = [why for bad, why in (
        (M != 1, f"M == 1 (got {M})"), (not fits, f"group / 8 a power of two (got {group})"),
        (x.dtype not in (torch.float16, torch.bfloat16), f"fp16/bf16 x (got {x.dtype})"),
        (bool(xres) or words is False, "neither xres=True nor words=False")) if bad]  # fmt: skip
    h2_ok = not h2_why
    if half2 and not h2_ok:
        raise ValueError("int4_matmul: half2=True needs " + "; ".join(h2_why))
    # The default applies only when no keyword asks for another kernel (the benches time those explicitly).
    picked = [a for a in (words, xres, vec, swap, asm, half2, deq) if a is not None]
    if deq and (M > 16 or not fits or xres or half2 or words is False):
        raise ValueError(f"int4_matmul: deq=True needs M <= 16, group / 8 a power of two, no xres/half2 and "
                         f"not words=False (got M={M}, group={group})")  # fmt: skip
    if deq or (deq is None and INT4_DEQ_DEFAULT and 1 < M <= 16 and fits and not picked):
        bn_, split, w, gb_, st, sw, ord_, pipe_, two_ = INT4_DEQ
        gb, order, pipe = gb or gb_, ord_ if order is None else order, pipe_ if pipe is None else pipe
        if gb & (gb - 1) or order not in (0, 1) or (stages or st) not in (1, 2, 3) or pipe < 1:
            raise ValueError(f"int4_matmul: gb={gb} must be a power of two, order={order} 0 or 1, "
                             f"stages={stages} 1, 2 or 3 and pipe={pipe} >= 1")  # fmt: skip
        split = max(1, min(split_k or split, triton.cdiv(K // group, gb)))
        # PTX bf16x2 only where it rounds (q - z) s exactly as the bf16 reference does (bf16 x and scales)
        ptx = x.is_cuda and x.dtype == scales.dtype == torch.bfloat16
        tiles, sw = (16, bn or bn_, split, num_warps or w, False), sw if swap is None else swap
        consts = dict(GROUP=group, GB=gb, STAGES=stages or st, SWAP=sw, ORD=order, ASM=ptx, PIPE=pipe)
        if (two_ if two_pass is None else two_pass) and split > 1:
            words_ = _as_words(packed)
            post = (M, N, K, *x.stride(), words_.stride(0), *scales.stride())
            return launch_two_pass(x, (words_, scales, zeros), post, N, tiles, **consts)
        return _launch_words(_int4_deq, x, packed, scales, zeros, tiles, **consts)
    h2_default = INT4_HALF2_DEFAULT and all(a is None for a in (words, xres, vec, swap, asm))
    if h2_ok and (half2 or (half2 is None and h2_default)):
        bn_, split, w, gb_, st, hacc_ = INT4_HALF2
        gb, G = gb or gb_, K // group
        if gb & (gb - 1) or (hacc if hacc is not None else hacc_) not in (0, 1):
            raise ValueError(f"int4_matmul: gb={gb} must be a power of two and hacc={hacc} 0 or 1")
        split = max(1, min(split_k or split, triton.cdiv(G, gb)))
        tiles = (1, bn or bn_, split, num_warps or w, True)
        return _launch_words(_int4_h2, x, packed, scales, zeros, tiles, GROUP=group, GB=gb,
                       STAGES=stages or st, HACC=hacc_ if hacc is None else hacc, ASM=x.is_cuda)  # fmt: skip
    if M == 1 and fits and words is not False and (xres or (xres is None and INT4_XRES_DEFAULT)):
        bn_, split, w, r_, st, zin_ = INT4_XRES
        bn, rows, G = bn or bn_, rows or r_, K // group
        if bn & (bn - 1) or rows & (rows - 1) or bn % rows or (stages or st) not in (1, 2, 3):
            raise ValueError(f"int4_matmul: bn={bn} and rows={rows} must be powers of two, rows <= bn, and "
                             f"stages={stages} 1, 2 or 3")  # fmt: skip
        split = max(1, min(split_k or split, G))
        gpb = triton.next_power_of_2(triton.cdiv(G, split))
        tiles = (1, bn, split, num_warps or w, True)
        st, zin = stages or st, zin_ if zin is None else zin
        return _launch_words(_int4_xres, x, packed, scales, zeros, tiles, GROUP=group, R=rows,
                       GPB=gpb, STAGES=min(st, 2), PING=st == 2, ZIN=zin)  # fmt: skip
    if M <= 16 and (words or (words is None and fits)):
        bn_, split, w, gb_, st, sw, asm_, vec_ = INT4_WORDS["m1" if M == 1 else "m16"]
        vec = M == 1 and (vec_ if vec is None else vec)
        gb, G = (gb or gb_) if vec else 1, K // group  # the matrix-unit path steps one group at a time
        if gb & (gb - 1):
            raise ValueError(f"int4_matmul: gb={gb} must be a power of two")
        split = max(1, min(split_k or split, triton.cdiv(G, gb)))
        tiles = (1 if vec else bm or 16), bn or bn_, split, num_warps or w, vec
        ptx = x.dtype == torch.bfloat16 and x.is_cuda
        codes = (2 if ptx else 1) if asm else 2 if asm is None and asm_ and ptx else 0  # default: PTX/exact
        return _launch_words(_int4_words, x, packed, scales, zeros, tiles, GROUP=group, GB=gb,
                       STAGES=stages or st, SWAP=sw if swap is None else swap, CODES=codes)  # fmt: skip
    bk = bk or min(group, 128)
    if group % bk or bk < 32:
        raise ValueError(f"int4_matmul: bk={bk} must divide group={group} and be >= 32")
    tiles = _tiles("int4", M, K, bk, bm, bn, split_k, num_warps)
    pre, post = (packed, scales, zeros), (M, N, K, group, *x.stride(), *packed.stride(), *scales.stride())
    return _launch(_int4_mm, x, pre, post, N, bk, tiles, JOIN=INT4_JOIN if join is None else join)


def int4_matmul_ref(x: Tensor, packed: Tensor, scales: Tensor, zeros: Tensor, group: int) -> Tensor:
    return x @ dequantize_int4(packed, scales, zeros, group, x.dtype).t()
