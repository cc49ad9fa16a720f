"""int4 decode GEMV (M == 1) in packed half2 arithmetic: quant.int4_matmul's ``half2`` path.

Storage is quant.py's GPTQ/AWQ group-wise format (Frantar et al. 2022, arXiv:2210.17323; Lin et al. 2023,
arXiv:2306.00978), read as (N, K/8) int32 words as in quant_words (word j holds k = 8j + i in bits
4i..4i+3). Run 6 found the float32 GEMV bound by instruction issue (~4.6-7 SASS instructions per weight
element); here every arithmetic instruction handles two elements, by the fp16x2 unpacking of
FasterTransformer's int4 path and Marlin (Frantar et al. 2024, arXiv:2408.11743), in inline PTX:

* one ``lop3`` turns a nibble pair into an fp16x2 pair with the 0x6400 (1024) exponent: (w & 0x000F000F)
  | 0x64006400 is (1024 + q0, 1024 + q4), the mask 0x00F000F0 gives (1024 + 16 q1, 1024 + 16 q5), and
  the same two on w >> 8 give nibbles (2, 6) and (3, 7) -- four lop3 and one shift per word;
* ``sub.f16x2`` of (1024 + z) (or ``fma.f16x2`` by 1/16 minus (64 + z)) leaves q - z, exactly;
* ``fma.f16x2`` with the matching pair of x, converted to fp16 once per step and paired the same way.

fp16 range: x is scaled per group by a power of two (exact) so that its largest magnitude lies in
[1/2, 1) before the fp16 conversion; the group's sum is scaled back in float32. So fp16 can neither
overflow (at most 64 products of |q - z| <= 15 per half-accumulator: |sum| < 960) nor lose the
small groups of an x with outliers elsewhere; an element below ~2**-14 of its group's maximum becomes
an fp16 subnormal (absolute error <= 2**-24 of that maximum). Accumulation: ``hacc`` 0 sums each
word's 8 products in fp16x2 (4 per half) and then in float32; ``hacc`` 1 sums a whole group (16 words)
in fp16x2 before float32 -- fewer instructions, ~2**-11 relative rounding per add over up to 64 adds.

Off the GPU (Triton's CPU interpreter cannot run PTX) the same bit manipulations run in plain Triton
(ASM=False): the pairs are split into halves and multiplied in float32, which tests the pairing,
zero-point, scaling and masking logic; the PTX arithmetic itself is tested on the GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from pretrainctl_kernels.quant_launch import clamp_splits, launch_words, pow2, reasons, words_fit
from pretrainctl_kernels.quant_words import _store_out
from torch import Tensor


# fmt: off
@triton.jit
def _pack_h2(hi, lo, ASM: tl.constexpr):
    """Two float32 tensors -> int32 holding the fp16 pair (lo in bits 0..15, hi in bits 16..31), each
    rounded to nearest: one ``cvt.rn.f16x2.f32`` on a GPU."""
    if ASM:
        return tl.inline_asm_elementwise("cvt.rn.f16x2.f32 $0, $1, $2;", "=r,f,f", [hi, lo], dtype=tl.int32,
                                         is_pure=True, pack=1)
    else:
        lo16 = lo.to(tl.float16).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
        return lo16 | (hi.to(tl.float16).to(tl.int16, bitcast=True).to(tl.int32) << 16)


@triton.jit
def _halves(v):
    """int32 fp16 pair -> (lo, hi) as float32 (the CPU emulation of the PTX pair arithmetic)."""
    lo = (v & 0xFFFF).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
    return lo, (v >> 16).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def _hadd2(a, b):
    """fp16x2 addition of two int32-held pairs (tl.reduce's combine for hacc 1 on a GPU)."""
    return tl.inline_asm_elementwise("add.rn.f16x2 $0, $1, $2;", "=r,r,r", [a, b], dtype=tl.int32,
                                     is_pure=True, pack=1)


@triton.jit
def _hadd2_emul(a, b):
    """_hadd2 off the GPU: each half added in float32 and rounded back to fp16."""
    alo, ahi = _halves(a)
    blo, bhi = _halves(b)
    return _pack_h2(ahi + bhi, alo + blo, False)


@triton.jit
def _h2_sum(v, ASM: tl.constexpr):
    """int32-held fp16 pair -> lo + hi in float32."""
    if ASM:
        return tl.inline_asm_elementwise(
            """{
            .reg .f16 l, h;
            .reg .f32 a, b;
            mov.b32 {l, h}, $1;
            cvt.f32.f16 a, l;
            cvt.f32.f16 b, h;
            add.f32 $0, a, b;
            }""",
            "=f,r", [v], dtype=tl.float32, is_pure=True, pack=1)
    else:
        lo, hi = _halves(v)
        return lo + hi


# The word's arithmetic: $1 word, $2..$5 x pairs (x0, x4), (x1, x5), (x2, x6), (x3, x7), $6 (1024 + z) twice,
# $7 -(64 + z) twice. Pairs a, c hold 1024 + q (subtract 1024 + z); b, d hold 1024 + 16 q (times 1/16 =
# 0x2C00, minus 64 + z): both exactly q - z. Then s = sum of the 8 products, 4 per fp16 half.
_WORD_PTX = """
.reg .b32 t, a, b, c, d, k, s;
mov.b32 k, 0x2C002C00;
lop3.b32 a, $1, 0x000F000F, 0x64006400, 0xEA;
lop3.b32 b, $1, 0x00F000F0, 0x64006400, 0xEA;
shr.u32 t, $1, 8;
lop3.b32 c, t, 0x000F000F, 0x64006400, 0xEA;
lop3.b32 d, t, 0x00F000F0, 0x64006400, 0xEA;
sub.rn.f16x2 a, a, $6;
fma.rn.f16x2 b, b, k, $7;
sub.rn.f16x2 c, c, $6;
fma.rn.f16x2 d, d, k, $7;
mul.rn.f16x2 s, a, $2;
fma.rn.f16x2 s, b, $3, s;
fma.rn.f16x2 s, c, $4, s;
fma.rn.f16x2 s, d, $5, s;
"""
_WORD_F32 = tl.constexpr("{\n" + _WORD_PTX + """.reg .f16 l, h;
.reg .f32 fl, fh;
mov.b32 {l, h}, s;
cvt.f32.f16 fl, l;
cvt.f32.f16 fh, h;
add.f32 $0, fl, fh;
}""")
_WORD_H2 = tl.constexpr("{\n" + _WORD_PTX + "mov.b32 $0, s;\n}")  # constexpr: readable inside @jit


@triton.jit
def _word(w, xa, xb, xc, xd, zl, zh, ASM: tl.constexpr, HACC: tl.constexpr):
    """Per int32 word: sum_i (q_i - z) x_i over its 8 nibbles, as float32 (HACC 0) or as an int32-held
    fp16 pair (HACC 1: its two halves still to be added). Arguments broadcast against each other."""
    if ASM:
        if HACC:
            return tl.inline_asm_elementwise(_WORD_H2, "=r,r,r,r,r,r,r,r", [w, xa, xb, xc, xd, zl, zh],
                                             dtype=tl.int32, is_pure=True, pack=1)
        else:
            return tl.inline_asm_elementwise(_WORD_F32, "=f,r,r,r,r,r,r,r", [w, xa, xb, xc, xd, zl, zh],
                                             dtype=tl.float32, is_pure=True, pack=1)
    else:  # the same masks and magic numbers, halves multiplied in float32
        zl_lo, zl_hi = _halves(zl)
        zh_lo, zh_hi = _halves(zh)
        t = w >> 8
        a_lo, a_hi = _halves((w & 0x000F000F) | 0x64006400)
        b_lo, b_hi = _halves((w & 0x00F000F0) | 0x64006400)
        c_lo, c_hi = _halves((t & 0x000F000F) | 0x64006400)
        d_lo, d_hi = _halves((t & 0x00F000F0) | 0x64006400)
        xa_lo, xa_hi = _halves(xa)
        xb_lo, xb_hi = _halves(xb)
        xc_lo, xc_hi = _halves(xc)
        xd_lo, xd_hi = _halves(xd)
        lo = (a_lo - zl_lo) * xa_lo + (b_lo * 0.0625 + zh_lo) * xb_lo
        lo += (c_lo - zl_lo) * xc_lo + (d_lo * 0.0625 + zh_lo) * xd_lo
        hi = (a_hi - zl_hi) * xa_hi + (b_hi * 0.0625 + zh_hi) * xb_hi
        hi += (c_hi - zl_hi) * xc_hi + (d_hi * 0.0625 + zh_hi) * xd_hi
        if HACC:
            return _pack_h2(hi, lo, False)
        else:
            return lo + hi


@triton.jit
def _h2_load(X, P, S, Z, rn, nmask, gg, g_hi, rw, s_xk, s_pn, s_sn, s_sg, GW: tl.constexpr,
             GROUP: tl.constexpr):
    """One step's loads: words (BN, GB, GW), scale and zero (BN, GB), and x as eight (1, GB, GW) planes,
    plane i holding x at k = 8 (word) + i, built in the word tile's own shape (broadcast over rows with
    no layout conversion); groups gg >= g_hi are masked off (no memory traffic)."""
    gmask = gg < g_hi
    wofs = (gg[:, None] * GW + rw[None, :])[None, :, :]
    wmask = nmask[:, None, None] & gmask[None, :, None]
    w = tl.load(P + rn[:, None, None] * s_pn + wofs, mask=wmask, other=0)
    sofs = rn[:, None] * s_sn + gg[None, :] * s_sg
    smask = nmask[:, None] & gmask[None, :]
    s = tl.load(S + sofs, mask=smask, other=0.0)
    z = tl.load(Z + sofs, mask=smask, other=0.0)
    xp = X + (gg[:, None] * GROUP + rw[None, :] * 8) * s_xk
    xm = gmask[:, None]
    x0, x1 = tl.load(xp, mask=xm, other=0.0), tl.load(xp + s_xk, mask=xm, other=0.0)
    x2, x3 = tl.load(xp + 2 * s_xk, mask=xm, other=0.0), tl.load(xp + 3 * s_xk, mask=xm, other=0.0)
    x4, x5 = tl.load(xp + 4 * s_xk, mask=xm, other=0.0), tl.load(xp + 5 * s_xk, mask=xm, other=0.0)
    x6, x7 = tl.load(xp + 6 * s_xk, mask=xm, other=0.0), tl.load(xp + 7 * s_xk, mask=xm, other=0.0)
    return w, s, z, x0, x1, x2, x3, x4, x5, x6, x7


@triton.jit
def _h2_step(w, s, z, x0, x1, x2, x3, x4, x5, x6, x7, ASM: tl.constexpr, HACC: tl.constexpr):
    """sum over the step's groups of s * sum_k (q - z) x, per row: (BN,) float32."""
    x0, x1, x2, x3 = x0.to(tl.float32), x1.to(tl.float32), x2.to(tl.float32), x3.to(tl.float32)
    x4, x5, x6, x7 = x4.to(tl.float32), x5.to(tl.float32), x6.to(tl.float32), x7.to(tl.float32)
    # Per-group power of two 2**(126 - e), e = the biased exponent of the group's max |x|: the scaled
    # maximum lies in [1/2, 1) (exact scaling; e <= 253 keeps both factors finite).
    amax = tl.maximum(tl.maximum(tl.maximum(tl.abs(x0), tl.abs(x1)), tl.maximum(tl.abs(x2), tl.abs(x3))),
                      tl.maximum(tl.maximum(tl.abs(x4), tl.abs(x5)), tl.maximum(tl.abs(x6), tl.abs(x7))))
    e = tl.minimum((tl.max(amax, 1).to(tl.int32, bitcast=True) >> 23) & 0xFF, 253)  # (GB,)
    up = ((253 - e) << 23).to(tl.float32, bitcast=True)[:, None]
    down = ((e + 1) << 23).to(tl.float32, bitcast=True)[None, :]  # 2**(e - 126)
    xa = _pack_h2(x4 * up, x0 * up, ASM)[None, :, :]  # the lop3s' pairs: (0, 4), (1, 5), (2, 6), (3, 7)
    xb = _pack_h2(x5 * up, x1 * up, ASM)[None, :, :]
    xc = _pack_h2(x6 * up, x2 * up, ASM)[None, :, :]
    xd = _pack_h2(x7 * up, x3 * up, ASM)[None, :, :]
    zf = z.to(tl.float32)
    zl = _pack_h2(1024.0 + zf, 1024.0 + zf, ASM)[:, :, None]  # exact: integers below 2048
    zh = _pack_h2(-64.0 - zf, -64.0 - zf, ASM)[:, :, None]
    p = _word(w, xa, xb, xc, xd, zl, zh, ASM, HACC)  # (BN, GB, GW)
    if HACC:
        if ASM:
            dot = _h2_sum(tl.reduce(p, 2, _hadd2), ASM)  # (BN, GB)
        else:
            dot = _h2_sum(tl.reduce(p, 2, _hadd2_emul), ASM)
    else:
        dot = tl.sum(p, 2)
    return tl.sum(dot * (s.to(tl.float32) * down), 1)


@triton.jit
def _int4_h2(X, P, S, Z, O, W, CNT, M, N, K, s_xm, s_xk, s_pn, s_sn, s_sg, s_om, s_on, GROUP: tl.constexpr,
             BM: tl.constexpr, BN: tl.constexpr, GB: tl.constexpr, GEMV: tl.constexpr, SPLIT: tl.constexpr,
             STAGES: tl.constexpr, HACC: tl.constexpr, ASM: tl.constexpr):
    """x (1, K) @ dequant(P).T, P (N, K/8) int32 words. Grid as quant._int8_mm: BN rows per program
    (axis 0), K split in whole groups (axis 1; partials meet as in quant_words._store_out); each step
    covers GB groups. STAGES > 1: the next step's loads are issued before this step's arithmetic (run 6's
    register prefetch). ASM: the PTX fp16x2 arithmetic (GPU), else its plain-Triton emulation."""
    GW: tl.constexpr = GROUP // 8
    rm = tl.arange(0, BM)
    rn = tl.program_id(0) * BN + tl.arange(0, BN)
    rg = tl.arange(0, GB)
    rw = tl.arange(0, GW)
    nmask = rn < N
    G = K // GROUP
    per = tl.cdiv(tl.cdiv(G, GB), tl.num_programs(1)) * GB
    g_lo = tl.program_id(1) * per
    g_hi = tl.minimum(G, g_lo + per)
    accv = tl.zeros([BN], dtype=tl.float32)
    strides = (s_xk, s_pn, s_sn, s_sg)
    t = _h2_load(X, P, S, Z, rn, nmask, g_lo + rg, g_hi, rw, *strides, GW, GROUP)
    for g0 in tl.range(g_lo, g_hi, GB, num_stages=1):
        if STAGES > 1:
            nxt = _h2_load(X, P, S, Z, rn, nmask, g0 + GB + rg, g_hi, rw, *strides, GW, GROUP)
        else:
            t = _h2_load(X, P, S, Z, rn, nmask, g0 + rg, g_hi, rw, *strides, GW, GROUP)
        accv += _h2_step(*t, ASM, HACC)
        if STAGES > 1:
            t = nxt
    acc = tl.zeros([BM, BN], dtype=tl.float32) + accv[None, :]
    _store_out(O, W, CNT, acc, rm, rn, M, N, s_om, s_on, SPLIT)
# fmt: on


@dataclass(frozen=True)
class Int4Half2:
    """quant.int4_matmul's tile for _int4_h2 (M == 1, fp16/bf16 x): ``bn`` rows per program, ``split`` K
    splits, ``warps``, ``gb`` groups per step, ``stages`` 2: the next step's loads before this step's
    arithmetic, ``hacc`` 1: a whole group summed in fp16x2 (0: one word). The defaults are the M == 1
    default since run 8 (H200, bench/results/h200_kernels_run8*.txt): 7.8 us against 9.3 us for the word
    kernel and 12.4 us for bf16 cuBLAS in the same run."""

    bn: int = 16
    split: int = 1
    warps: int = 4
    gb: int = 8
    stages: int = 2
    hacc: int = 1

    def why_not(self, M: int, group: int, dtype: torch.dtype) -> list[str]:
        return reasons((
            (M != 1, f"M == 1 (got {M})"), (not words_fit(group), f"group / 8 a power of two (got {group})"),
            (dtype not in (torch.float16, torch.bfloat16), f"fp16/bf16 x (got {dtype})"),
            (not pow2(self.gb), f"gb a power of two (got {self.gb})"),
            (self.hacc not in (0, 1), f"hacc 0 or 1 (got {self.hacc})")))  # fmt: skip

    def launch(self, x: Tensor, packed: Tensor, scales: Tensor, zeros: Tensor, group: int) -> Tensor:
        split = clamp_splits(self.split, triton.cdiv(x.shape[1] // group, self.gb))
        tiles = (1, self.bn, split, self.warps, True)
        return launch_words(_int4_h2, x, packed, scales, zeros, tiles, GROUP=group, GB=self.gb,
                            STAGES=self.stages, HACC=self.hacc, ASM=x.is_cuda)  # fmt: skip
