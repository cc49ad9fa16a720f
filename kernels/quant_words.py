"""int4 decode kernel on the packed weight read as int32 words (quant.int4_matmul at M <= 16), and the
split-K epilogue shared with quant.py's kernels.

Storage is quant.py's GPTQ/AWQ group-wise format (Frantar et al. 2022, arXiv:2210.17323; Lin et al. 2023,
arXiv:2306.00978), unchanged: (N, K/2) bytes, k even in the low nibble, read here as (N, K/8) int32 words
(word j holds k = 8j + i in bits 4i..4i+3). Nibbles become floats without int->float conversions, by
the magic-number trick of FasterTransformer's int4 path and Marlin (Frantar et al. 2024,
arXiv:2408.11743): a nibble ORed into the mantissa of a power of two, then the power subtracted.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import ClassVar

import torch
import triton
import triton.language as tl
from pretrainctl_kernels.quant_launch import clamp_splits, launch_words, pow2, reasons, words_fit
from torch import Tensor


# fmt: off
@triton.jit
def _store_out(O, W, CNT, acc, rm, rn, M, N, s_om, s_on, SPLIT: tl.constexpr):
    """Final tile to O. Split-K, in the same launch: every K split adds its float32 partial into the
    zeroed workspace W (M, N) with atomics and bumps the tile's counter; the split that arrives last
    reads the sum (an atomic add of zero) and zeroes W, writes O and resets the counter, so W and CNT are
    zero again for the next call and no second (sum) launch is needed."""
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    if SPLIT:
        w_ptr = W + rm[:, None] * N + rn[None, :]
        tl.atomic_add(w_ptr, acc, mask=mask, sem="relaxed")
        tl.debug_barrier()  # all of this program's partial adds are issued before its counter moves
        tile = CNT + tl.program_id(2) * tl.num_programs(0) + tl.program_id(0)
        arrived = tl.atomic_add(tile, 1, sem="acq_rel")  # acquire: the other splits' adds are visible
        if arrived == tl.num_programs(1) - 1:
            total = tl.atomic_add(w_ptr, tl.zeros_like(acc), mask=mask, sem="relaxed")  # coherent read
            tl.store(w_ptr, tl.zeros_like(acc), mask=mask)  # every other split is done with this tile
            tl.store(O + rm[:, None] * s_om + rn[None, :] * s_on, total.to(O.dtype.element_ty), mask=mask)
            tl.atomic_xchg(tile, 0)
    else:
        tl.store(O + rm[:, None] * s_om + rn[None, :] * s_on, acc.to(O.dtype.element_ty), mask=mask)


@triton.jit
def _nibble(m, m_hi, I: tl.constexpr):
    """Nibble I of each word as the float32 2**23 + q * 16**j, with no int->float conversion (those run
    at 1/8 of the FMA rate). m = w | 0x4B000000 (the bits of 2**23) and m_hi = (w >> 12) | 0x4B000000,
    so one AND with a single immediate keeps 2**23's bits and the nibble's: nibbles 0..4 from m
    (j = I), 5..7 from m_hi (j = I - 3). The caller subtracts 2**23 (or more) and scales by 16**-j."""
    if I < 5:
        return (m & (0x4B000000 | (15 << (4 * I)))).to(tl.float32, bitcast=True)
    else:
        return (m_hi & (0x4B000000 | (15 << (4 * (I - 3))))).to(tl.float32, bitcast=True)


@triton.jit
def _codes(w, z, X, CODES: tl.constexpr):
    """(BN, GW) int32 words -> (BN, 8 GW) tile of exact integer codes in X's dtype, each word's eight in
    the order t -> nibble (t >> 1) + 4 (t & 1), i.e. 0, 4, 1, 5, 2, 6, 3, 7. CODES 0: q - z (z: (BN,)
    float32); 1: 128 + q; 2: 128 + q in bf16 by inline PTX (sm_90), one lop3 per bf16 pair
    (128 + q_j, 128 + q_j+4) = (w >> 4j) & 0x000F000F | 0x43004300 -- pairs that are already the
    k-adjacent values the matrix-unit operand packs into one register."""
    if CODES == 2:
        p0, p1, p2, p3, p4, p5, p6, p7 = tl.inline_asm_elementwise(
            """{
            .reg .b32 t, v;
            lop3.b32 t, $8, 0x000F000F, 0x43004300, 0xEA; mov.b32 {$0, $4}, t;
            shr.u32 v, $8, 4; lop3.b32 t, v, 0x000F000F, 0x43004300, 0xEA; mov.b32 {$1, $5}, t;
            shr.u32 v, $8, 8; lop3.b32 t, v, 0x000F000F, 0x43004300, 0xEA; mov.b32 {$2, $6}, t;
            shr.u32 v, $8, 12; lop3.b32 t, v, 0x000F000F, 0x43004300, 0xEA; mov.b32 {$3, $7}, t;
            }""",
            "=h,=h,=h,=h,=h,=h,=h,=h,r", [w], dtype=(tl.bfloat16,) * 8, is_pure=True, pack=1)
    else:
        dt = X.dtype.element_ty
        zz = z[:, None] if CODES == 0 else -128.0
        p0, p1 = ((w & 15).to(tl.float32) - zz).to(dt), (((w >> 4) & 15).to(tl.float32) - zz).to(dt)
        p2, p3 = (((w >> 8) & 15).to(tl.float32) - zz).to(dt), (((w >> 12) & 15).to(tl.float32) - zz).to(dt)
        p4, p5 = (((w >> 16) & 15).to(tl.float32) - zz).to(dt), (((w >> 20) & 15).to(tl.float32) - zz).to(dt)
        p6, p7 = (((w >> 24) & 15).to(tl.float32) - zz).to(dt), (((w >> 28) & 15).to(tl.float32) - zz).to(dt)
    # tile[..., A, B, C] = nibble 2A + B + 4C, flattened t = 4A + 2B + C: tl.join adds the minor axis.
    q0 = tl.join(tl.join(p0, p2), tl.join(p1, p3))
    q1 = tl.join(tl.join(p4, p6), tl.join(p5, p7))
    return tl.reshape(tl.join(q0, q1), (w.shape[0], 8 * w.shape[1]))


@triton.jit
def _gemv_load(X, P, S, Z, rn, nmask, gg, g_hi, rw, s_xk, s_pn, s_sn, s_sg, GW: tl.constexpr,
               GROUP: tl.constexpr, DIAG: tl.constexpr):
    """GEMV step loads: words (BN, GB, GW), scale and zero (BN, GB), and the eight x planes (GB, GW),
    plane i holding x at k = 8 (word) + i; groups gg >= g_hi are masked off (no memory traffic)."""
    gmask = gg < g_hi
    wofs = (gg[:, None] * GW + rw[None, :])[None, :, :]
    wmask = nmask[:, None, None] & gmask[None, :, None]
    if DIAG == 2:  # timing diagnostic: made-up words, no weight traffic
        w = (rn[:, None, None] * 977 + wofs) * 40503
    else:
        w = tl.load(P + rn[:, None, None] * s_pn + wofs, mask=wmask, other=0)
    sofs = rn[:, None] * s_sn + gg[None, :] * s_sg
    s = tl.load(S + sofs, mask=nmask[:, None] & gmask[None, :], other=0.0)
    z = tl.load(Z + sofs, mask=nmask[:, None] & gmask[None, :], other=0.0)
    xp = X + (gg[:, None] * GROUP + rw[None, :] * 8) * s_xk
    xm = gmask[:, None]
    x0, x1 = tl.load(xp, mask=xm, other=0.0), tl.load(xp + s_xk, mask=xm, other=0.0)
    x2, x3 = tl.load(xp + 2 * s_xk, mask=xm, other=0.0), tl.load(xp + 3 * s_xk, mask=xm, other=0.0)
    x4, x5 = tl.load(xp + 4 * s_xk, mask=xm, other=0.0), tl.load(xp + 5 * s_xk, mask=xm, other=0.0)
    x6, x7 = tl.load(xp + 6 * s_xk, mask=xm, other=0.0), tl.load(xp + 7 * s_xk, mask=xm, other=0.0)
    return w, s, z, x0, x1, x2, x3, x4, x5, x6, x7


@triton.jit
def _gemv_plane(part, m, m_hi, z, xi, I: tl.constexpr):
    J: tl.constexpr = I if I < 5 else I - 3  # _nibble's 16**J
    q = _nibble(m, m_hi, I) - (8388608.0 + z * (1 << (4 * J)))[:, :, None]  # (q - z) 16^J, exact
    return part + q * (xi.to(tl.float32) * (1.0 / (1 << (4 * J))))[None, :, :]  # x 16^-J, exact


@triton.jit
def _gemv_step(w, s, z, x0, x1, x2, x3, x4, x5, x6, x7):
    """sum over the step's groups of s * sum_k (q - z) x, per row: (BN,) float32."""
    z = z.to(tl.float32)
    m = w | 0x4B000000
    m_hi = (w >> 12) | 0x4B000000
    part = _gemv_plane(tl.zeros(w.shape, dtype=tl.float32), m, m_hi, z, x0, 0)
    part = _gemv_plane(_gemv_plane(part, m, m_hi, z, x1, 1), m, m_hi, z, x2, 2)
    part = _gemv_plane(_gemv_plane(part, m, m_hi, z, x3, 3), m, m_hi, z, x4, 4)
    part = _gemv_plane(_gemv_plane(part, m, m_hi, z, x5, 5), m, m_hi, z, x6, 6)
    part = _gemv_plane(part, m, m_hi, z, x7, 7)
    return tl.sum(tl.sum(part, 2) * s.to(tl.float32), 1)


@triton.jit
def _gemv_touch(w, s, z, x0, x1, x2, x3, x4, x5, x6, x7):
    """Diagnostic stand-in for _gemv_step that only keeps every load alive."""
    xs = (x0.to(tl.float32) + x1 + x2 + x3 + x4 + x5 + x6 + x7)[None, :, :]
    return tl.sum(tl.sum((w & 1).to(tl.float32) + xs, 2) * s.to(tl.float32) + z.to(tl.float32), 1)


@triton.jit
def _mma_load(X, P, S, Z, rm, rn, nmask, g, g_hi, M, rw, s_xm, s_xk, s_pn, s_sn, s_sg, GW: tl.constexpr,
              GROUP: tl.constexpr):
    """Matrix-unit step loads for group g (masked off if g >= g_hi): words (BN, GW), scale and zero (BN,)
    as float32, x (BM, GROUP)."""
    wk = g * GW + rw  # masks as vectors: a scalar bool mask is not accepted everywhere
    wmask = nmask[:, None] & (wk < g_hi * GW)[None, :]
    w = tl.load(P + rn[:, None] * s_pn + wk[None, :], mask=wmask, other=0)
    snmask = nmask & (rn * 0 + g < g_hi)
    s = tl.load(S + rn * s_sn + g * s_sg, mask=snmask, other=0.0).to(tl.float32)
    z = tl.load(Z + rn * s_sn + g * s_sg, mask=snmask, other=0.0).to(tl.float32)
    xk = g * GROUP + tl.arange(0, GROUP)
    xmask = (rm[:, None] < M) & (xk < g_hi * GROUP)[None, :]
    x = tl.load(X + rm[:, None] * s_xm + xk[None, :] * s_xk, mask=xmask, other=0.0)
    return w, s, z, x


@triton.jit
def _int4_words(X, P, S, Z, O, W, CNT, M, N, K, s_xm, s_xk, s_pn, s_sn, s_sg, s_om, s_on, GROUP: tl.constexpr,
                BM: tl.constexpr, BN: tl.constexpr, GB: tl.constexpr, GEMV: tl.constexpr, SPLIT: tl.constexpr,
                STAGES: tl.constexpr, SWAP: tl.constexpr, CODES: tl.constexpr, DIAG: tl.constexpr = 0):
    """int4 decode on the packed weight read as int32 words P (N, K/8): word j holds k = 8j + i in bits
    4i..4i+3. Grid as _int8_mm, K split in whole groups; each step covers BN rows and GB groups (GEMV) or
    one group (matrix units).
    GEMV: float32 multiply-adds on one (BN, GB, GROUP/8) word tile, dequantized exactly without int->float
    conversions: (2**23 + q 16^j) - (2**23 + z 16^j) = (q - z) 16^j (see _nibble), times x 16^-j.
    Else, per group, the matrix units multiply exact integer codes (see _codes) and the scale comes out of
    the group's sum: sum_k x (q - z) s = s sum_k x (q - z); with CODES the codes are 128 + q and the zero
    point comes out too: s (sum_k x (128 + q) - (128 + z) sum_k x), in float32 (SWAP: as W x^T).
    DIAG (GEMV, timing only, see bench_quant_floor): 1 drops the arithmetic, 2 the weight loads."""
    GW: tl.constexpr = GROUP // 8
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(2)
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    rg = tl.arange(0, GB)
    rw = tl.arange(0, GW)
    nmask = rn < N
    G = K // GROUP
    per = tl.cdiv(tl.cdiv(G, GB), tl.num_programs(1)) * GB  # whole groups per K split (GB = 1 off GEMV)
    g_lo = tl.program_id(1) * per
    g_hi = tl.minimum(G, g_lo + per)
    # Every global load of a step is issued before its arithmetic (whose layout conversions put barriers
    # between loads), and with STAGES > 1 the next step's loads before this step's arithmetic.
    if GEMV:
        accv = tl.zeros([BN], dtype=tl.float32)
        strides = (s_xk, s_pn, s_sn, s_sg)
        t = _gemv_load(X, P, S, Z, rn, nmask, g_lo + rg, g_hi, rw, *strides, GW, GROUP, DIAG)
        for g0 in tl.range(g_lo, g_hi, GB, num_stages=1):
            if STAGES > 1:
                nxt = _gemv_load(X, P, S, Z, rn, nmask, g0 + GB + rg, g_hi, rw, *strides, GW, GROUP, DIAG)
            else:
                t = _gemv_load(X, P, S, Z, rn, nmask, g0 + rg, g_hi, rw, *strides, GW, GROUP, DIAG)
            if DIAG == 1:  # timing diagnostic: every load kept, almost no arithmetic
                accv += _gemv_touch(*t)
            else:
                accv += _gemv_step(*t)
            if STAGES > 1:
                t = nxt
        acc = tl.zeros([BM, BN], dtype=tl.float32) + accv[None, :]
    else:
        if SWAP:
            acc_t = tl.zeros([BN, BM], dtype=tl.float32)
        else:
            acc = tl.zeros([BM, BN], dtype=tl.float32)
        strides = (s_xm, s_xk, s_pn, s_sn, s_sg)
        t = _mma_load(X, P, S, Z, rm, rn, nmask, g_lo, g_hi, M, rw, *strides, GW, GROUP)
        for g in tl.range(g_lo, g_hi, num_stages=1):
            if STAGES > 1:
                nxt = _mma_load(X, P, S, Z, rm, rn, nmask, g + 1, g_hi, M, rw, *strides, GW, GROUP)
            else:
                t = _mma_load(X, P, S, Z, rm, rn, nmask, g, g_hi, M, rw, *strides, GW, GROUP)
            w, s, z, x = t
            # x in the codes' order: (BM, GW, a, b, c) with k = 8w + 4a + 2b + c -> (BM, GW, b, c, a)
            xp = tl.reshape(tl.permute(tl.reshape(x, (BM, GW, 2, 2, 2)), (0, 1, 3, 4, 2)), (BM, GROUP))
            qt = _codes(w, z, X, CODES)  # (BN, GROUP)
            if CODES:  # codes 128 + q: the zero point comes out of the sum (float32 keeps ~2**-16 of it)
                zo = z + 128.0
                xs = tl.sum(x.to(tl.float32), 1)  # (BM,)
            if SWAP:
                part = tl.dot(qt, tl.trans(xp))  # (BN, BM)
                if CODES:
                    part -= zo[:, None] * xs[None, :]
                acc_t += s[:, None] * part
            else:
                part = tl.dot(xp, tl.trans(qt))  # (BM, BN)
                if CODES:
                    part -= zo[None, :] * xs[:, None]
                acc += s[None, :] * part
            if STAGES > 1:
                t = nxt
        if SWAP:
            acc = tl.trans(acc_t)
    _store_out(O, W, CNT, acc, rm, rn, M, N, s_om, s_on, SPLIT)
# fmt: on


@dataclass(frozen=True)
class Int4Words:
    """quant.int4_matmul's tile for _int4_words (M <= 16): ``bn`` rows per program, ``split`` K splits,
    ``warps``, ``gb`` groups per step (the float32 GEMV only; the matrix-unit path steps one group at a
    time), ``stages`` > 1: the next step's loads before this step's arithmetic, ``swap``: the matrix-unit
    product as W x^T, ``asm``: the codes 128 + q with the zero point factored out (None: by inline PTX
    where x is bf16 on a GPU, else the exact codes; True: also off the GPU, in plain Triton; False: the
    exact codes q - z), ``vec``: M == 1 as a float32 GEMV on the vector units, ``bm``: rows of x per
    program on the matrix units. Fields left None take M's committed tile (M1 / M16, from the CUDA-graph
    sweeps of runs 6c-6f on an H200, bench/results/h200_kernels_run6*.txt; see BENCHMARKS.md, run 6)."""

    bn: int | None = None
    split: int | None = None
    warps: int | None = None
    gb: int | None = None
    stages: int | None = None
    swap: bool | None = None
    asm: bool | None = None
    vec: bool | None = None
    bm: int | None = None

    M1: ClassVar[tuple] = (16, 1, 4, 16, 2, False, False, True, 16)
    M16: ClassVar[tuple] = (64, 8, 4, 1, 2, True, None, False, 16)

    def at(self, M: int) -> Int4Words:
        """This tile with its None fields taken from M's committed tile."""
        base = Int4Words(*(self.M1 if M == 1 else self.M16))
        given = {f.name: getattr(self, f.name) for f in fields(self)}
        return replace(base, **{k: v for k, v in given.items() if v is not None})

    def why_not(self, M: int, group: int, dtype: torch.dtype) -> list[str]:
        t = self.at(M)
        return reasons((
            (M > 16, f"M <= 16 (got {M})"), (not words_fit(group), f"group / 8 a power of two (got {group})"),
            (M == 1 and t.vec and not pow2(t.gb), f"gb a power of two (got {t.gb})")))  # fmt: skip

    def launch(self, x: Tensor, packed: Tensor, scales: Tensor, zeros: Tensor, group: int) -> Tensor:
        M = x.shape[0]
        t = self.at(M)
        vec = M == 1 and t.vec
        gb = t.gb if vec else 1
        split = clamp_splits(t.split, triton.cdiv(x.shape[1] // group, gb))
        ptx = x.dtype == torch.bfloat16 and x.is_cuda
        codes = 0 if t.asm is False else 2 if ptx else 1 if t.asm else 0
        tiles = (1 if vec else t.bm, t.bn, split, t.warps, vec)
        return launch_words(_int4_words, x, packed, scales, zeros, tiles, GROUP=group, GB=gb, STAGES=t.stages,
                            SWAP=t.swap, CODES=codes)  # fmt: skip
