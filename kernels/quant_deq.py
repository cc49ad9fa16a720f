"""int4 decode GEMM (1 < M <= 16) on weights dequantized in registers, several groups per dot:
quant.int4_matmul's ``deq`` path.

Storage is quant.py's GPTQ/AWQ group-wise format (Frantar et al. 2022, arXiv:2210.17323; Lin et al. 2023,
arXiv:2306.00978), read as (N, K/8) int32 words as in quant_words (word j holds k = 8j + i in bits
4i..4i+3). quant_words' M = 16 kernel multiplies integer codes one group per dot and takes each group's
scale and zero point out of the sum in a float32 epilogue; run 6 found that epilogue, the x permutation
and the per-dot fences cost more than the unpacking. Here the scale goes into the weight instead, so one
dot spans GB groups with no per-group epilogue, by the bf16x2 magic-number unpacking of
FasterTransformer's int4 path and Marlin (Frantar et al. 2024, arXiv:2408.11743), in inline PTX (sm_90):

* ``lop3`` (w >> 4j) & 0x000F000F | 0x43004300 is the bf16 pair (128 + q_j, 128 + q_j+4), exact;
* ``sub.bf16x2`` of (128 + z) leaves q - z exactly (integers below 256 are exact in bf16);
* ``mul.bf16x2`` by the group's bf16 scale rounds (q - z) s once -- the same bf16 weight that the bf16
  reference (dequantize_int4 to bf16, then matmul) multiplies, bit for bit; the dot accumulates in float32.

ORD picks the k order of each word's eight values in the tile: 0 keeps the lop3 pairs (0, 4), (1, 5),
(2, 6), (3, 7) adjacent and permutes x to match by its load addresses (permuting x in registers, as
quant_words does, crashes Triton 3.6's TritonGPUOptimizeDotOperands pass in this kernel); 1 puts them in
natural order (x as loaded, the pairs repacked in registers). Off the GPU, or for x / scales that are
not bf16, the same tile is computed in plain Triton (float32 (q - z) s rounded once to x's dtype),
which the CPU interpreter tests; the PTX is tested on the GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from pretrainctl_kernels.quant_launch import clamp_splits, launch_words, pow2, reasons, word_args, words_fit
from pretrainctl_kernels.quant_words import _store_out
from torch import Tensor


# fmt: off
@triton.jit
def _bf16_pair(v):
    """bf16 (BN, GB) -> int32 holding it in both halves (the operand of a bf16x2 instruction)."""
    b = v.to(tl.bfloat16).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
    return b | (b << 16)


@triton.jit
def _plane(w, I: tl.constexpr, zz, ss, dt: tl.constexpr):
    """Nibble I of every word as (q - z) s in dt (plain Triton)."""
    return ((((w >> (4 * I)) & 15).to(tl.float32) - zz) * ss).to(dt)


@triton.jit
def _deq_tile(w, s, z, dt: tl.constexpr, ASM: tl.constexpr, ORD: tl.constexpr, DIAG: tl.constexpr = 0):
    """(BN, GB, GW) int32 words and (BN, GB) scale / zero -> (BN, GB * 8 GW) weights (q - z) s in dt,
    k order within each word: ORD 0: nibbles 0, 4, 1, 5, 2, 6, 3, 7; ORD 1: 0..7. DIAG 2 (timing only):
    the word's halves as they are, no unpacking arithmetic."""
    if ASM and DIAG == 2:
        p0, p1, p2, p3, p4, p5, p6, p7 = tl.inline_asm_elementwise(
            "mov.b32 {$0, $4}, $8; mov.b32 {$1, $5}, $8; mov.b32 {$2, $6}, $8; mov.b32 {$3, $7}, $8;",
            "=h,=h,=h,=h,=h,=h,=h,=h,r", [w], dtype=(tl.bfloat16,) * 8, is_pure=True, pack=1)
    elif ASM:  # bf16: one lop3, one sub and one mul per pair of weights
        sb = tl.broadcast_to(_bf16_pair(s)[:, :, None], w.shape)
        zb = tl.broadcast_to(_bf16_pair(z.to(tl.float32) + 128.0)[:, :, None], w.shape)  # exact
        p0, p1, p2, p3, p4, p5, p6, p7 = tl.inline_asm_elementwise(
            """{
            .reg .b32 t, v;
            lop3.b32 t, $8, 0x000F000F, 0x43004300, 0xEA; sub.rn.bf16x2 t, t, $10; mul.rn.bf16x2 t, t, $9;
            mov.b32 {$0, $4}, t;
            shr.u32 v, $8, 4; lop3.b32 t, v, 0x000F000F, 0x43004300, 0xEA;
            sub.rn.bf16x2 t, t, $10; mul.rn.bf16x2 t, t, $9; mov.b32 {$1, $5}, t;
            shr.u32 v, $8, 8; lop3.b32 t, v, 0x000F000F, 0x43004300, 0xEA;
            sub.rn.bf16x2 t, t, $10; mul.rn.bf16x2 t, t, $9; mov.b32 {$2, $6}, t;
            shr.u32 v, $8, 12; lop3.b32 t, v, 0x000F000F, 0x43004300, 0xEA;
            sub.rn.bf16x2 t, t, $10; mul.rn.bf16x2 t, t, $9; mov.b32 {$3, $7}, t;
            }""",
            "=h,=h,=h,=h,=h,=h,=h,=h,r,r,r", [w, sb, zb], dtype=(tl.bfloat16,) * 8, is_pure=True, pack=1)
    else:  # exact (q - z) s in float32, rounded once to dt
        zz, ss = z.to(tl.float32)[:, :, None], s.to(tl.float32)[:, :, None]
        p0, p1, p2, p3 = _plane(w, 0, zz, ss, dt), _plane(w, 1, zz, ss, dt), _plane(w, 2, zz, ss, dt), _plane(
            w, 3, zz, ss, dt)
        p4, p5, p6, p7 = _plane(w, 4, zz, ss, dt), _plane(w, 5, zz, ss, dt), _plane(w, 6, zz, ss, dt), _plane(
            w, 7, zz, ss, dt)
    # tl.join appends the minor axis: join(join(a, b), join(c, d)) flattens to a, c, b, d.
    if ORD == 0:
        t = tl.join(tl.join(tl.join(p0, p2), tl.join(p1, p3)), tl.join(tl.join(p4, p6), tl.join(p5, p7)))
    else:
        t = tl.join(tl.join(tl.join(p0, p4), tl.join(p2, p6)), tl.join(tl.join(p1, p5), tl.join(p3, p7)))
    return tl.reshape(t, (w.shape[0], w.shape[1] * w.shape[2] * 8))


@triton.jit
def _deq_load(X, P, S, Z, rm, rn, nmask, g, rg, g_hi, M, rw, s_xm, s_xk, s_pn, s_sn, s_sg, GW: tl.constexpr,
              GROUP: tl.constexpr, ORD: tl.constexpr, DIAG: tl.constexpr = 0):
    """One step's loads for groups g + rg (masked off from g_hi: no memory traffic): words (BN, GB, GW),
    scale and zero (BN, GB), x (BM, GB * GROUP) in the tile's k order."""
    gg = g + rg
    gmask = gg < g_hi
    wofs = (gg[:, None] * GW + rw[None, :])[None, :, :]
    wmask = nmask[:, None, None] & gmask[None, :, None]
    if DIAG == 3:  # timing diagnostic: made-up words, no weight traffic
        w = (rn[:, None, None] * 977 + wofs) * 40503
    else:
        w = tl.load(P + rn[:, None, None] * s_pn + wofs, mask=wmask, other=0)
    sofs = rn[:, None] * s_sn + gg[None, :] * s_sg
    smask = nmask[:, None] & gmask[None, :]
    s = tl.load(S + sofs, mask=smask, other=0.0)
    z = tl.load(Z + sofs, mask=smask, other=0.0)
    kk = tl.arange(0, rg.shape[0] * GROUP)
    if ORD == 0:  # position t of each word of 8 holds k = 8 (t // 8) + ((t & 7) >> 1) + 4 (t & 1)
        kk = (kk & ~7) + ((kk & 7) >> 1) + 4 * (kk & 1)
    xk = g * GROUP + kk
    xmask = (rm[:, None] < M) & (xk < g_hi * GROUP)[None, :]
    x = tl.load(X + rm[:, None] * s_xm + xk[None, :] * s_xk, mask=xmask, other=0.0)
    return w, s, z, x


@triton.jit
def _int4_deq(X, P, S, Z, O, W, CNT, M, N, K, s_xm, s_xk, s_pn, s_sn, s_sg, s_om, s_on, GROUP: tl.constexpr,
              BM: tl.constexpr, BN: tl.constexpr, GB: tl.constexpr, GEMV: tl.constexpr, SPLIT: tl.constexpr,
              STAGES: tl.constexpr, SWAP: tl.constexpr, ORD: tl.constexpr, ASM: tl.constexpr,
              PIPE: tl.constexpr = 1, EPI: tl.constexpr = 0, DIAG: tl.constexpr = 0):
    """x (M, K) @ dequant(P).T, P (N, K/8) int32 words. Grid as quant._int8_mm: (BN rows, K splits in
    whole groups, BM rows of x); each step dequantizes GB groups into one (BN, GB * GROUP) tile and
    makes one dot of it (SWAP: as W x^T); STAGES 2 / 3 issue the loads of the next step / the one after
    before this step's arithmetic (run 6's register prefetch, one or two steps deep); PIPE > 1 (with
    STAGES 1) leaves it to Triton's loop pipelining, PIPE - 1 steps of loads in flight through shared
    memory. Partial sums of K splits meet as in quant_words._store_out (EPI 0) or are stored to W[split]
    for _sum_splits (EPI 1). DIAG (timing only, wrong results): 1 skips the split-K fix-up (every split
    stores its partial to O), 2 the unpacking arithmetic, 3 the weight loads."""
    GW: tl.constexpr = GROUP // 8
    rm = tl.program_id(2) * BM + tl.arange(0, BM)
    rn = tl.program_id(0) * BN + tl.arange(0, BN)
    rg = tl.arange(0, GB)
    rw = tl.arange(0, GW)
    nmask = rn < N
    G = K // GROUP
    per = tl.cdiv(tl.cdiv(G, GB), tl.num_programs(1)) * GB
    g_lo = tl.program_id(1) * per
    g_hi = tl.minimum(G, g_lo + per)
    dt = X.dtype.element_ty
    if SWAP:
        acc_t = tl.zeros([BN, BM], dtype=tl.float32)
    else:
        acc = tl.zeros([BM, BN], dtype=tl.float32)
    strides = (s_xm, s_xk, s_pn, s_sn, s_sg)
    t = _deq_load(X, P, S, Z, rm, rn, nmask, g_lo, rg, g_hi, M, rw, *strides, GW, GROUP, ORD, DIAG)
    if STAGES > 2:
        t2 = _deq_load(X, P, S, Z, rm, rn, nmask, g_lo + GB, rg, g_hi, M, rw, *strides, GW, GROUP, ORD, DIAG)
    for g0 in tl.range(g_lo, g_hi, GB, num_stages=PIPE):
        if STAGES > 1:  # the loads of step + STAGES - 1 go out before this step's arithmetic
            nxt = _deq_load(X, P, S, Z, rm, rn, nmask, g0 + (STAGES - 1) * GB, rg, g_hi, M, rw, *strides, GW,
                            GROUP, ORD, DIAG)
        else:
            t = _deq_load(X, P, S, Z, rm, rn, nmask, g0, rg, g_hi, M, rw, *strides, GW, GROUP, ORD, DIAG)
        w, s, z, x = t
        wt = _deq_tile(w, s, z, dt, ASM, ORD, DIAG)  # (BN, GB * GROUP)
        if SWAP:
            acc_t = tl.dot(wt, tl.trans(x), acc_t)
        else:
            acc = tl.dot(x, tl.trans(wt), acc)
        if STAGES > 2:
            t = t2
            t2 = nxt
        elif STAGES > 1:
            t = nxt
    if SWAP:
        acc = tl.trans(acc_t)
    if EPI == 1:
        mask = (rm[:, None] < M) & (rn[None, :] < N)
        tl.store(W + (tl.program_id(1) * M + rm[:, None]) * N + rn[None, :], acc, mask=mask)
    else:
        _store_out(O, W, CNT, acc, rm, rn, M, N, s_om, s_on, SPLIT and DIAG != 1)


@triton.jit
def _sum_splits(W, O, MN, N, s_om, s_on, SPLITS: tl.constexpr, BLOCK: tl.constexpr):
    """O = sum over the splits of W (SPLITS, M, N) float32, in split order (deterministic)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < MN
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for i in tl.static_range(SPLITS):
        acc += tl.load(W + i * MN + offs, mask=mask, other=0.0)
    tl.store(O + (offs // N) * s_om + (offs % N) * s_on, acc.to(O.dtype.element_ty), mask=mask)
# fmt: on


@dataclass(frozen=True)
class Int4Deq:
    """quant.int4_matmul's tile for _int4_deq (M <= 16): ``bn`` rows per program, ``split`` K splits,
    ``warps``, ``gb`` groups per dot, ``stages`` 2 / 3: the loads of the next step / the one after issued
    before this step's arithmetic, ``swap``: the product as W x^T, ``order`` 0/1: the tile's k order
    within a word, ``pipe`` > 1 (with stages 1): Triton's loop pipelining with that many stages,
    ``two_pass``: K splits summed by a second launch. The defaults are the 1 < M <= 16 default since
    run 9 (H200, bench/results/h200_kernels_run9*): 10.8-10.9 us against 11.4-11.5 us for the word kernel
    and 12.6 us for bf16 cuBLAS at M = 16."""

    bn: int = 64
    split: int = 8
    warps: int = 4
    gb: int = 1
    stages: int = 2
    swap: bool = True
    order: int = 1
    pipe: int = 1
    two_pass: bool = False

    def why_not(self, M: int, group: int, dtype: torch.dtype) -> list[str]:
        return reasons((
            (M > 16, f"M <= 16 (got {M})"), (not words_fit(group), f"group / 8 a power of two (got {group})"),
            (not pow2(self.gb), f"gb a power of two (got {self.gb})"),
            (self.order not in (0, 1), f"order 0 or 1 (got {self.order})"),
            (self.stages not in (1, 2, 3), f"stages 1, 2 or 3 (got {self.stages})"),
            (self.pipe < 1, f"pipe >= 1 (got {self.pipe})")))  # fmt: skip

    def consts(self, x: Tensor, scales: Tensor, group: int) -> tuple[tuple, dict]:
        """(launch tiles, constexprs) of this tile for x (M, K)."""
        split = clamp_splits(self.split, triton.cdiv(x.shape[1] // group, self.gb))
        # PTX bf16x2 only where it rounds (q - z) s exactly as the bf16 reference does (bf16 x and scales)
        ptx = x.is_cuda and x.dtype == scales.dtype == torch.bfloat16
        consts = dict(GROUP=group, GB=self.gb, STAGES=self.stages, SWAP=self.swap, ORD=self.order, ASM=ptx,
                      PIPE=self.pipe)  # fmt: skip
        return (16, self.bn, split, self.warps, False), consts

    def launch(self, x: Tensor, packed: Tensor, scales: Tensor, zeros: Tensor, group: int) -> Tensor:
        tiles, consts = self.consts(x, scales, group)
        if self.two_pass and tiles[2] > 1:
            return _launch_two_pass(x, packed, scales, zeros, tiles, **consts)
        return launch_words(_int4_deq, x, packed, scales, zeros, tiles, **consts)


def _launch_two_pass(x: Tensor, packed: Tensor, scales: Tensor, zeros: Tensor, tiles: tuple,
                     **consts: object) -> Tensor:  # fmt: skip
    """_int4_deq with its K splits' partials stored to a (splits, M, N) float32 buffer, summed by a second
    launch (_sum_splits) instead of the single launch's atomics and arrival counters."""
    bm, bn, split, warps, _ = tiles
    M, N = x.shape[0], packed.shape[0]
    out = torch.empty(M, N, device=x.device, dtype=x.dtype)
    if M == 0 or N == 0:
        return out
    pre, post = word_args(x, packed, scales, zeros)
    part = torch.empty(split, M, N, device=x.device, dtype=torch.float32)  # every split writes all of it
    grid = (triton.cdiv(N, bn), split, triton.cdiv(M, bm))
    _int4_deq[grid](x, *pre, out, part, part, *post, *out.stride(), BM=bm, BN=bn, GEMV=False, SPLIT=True,
                    EPI=1, num_warps=warps, **consts)  # fmt: skip
    _sum_splits[(triton.cdiv(M * N, 1024),)](part, out, M * N, N, *out.stride(), SPLITS=split, BLOCK=1024)
    return out
