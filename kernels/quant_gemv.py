"""int4 decode GEMV (M == 1) with x resident in registers: quant.int4_matmul's ``xres`` path.

Storage is quant.py's GPTQ/AWQ group-wise format (Frantar et al. 2022, arXiv:2210.17323; Lin et al. 2023,
arXiv:2306.00978), read as (N, K/8) int32 words as in quant_words. The difference is the loop order: a
program owns a K slice (all of K without split-K) and loops over rows, so its slice of x is loaded,
converted to float32, pre-scaled by 16^-j (quant_words._nibble's exact magic-number dequantization, after
FasterTransformer / Marlin, Frantar et al. 2024, arXiv:2408.11743) and laid out for the weight tile ONCE,
before the loop. Every layout conversion of x happens there; the loop body is the word loads, per
nibble an AND, a subtraction and a multiply-add, and the row reductions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from pretrainctl_kernels.quant_launch import clamp_splits, launch_words, pow2, reasons, words_fit
from pretrainctl_kernels.quant_words import _nibble, _store_out
from torch import Tensor


# fmt: off
@triton.jit
def _xres_load(P, S, Z, r0, n_hi, g_lo, g_hi, rg, rw, s_pn, s_sn, s_sg, R: tl.constexpr, GW: tl.constexpr):
    """One row step's loads: words (R, GPB, GW) int32, scale and zero (R, GPB) in their stored dtype;
    rows >= n_hi (the program's end, or N) and groups >= g_hi are masked off (no memory traffic)."""
    rn = r0 + tl.arange(0, R)
    gg = g_lo + rg
    gm = (rn < n_hi)[:, None] & (gg < g_hi)[None, :]
    wofs = (gg[:, None] * GW + rw[None, :])[None, :, :]
    w = tl.load(P + rn[:, None, None] * s_pn + wofs, mask=gm[:, :, None], other=0)
    sofs = rn[:, None] * s_sn + gg[None, :] * s_sg
    return w, tl.load(S + sofs, mask=gm, other=0.0), tl.load(Z + sofs, mask=gm, other=0.0)


@triton.jit
def _xres_plane(part, m, m_hi, z, xi, I: tl.constexpr, ZIN: tl.constexpr):
    # (2**23 + q 16^J) - 2**23 = q 16^J exactly; xi holds x 16^-J (exact), so the product is q x. ZIN: the
    # subtrahend is 2**23 + z 16^J (z: (R, GPB) float32), giving (q - z) x in the same instruction.
    if ZIN:
        J: tl.constexpr = I if I < 5 else I - 3  # _nibble's 16**J
        return part + (_nibble(m, m_hi, I) - (8388608.0 + z * (1 << (4 * J)))[:, :, None]) * xi
    else:
        return part + (_nibble(m, m_hi, I) - 8388608.0) * xi


@triton.jit
def _xres_rows(w, s, z, x0, x1, x2, x3, x4, x5, x6, x7, xsum, ZIN: tl.constexpr):
    """(R,) float32: sum_g s (sum_k q x - z sum_k x) over this program's groups, for the step's rows.
    ZIN subtracts z per element instead, which makes the arithmetic wait for z in the layout the word
    tile needs (a small conversion through shared memory, behind a barrier that ptxas cannot move this
    step's arithmetic above, nor the loads issued before it below)."""
    m = w | 0x4B000000
    m_hi = (w >> 12) | 0x4B000000
    z = z.to(tl.float32)
    part = _xres_plane(tl.zeros(w.shape, dtype=tl.float32), m, m_hi, z, x0, 0, ZIN)
    part = _xres_plane(_xres_plane(part, m, m_hi, z, x1, 1, ZIN), m, m_hi, z, x2, 2, ZIN)
    part = _xres_plane(_xres_plane(part, m, m_hi, z, x3, 3, ZIN), m, m_hi, z, x4, 4, ZIN)
    part = _xres_plane(_xres_plane(part, m, m_hi, z, x5, 5, ZIN), m, m_hi, z, x6, 6, ZIN)
    part = _xres_plane(part, m, m_hi, z, x7, 7, ZIN)
    dot = tl.sum(part, 2)  # (R, GPB): sum_k (q - z) x or sum_k q x per group
    if ZIN:
        return tl.sum(s.to(tl.float32) * dot, 1)
    else:
        return tl.sum(s.to(tl.float32) * (dot - z * xsum), 1)


@triton.jit
def _xres_out(O, W, t, xs, r0, n_hi, s_on, R: tl.constexpr, SPLIT: tl.constexpr, ZIN: tl.constexpr):
    """The step's R sums to O, or (split-K) added into the zeroed workspace W; rows >= n_hi (past the
    program's rows or N) are not written."""
    acc = _xres_rows(*t, *xs, ZIN)
    rn = r0 + tl.arange(0, R)
    if SPLIT:  # the last split per tile moves the sums to O (_int4_xres's end)
        tl.atomic_add(W + rn, acc, mask=rn < n_hi, sem="relaxed")
    else:
        tl.store(O + rn * s_on, acc.to(O.dtype.element_ty), mask=rn < n_hi)


@triton.jit
def _int4_xres(X, P, S, Z, O, W, CNT, M, N, K, s_xm, s_xk, s_pn, s_sn, s_sg, s_om, s_on, GROUP: tl.constexpr,
               BM: tl.constexpr, BN: tl.constexpr, GEMV: tl.constexpr, SPLIT: tl.constexpr, R: tl.constexpr,
               GPB: tl.constexpr, STAGES: tl.constexpr, PING: tl.constexpr = True,
               ZIN: tl.constexpr = False):
    """x (1, K) @ dequant(P).T for BN rows per program (axis 0) and one K slice of at most GPB groups
    (axis 1: split-K, partials meet as in quant_words._store_out), R rows per loop step. x's slice is
    read once as eight (1, GPB, GW) planes, plane i holding x at k = 8 (word) + i, in float32 scaled by
    16^-J (J as _nibble's), plus its per-group sums for the zero points. STAGES 1: each step loads, then
    computes; else the next step's loads go out first, PING: into a second register buffer (the loop
    unrolled by 2), else into one buffer carried by the loop -- which ptxas gives the same registers
    as the current step's words, so it can only issue those loads after their last use (no overlap)."""
    GW: tl.constexpr = GROUP // 8
    pid_n = tl.program_id(0)
    G = K // GROUP
    per = tl.cdiv(G, tl.num_programs(1))
    g_lo = tl.program_id(1) * per
    g_hi = tl.minimum(G, g_lo + per)
    rg = tl.arange(0, GPB)
    rw = tl.arange(0, GW)
    # (1, GPB, GW) planes: broadcast over a step's rows in the word tile's own layout, no conversion.
    gmask = (g_lo + rg < g_hi)[None, :, None]
    xp = X + ((g_lo + rg)[:, None] * GROUP + rw[None, :] * 8)[None, :, :] * s_xk
    x0 = tl.load(xp, mask=gmask, other=0.0).to(tl.float32)
    x1 = tl.load(xp + s_xk, mask=gmask, other=0.0).to(tl.float32)
    x2 = tl.load(xp + 2 * s_xk, mask=gmask, other=0.0).to(tl.float32)
    x3 = tl.load(xp + 3 * s_xk, mask=gmask, other=0.0).to(tl.float32)
    x4 = tl.load(xp + 4 * s_xk, mask=gmask, other=0.0).to(tl.float32)
    x5 = tl.load(xp + 5 * s_xk, mask=gmask, other=0.0).to(tl.float32)
    x6 = tl.load(xp + 6 * s_xk, mask=gmask, other=0.0).to(tl.float32)
    x7 = tl.load(xp + 7 * s_xk, mask=gmask, other=0.0).to(tl.float32)
    xsum = tl.sum(x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7, 2)  # (1, GPB) per-group sums, for the zero points
    # Pre-scaled by 16^-J (powers of two: exact), so each nibble's q 16^J times it is q x.
    x1, x2, x3, x4 = x1 * (1.0 / 16), x2 * (1.0 / 256), x3 * (1.0 / 4096), x4 * (1.0 / 65536)
    x5, x6, x7 = x5 * (1.0 / 256), x6 * (1.0 / 4096), x7 * (1.0 / 65536)  # nibbles 5..7: m_hi, J = I - 3
    n0 = pid_n * BN
    n_hi = tl.minimum(N, n0 + BN)
    ld = (P, S, Z)
    at = (n_hi, g_lo, g_hi, rg, rw, s_pn, s_sn, s_sg)  # then R, GW: constexprs cannot travel in a tuple
    xs = (x0, x1, x2, x3, x4, x5, x6, x7, xsum)
    if STAGES == 1:
        for r0 in tl.range(n0, n0 + BN, R, num_stages=1):
            _xres_out(O, W, _xres_load(*ld, r0, *at, R, GW), xs, r0, n_hi, s_on, R, SPLIT, ZIN)
    elif PING:  # two register buffers, loop unrolled by 2: each step's math overlaps the other's loads
        ta = _xres_load(*ld, n0, *at, R, GW)
        for r0 in tl.range(n0, n0 + BN, 2 * R, num_stages=1):
            tb = _xres_load(*ld, r0 + R, *at, R, GW)
            _xres_out(O, W, ta, xs, r0, n_hi, s_on, R, SPLIT, ZIN)
            ta = _xres_load(*ld, r0 + 2 * R, *at, R, GW)  # masked off past the program's rows
            _xres_out(O, W, tb, xs, r0 + R, n_hi, s_on, R, SPLIT, ZIN)
    else:  # one buffer carried by the loop, the next step's loads first (run 6's form; see BENCHMARKS.md)
        t = _xres_load(*ld, n0, *at, R, GW)
        for r0 in tl.range(n0, n0 + BN, R, num_stages=1):
            nxt = _xres_load(*ld, r0 + R, *at, R, GW)
            _xres_out(O, W, t, xs, r0, n_hi, s_on, R, SPLIT, ZIN)
            t = nxt
    if SPLIT:  # adds nothing itself: counts this split in and, if last, moves the tile's sums to O
        rm = tl.arange(0, 1)
        rn = n0 + tl.arange(0, BN)
        _store_out(O, W, CNT, tl.zeros([1, BN], dtype=tl.float32), rm, rn, M, N, s_om, s_on, SPLIT)
# fmt: on


@dataclass(frozen=True)
class Int4Xres:
    """quant.int4_matmul's tile for _int4_xres (M == 1): ``bn`` rows per program in steps of ``rows``,
    ``split`` K splits, ``warps``, ``stages`` 1 (no prefetch), 2 (two register buffers) or 3 (one
    loop-carried buffer), ``zin``: the zero point subtracted per element. Not a default: in run 7 (H200,
    bench/results/h200_kernels_run7.txt) this tile took 10.0 us against 9.4 us for the word kernel's."""

    bn: int = 32
    split: int = 1
    warps: int = 4
    rows: int = 4
    stages: int = 2
    zin: bool = True

    def why_not(self, M: int, group: int, dtype: torch.dtype) -> list[str]:
        return reasons((
            (M != 1, f"M == 1 (got {M})"), (not words_fit(group), f"group / 8 a power of two (got {group})"),
            (not (pow2(self.bn) and pow2(self.rows) and self.rows <= self.bn),
             f"bn and rows powers of two, rows <= bn (got bn={self.bn}, rows={self.rows})"),
            (self.stages not in (1, 2, 3), f"stages 1, 2 or 3 (got {self.stages})")))  # fmt: skip

    def launch(self, x: Tensor, packed: Tensor, scales: Tensor, zeros: Tensor, group: int) -> Tensor:
        G = x.shape[1] // group
        split = clamp_splits(self.split, G)
        gpb = triton.next_power_of_2(triton.cdiv(G, split))
        return launch_words(_int4_xres, x, packed, scales, zeros, (1, self.bn, split, self.warps, True),
                            GROUP=group, R=self.rows, GPB=gpb, STAGES=min(self.stages, 2),
                            PING=self.stages == 2, ZIN=self.zin)  # fmt: skip
