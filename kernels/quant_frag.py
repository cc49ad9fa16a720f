"""int4 decode GEMM (M <= 16) on weights repacked offline into mma fragment order: the int32 words a thread
loads from global memory dequantize in registers straight into its mma.sync m16n8k16 A-operand registers,
with no shared-memory round trip on the weight path (the layout idea of Marlin, Frantar et al. 2024,
arXiv:2408.11743; written in Gluon, Triton's explicit-layout dialect, for sm_80+).

The int4 decode path (M <= 16) for weights repacked once by repack_int4. On an H200 (BENCHMARKS.md, runs
10-14) the default tile takes 7.9 us at M = 16, K = N = 4096, group 128 (1.60x bf16 cuBLAS; quant_deq, the
int4_matmul default there, 11.0 us) and 7.0 us at M = 1 (1.89x), with the bf16 reference's error. Checked
on CPU: the repacking and the per-thread fragment arithmetic by a pure-torch emulation
(tests/kernels/frag_emulation.py) against x @ dequantize(W)^T, and the kernel's sm_90 machine code (no
spills; no shared-memory loads, stores or barriers in the main loop: tests/kernels/test_quant_frag.py).
Gluon kernels do not run under Triton's CPU interpreter, so the kernel itself is tested on a GPU only.

Product and layout: out^T (N, M) = W x^T, W the A operand (16 output channels per mma), x^T the B operand
(M <= 16 as two n8 tiles). With k_width = 8, lane 4 g + t of a warp holds, per (16 rows, 64 k) tile, rows
g and g + 8 and the logical k 8 t + v and 32 + 8 t + v (v < 8); the mma of k-step s (s < 4) reads
v = 2 s, 2 s + 1. A k index is summed over, so W and x share a physical k order of their own within each
64-k chunk, logical 32 h + 8 t + 2 s + e = physical 16 t + 4 s + 2 h + e. Then:

* weights: the lop3 unpack of a word, (w >> 4j) & 0x000F000F | 0x43004300, is the bf16 pair (128 + nibble
  j, 128 + nibble j + 4); the repacked word (a, b) of a lane holds in nibble j + 4 e the physical k
  16 t + 4 j + 2 b + e of row 8 a + g, so its pair j IS the A register of k-step j. The lane's four words
  are adjacent (one 128-bit load per 16 rows x 64 k; a warp reads 512 contiguous bytes):
  words[n // 16, kc, 4 g + t, a + 2 b], row n = 16 (n // 16) + 8 a + g, k = 64 kc + 16 t + 4 j + 2 b + e;
* scales / zeros: (N/16, G, 8, 2) int32 bf16x2 pairs (s, s) and (128 + z, 128 + z) of row 16 (n // 16) +
  8 a + g, indexed [n // 16, group, g, a] (every word lies in one group: group % 64 == 0); then
  sub.bf16x2 leaves q - z exactly and mul.bf16x2 rounds (q - z) s once: the bf16 reference's weight;
* x: a lane's 16 physical k are 16 consecutive k of a row (two 128-bit loads), and each B register pair
  is two adjacent registers of one load.

Kernel (Int4Frag): N / (16 rt nwn) programs of nw nwn warps; a program owns rt nwn row tiles and all of
K, warp w the k range w // nwn of K / nw and the row tiles w % nwn: the split-K is summed inside the
program at the end (gl.sum over the warp axis, through shared memory), with no atomics and no second
launch. Each warp walks its range in super-steps of u chunks of 64 k, with d register sets in rotation
so that d - 1 super-steps of loads are in flight while one is computed. That is what made it fast: at
M = 16 with one row tile per warp, 8 warps with d = 2 took 8.9 us, d = 3 8.6 us; 4 warps with d = 3 8.3
us, d = 4 7.8-7.9 us; so a warp's chain of dependent loads, not DRAM bandwidth, bounds the time (a
cp.async ring with up to 7 chunks in flight through shared memory was slower, 11.3-13.3 us). ``pf``: each
warp first asks for its whole weight slice DRAM -> L2 (cp.async.bulk.prefetch.L2, sm_90; slower in every
measured tile), ``cg``: weights by ld.global.cg (no change).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pretrainctl_kernels.quant import dequantize_int4, pack_int4, unpack_int4
from pretrainctl_kernels.quant_launch import reasons
from torch import Tensor
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import mma_v2

__all__ = [
    "FragInt4",
    "Int4Frag",
    "FRAG_TILES",
    "frag_tile",
    "repack_int4",
    "unrepack_int4",
    "int4_matmul_frag",
    "int4_matmul_frag_ref",
]

CHUNK = 64  # k per chunk: one (16 rows, 64 k) A tile of k_width 8


# ------------------------------------------------------------------------------------------ repacking


@dataclass(frozen=True)
class FragInt4:
    """An int4 weight in fragment order (repack_int4): words (N/16, K/64, 32, 4), scales2 / zeros2
    (N/16, K/group, 8, 2), all int32."""

    words: Tensor
    scales2: Tensor
    zeros2: Tensor
    group: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.words.shape[0] * 16, self.words.shape[1] * CHUNK


def _as_i32(v: Tensor) -> Tensor:
    """int64 holding unsigned 32-bit patterns -> int32 with the same bits."""
    v = v & 0xFFFFFFFF
    return torch.where(v >= 2**31, v - 2**32, v).to(torch.int32)


def _bf16_pair(v: Tensor) -> Tensor:
    """v -> int32 bf16x2 (v, v)."""
    b = v.to(torch.bfloat16).view(torch.int16).to(torch.int64) & 0xFFFF
    return _as_i32(b | (b << 16))


def repack_int4(packed: Tensor, scales: Tensor, zeros: Tensor, group: int) -> FragInt4:
    """quant.quantize_int4's (N, K/2) uint8 + (N, K/group) scales / zeros -> FragInt4 (bits moved, nothing
    rounded but the scales and zeros to bf16). N % 16 == 0, K % 64 == 0, group % 64 == 0."""
    N, K = packed.shape[0], packed.shape[1] * 2
    if N % 16 or K % CHUNK or group % CHUNK or scales.shape != (N, K // group) or zeros.shape != scales.shape:
        why = f"N={N}, K={K}, group={group}, scales {tuple(scales.shape)}, zeros {tuple(zeros.shape)}"
        raise ValueError(f"repack_int4: needs N % 16 == 0, K % 64 == 0, group % 64 == 0 and (N, K/group) "
                         f"scales / zeros (got {why})")  # fmt: skip
    q = unpack_int4(packed).long().reshape(N // 16, 2, 8, K // CHUNK, 4, 4, 2, 2)  # [tile a g kc t j b e]
    q = q.permute(0, 3, 2, 4, 6, 1, 7, 5).reshape(N // 16, K // CHUNK, 32, 4, 8)  # [tile kc gt ba ej]
    words = _as_i32((q << (4 * torch.arange(8, device=q.device))).sum(-1))

    def pairs(v: Tensor) -> Tensor:  # (N, G) -> [tile, G, g, a]
        return _bf16_pair(v).reshape(N // 16, 2, 8, -1).permute(0, 3, 2, 1).contiguous()

    return FragInt4(words.contiguous(), pairs(scales), pairs(zeros.float() + 128.0), group)


def unrepack_int4(w: FragInt4) -> tuple[Tensor, Tensor, Tensor]:
    """The inverse of repack_int4: (packed, scales, zeros) in quant's format, scales / zeros in bf16."""
    (N, K), T, KC = w.shape, w.words.shape[0], w.words.shape[1]
    nib = (w.words.long()[..., None] >> (4 * torch.arange(8, device=w.words.device))) & 15
    q = nib.reshape(T, KC, 8, 4, 2, 2, 2, 4).permute(0, 5, 2, 1, 3, 7, 4, 6).reshape(N, K)

    def low(v: Tensor) -> Tensor:  # [tile, G, g, a] bf16x2 -> (N, G) bf16
        return (v & 0xFFFF).to(torch.int16).view(torch.bfloat16).permute(0, 3, 2, 1).reshape(N, -1)

    return pack_int4(q), low(w.scales2), low(w.zeros2) - 128


def int4_matmul_frag_ref(x: Tensor, w: FragInt4) -> Tensor:
    """x @ dequant(W).T in x's dtype, from the unrepacked weight (the bf16 reference rounds each weight
    once, as the kernel does)."""
    return x @ dequantize_int4(*unrepack_int4(w), w.group, x.dtype).t()


# ---------------------------------------------------------------------------------------------- kernel


# fmt: off
@gluon.jit
def _deq(words, s2, z2):
    """words (..., 4) int32 [r = a + 2 b], s2 / z2 the word's row's bf16x2 (s, s) / (128 + z, 128 + z).
    pack=2: one asm per two words (a = 0, 1 of one b), every operand a 32-bit register. Output j (j < 4)
    / 4 + j: bf16 (..., 4) whose registers are pair j of word a = 0 / a = 1, element 2 b + e holding half
    e of the pair: (q - z) s of nibble j + 4 e."""
    return gl.inline_asm_elementwise(
        """{
        .reg .b32 v, u;
        lop3.b32 $0, $8, 0x000F000F, 0x43004300, 0xEA; sub.rn.bf16x2 $0, $0, $12; mul.rn.bf16x2 $0, $0, $10;
        lop3.b32 $4, $9, 0x000F000F, 0x43004300, 0xEA; sub.rn.bf16x2 $4, $4, $13; mul.rn.bf16x2 $4, $4, $11;
        shr.u32 v, $8, 4;  lop3.b32 $1, v, 0x000F000F, 0x43004300, 0xEA;
        shr.u32 u, $9, 4;  lop3.b32 $5, u, 0x000F000F, 0x43004300, 0xEA;
        sub.rn.bf16x2 $1, $1, $12; mul.rn.bf16x2 $1, $1, $10;
        sub.rn.bf16x2 $5, $5, $13; mul.rn.bf16x2 $5, $5, $11;
        shr.u32 v, $8, 8;  lop3.b32 $2, v, 0x000F000F, 0x43004300, 0xEA;
        shr.u32 u, $9, 8;  lop3.b32 $6, u, 0x000F000F, 0x43004300, 0xEA;
        sub.rn.bf16x2 $2, $2, $12; mul.rn.bf16x2 $2, $2, $10;
        sub.rn.bf16x2 $6, $6, $13; mul.rn.bf16x2 $6, $6, $11;
        shr.u32 v, $8, 12; lop3.b32 $3, v, 0x000F000F, 0x43004300, 0xEA;
        shr.u32 u, $9, 12; lop3.b32 $7, u, 0x000F000F, 0x43004300, 0xEA;
        sub.rn.bf16x2 $3, $3, $12; mul.rn.bf16x2 $3, $3, $10;
        sub.rn.bf16x2 $7, $7, $13; mul.rn.bf16x2 $7, $7, $11;
        }""",
        "=r,=r,=r,=r,=r,=r,=r,=r,r,r,r,r,r,r", [words, s2, z2], dtype=(gl.bfloat16,) * 8, is_pure=True,
        pack=2)


@gluon.jit
def _a_operand(words, s2, z2, a_l: gl.constexpr, NW: gl.constexpr, RT: gl.constexpr):
    """words (NW, 32 RT, 4) int32 [warp, 32 c + lane, r] -> the A operand (NW, 16 RT, 64) bf16 in a_l: row
    16 c + 8 a + g, logical k 32 b + 8 t + 2 j + e. After the asm every step only renames registers
    (the conversion is asserted trivial at compile time)."""
    o0, o1, o2, o3, o4, o5, o6, o7 = _deq(words, s2, z2)
    t = gl.join(gl.join(gl.join(o0, o1), gl.join(o2, o3)), gl.join(gl.join(o4, o5), gl.join(o6, o7)))
    t = gl.reshape(t, [NW, RT, 8, 4, 2, 2, 2, 2, 2])  # [w, c, g, t, b, e, i1, i2, a], j = 2 i2 + i1
    t = gl.permute(t, [0, 1, 8, 2, 4, 3, 7, 6, 5])  # [w, c, a, g, b, t, i2, i1, e]
    return gl.convert_layout(gl.reshape(t, [NW, RT * 16, 64]), a_l, assert_trivial=True)


@gluon.jit
def _b_operand(xv, b_l: gl.constexpr, NW: gl.constexpr):
    """x (NW, 16 [m], 4 [t], 8 [p]) int32 bf16 pairs as loaded (physical k 16 t + 2 p + e, p = 2 s + h)
    -> the B operand (NW, 64, 16) bf16 in b_l, logical k 32 h + 8 t + 2 s + e (the asm renames registers)."""
    x0, x1 = gl.inline_asm_elementwise("mov.b32 $0, $2; mov.b32 $1, $3;", "=r,=r,r,r", [xv],
                                       dtype=(gl.bfloat16, gl.bfloat16), is_pure=True, pack=2)
    t = gl.reshape(gl.join(x0, x1), [NW, 16, 4, 4, 2, 2])  # [w, m, t, s, e, h]
    t = gl.permute(t, [0, 5, 2, 3, 4, 1])  # [w, h, t, s, e, m]
    return gl.convert_layout(gl.reshape(t, [NW, 64, 16]), b_l, assert_trivial=True)


@gluon.jit
def _prefetch_l2(ptrs, NBYTES: gl.constexpr):
    """Lane 0 of each warp: cp.async.bulk.prefetch.L2 of NBYTES from each of its pointers (nothing to wait
    for: the register loads that follow find the bytes in L2 instead of DRAM)."""
    return gl.inline_asm_elementwise(
        """{
        .reg .pred p; .reg .b32 l;
        mov.u32 l, %laneid; setp.eq.u32 p, l, 0;
        @p cp.async.bulk.prefetch.L2.global [$1], """ + NBYTES.__str__() + """;
        mov.u32 $0, 0;
        }""", "=r,l", [ptrs], dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def _load_step(wp, sp, zp, xp, xmask, q, U: gl.constexpr, CPG: gl.constexpr, CM: gl.constexpr):
    """The loads of super-step q (U chunks), all int32: a tuple of U (words, s2, z2, x) tuples; CM the
    weights' cache modifier."""
    res = ()
    for u in gl.static_range(U):
        c = q * U + u
        g_off = (c // CPG) * 16
        res = res + ((gl.load(wp + c * 128, cache_modifier=CM), gl.load(sp + g_off, cache_modifier=CM),
                      gl.load(zp + g_off, cache_modifier=CM), gl.load(xp + c * 32, mask=xmask)),)
    return res


@gluon.jit
def _compute_step(st, acc, a_l: gl.constexpr, b_l: gl.constexpr, NW: gl.constexpr, RT: gl.constexpr,
                  U: gl.constexpr):
    for u in gl.static_range(U):
        words, s2, z2, xv = st[u]
        acc = mma_v2(_a_operand(words, s2, z2, a_l, NW, RT), _b_operand(xv, b_l, NW), acc)
    return acc


@gluon.jit
def _int4_frag(X, WR, S2, Z2, OUT, M, s_xm, s_om, K: gl.constexpr, GROUP: gl.constexpr, RT: gl.constexpr,
               NW: gl.constexpr, U: gl.constexpr, PF: gl.constexpr, NWN: gl.constexpr = 1,
               CG: gl.constexpr = False, D: gl.constexpr = 2):
    """X (M <= 16, K) bf16 viewed as int32 (s_xm in int32 units); WR / S2 / Z2: FragInt4's tensors; OUT
    (M, N) bf16. Grid (N / (16 RT NWN),), NW warps: NW / NWN split K, NWN split the program's NWN RT row
    tiles (warp w: k range w // NWN, row tiles w % NWN); CG: weights by ld.global.cg (not kept in L1,
    where the x that NWN warps and co-resident programs share stays). See the module docstring."""
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[NW, 1, 1],
                                                   instr_shape=[1, 16, 8])
    a_l: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=8)
    b_l: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=mma, k_width=8)
    # words (warp, 32 c + lane, r): one 128-bit load per lane and row tile
    w_l: gl.constexpr = gl.BlockedLayout(size_per_thread=[1, 1, 4], threads_per_warp=[1, 32, 1],
                                         warps_per_cta=[NW, 1, 1], order=[2, 1, 0])
    # x as int32 pairs (warp, m, t, p): lane 4 g + t holds rows g, g + 8 and 16 consecutive k of each
    x_l: gl.constexpr = gl.BlockedLayout(size_per_thread=[1, 1, 1, 8], threads_per_warp=[1, 8, 4, 1],
                                         warps_per_cta=[NW, 1, 1, 1], order=[3, 2, 1, 0])
    KC: gl.constexpr = K // 64  # chunks per row
    NWK: gl.constexpr = NW // NWN  # warps along K
    KW: gl.constexpr = K // NWK  # k per warp
    NCH: gl.constexpr = KW // 64  # chunks per warp
    CPG: gl.constexpr = GROUP // 64  # chunks per group
    G: gl.constexpr = K // GROUP
    NQ: gl.constexpr = NCH // U
    gl.static_assert(KW % GROUP == 0)
    gl.static_assert(GROUP % 64 == 0)
    gl.static_assert(NCH % U == 0)
    gl.static_assert(NQ >= D)

    pid = gl.program_id(0)
    wi = gl.arange(0, NW, layout=gl.SliceLayout(1, gl.SliceLayout(2, w_l)))
    li = gl.arange(0, RT * 32, layout=gl.SliceLayout(0, gl.SliceLayout(2, w_l)))
    ri = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(1, w_l)))
    w3 = gl.expand_dims(gl.expand_dims(wi, 1), 2)  # (NW, 1, 1)
    l3 = gl.expand_dims(gl.expand_dims(li, 0), 2)  # (1, 32 RT, 1): 32 c + lane
    r3 = gl.expand_dims(gl.expand_dims(ri, 0), 1)  # (1, 1, 4): word r = a + 2 b
    tile = (pid * NWN + w3 % NWN) * RT + l3 // 32
    lane = l3 % 32
    wk3 = w3 // NWN
    wbase = WR + (tile * KC + wk3 * NCH) * 128  # the warp's slice of row tile c, chunk 0
    wp = wbase + lane * 4 + r3
    if PF:  # NCH * 512 contiguous bytes per warp and row tile
        _prefetch_l2(wbase, NCH * 512)
    sofs = ((tile * G + wk3 * (KW // GROUP)) * 8 + lane // 4) * 2 + r3 % 2  # S2 / Z2 [tile, group, g, a]
    sp = S2 + sofs
    zp = Z2 + sofs

    xw = gl.arange(0, NW, layout=gl.SliceLayout(1, gl.SliceLayout(2, gl.SliceLayout(3, x_l))))
    xm = gl.arange(0, 16, layout=gl.SliceLayout(0, gl.SliceLayout(2, gl.SliceLayout(3, x_l))))
    xt = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(3, x_l))))
    xq = gl.arange(0, 8, layout=gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(2, x_l))))
    xw4 = gl.expand_dims(gl.expand_dims(gl.expand_dims(xw, 1), 2), 3)
    xm4 = gl.expand_dims(gl.expand_dims(gl.expand_dims(xm, 0), 2), 3)
    xt4 = gl.expand_dims(gl.expand_dims(gl.expand_dims(xt, 0), 1), 3)
    xq4 = gl.expand_dims(gl.expand_dims(gl.expand_dims(xq, 0), 1), 2)
    xp = X + xm4 * s_xm + (xw4 // NWN) * (KW // 2) + xt4 * 8 + xq4
    xmask = xm4 < M

    CM: gl.constexpr = ".cg" if CG else ""
    acc = gl.zeros([NW, RT * 16, 16], gl.float32, layout=mma)
    # D register sets in rotation: D - 1 super-steps' loads are in flight while one is computed. The runtime
    # loop's body is D steps long, so each load reuses the registers the step before it freed (no moves to
    # rotate them). (In a fully unrolled loop ptxas sinks each load next to its use.)
    NS: gl.constexpr = NQ - D + 1  # steps that issue a load
    NL: gl.constexpr = NS // D
    sets = ()
    for i in gl.static_range(D - 1):
        sets = sets + (_load_step(wp, sp, zp, xp, xmask, i, U, CPG, CM),)
    for p in range(NL):
        for i in gl.static_range(D):
            new = _load_step(wp, sp, zp, xp, xmask, p * D + i + D - 1, U, CPG, CM)
            acc = _compute_step(sets[0], acc, a_l, b_l, NW, RT, U)
            sets = sets[1:] + (new,)
    for i in gl.static_range(NS - NL * D):
        new = _load_step(wp, sp, zp, xp, xmask, NL * D + i + D - 1, U, CPG, CM)
        acc = _compute_step(sets[0], acc, a_l, b_l, NW, RT, U)
        sets = sets[1:] + (new,)
    for i in gl.static_range(D - 1):
        acc = _compute_step(sets[i], acc, a_l, b_l, NW, RT, U)

    R: gl.constexpr = NWN * RT * 16  # the program's rows: row wn RT 16 + r is warp wn's acc row r
    if NWN == 1:
        red = gl.sum(acc, axis=0)  # (16 RT, 16): the NW k splits, through shared memory
        o_l: gl.constexpr = gl.SliceLayout(0, mma)
    else:
        o_l: gl.constexpr = gl.BlockedLayout(size_per_thread=[1, 1], threads_per_warp=[2, 16],
                                             warps_per_cta=[NW, 1], order=[1, 0])
        red = gl.convert_layout(gl.sum(gl.reshape(acc, [NWK, R, 16]), axis=0), o_l)
    on = gl.expand_dims(gl.arange(0, R, layout=gl.SliceLayout(1, o_l)), 1)
    om = gl.expand_dims(gl.arange(0, 16, layout=gl.SliceLayout(0, o_l)), 0)
    gl.store(OUT + om * s_om + pid * R + on, red.to(gl.bfloat16), mask=(om < M) & (on < R))
# fmt: on


# ---------------------------------------------------------------------------------------------- launch


@dataclass(frozen=True)
class Int4Frag:
    """_int4_frag's launch parameters: ``rt`` row tiles of 16 output channels per warp, ``nw`` warps along
    K (the K split inside a program), ``u`` chunks of 64 k per super-step, ``pf`` the L2 prefetch (sm_90),
    ``nwn`` warps along N, ``cg`` weights not cached in L1, ``d`` register sets in rotation (d - 1
    super-steps of loads in flight per warp). Defaults: the fastest of runs 10-13 on an H200 at K = N =
    4096, M 1 and 16 (BENCHMARKS.md): 256 programs of 4 warps at N = 4096, 4 register sets."""

    rt: int = 1
    nw: int = 4
    u: int = 1
    pf: bool = False
    nwn: int = 1
    cg: bool = False
    d: int = 4

    def why_not(self, M: int, N: int, K: int, group: int) -> list[str]:
        rows = 16 * self.rt * self.nwn
        return reasons((
            (M > 16, f"M <= 16 (got {M})"),
            (N % rows, f"N a multiple of 16 rt nwn = {rows} (got {N})"),
            (K % (self.nw * group), f"K a multiple of nw * group = {self.nw * group} (got {K})"),
            ((K // self.nw // CHUNK) % self.u, f"u dividing the {K // self.nw // CHUNK} chunks per warp"),
            (self.d < 2 or K // self.nw // CHUNK < self.d * self.u,
             f"2 <= d <= the {K // self.nw // CHUNK} chunks per warp / u (got d = {self.d})"),
        ))  # fmt: skip

    def consts(self, K: int, group: int) -> dict:
        return dict(
            K=K,
            GROUP=group,
            RT=self.rt,
            NW=self.nw * self.nwn,
            U=self.u,
            PF=self.pf,
            NWN=self.nwn,
            CG=self.cg,
            D=self.d,
        )


# Tried in order when no tile is given: the default, then fewer register sets and warps for a short K.
FRAG_TILES = (Int4Frag(), Int4Frag(nw=8, d=2), Int4Frag(nw=4, d=2), Int4Frag(nw=2, d=2), Int4Frag(nw=1, d=2))


def frag_tile(N: int, K: int, group: int) -> Int4Frag:
    """The first of FRAG_TILES that fits an (N, K) weight of this group size (else the default, whose
    reasons int4_matmul_frag then reports)."""
    return next((t for t in FRAG_TILES if not t.why_not(1, N, K, group)), FRAG_TILES[0])


def int4_matmul_frag(x: Tensor, w: FragInt4, tile: Int4Frag | None = None) -> Tensor:
    """x (M <= 16, K) bf16 on a CUDA GPU (sm_80+; ``pf`` needs sm_90) @ dequant(w).T -> (M, N) bf16: the
    int4 decode GEMM for weights repacked once by repack_int4 (tile: frag_tile's choice by default)."""
    (N, K), M = w.shape, x.shape[0]
    tile = tile or frag_tile(N, K, w.group)
    why = tile.why_not(M, N, K, w.group)
    if x.shape[1] != K:
        why.append(f"x of K = {K} columns (got {tuple(x.shape)})")
    if x.dtype != torch.bfloat16 or not x.is_cuda:
        why.append(f"bf16 x on a CUDA GPU (got {x.dtype} on {x.device}; Gluon has no CPU interpreter)")
    elif tile.pf and torch.cuda.get_device_capability(x.device) < (9, 0):
        why.append("sm_90 for pf=True (cp.async.bulk.prefetch.L2); use Int4Frag(pf=False)")
    if why:
        raise ValueError(f"int4_matmul_frag: {tile} needs " + "; ".join(why))
    if x.stride(1) != 1 or x.stride(0) % 8 or x.data_ptr() % 16:
        x = x.clone(memory_format=torch.contiguous_format)  # fresh, aligned rows: read as 128-bit vectors
    out = torch.empty(M, N, device=x.device, dtype=torch.bfloat16)
    if M == 0:
        return out
    xi = x.view(torch.int32)
    _int4_frag[(N // (16 * tile.rt * tile.nwn),)](xi, w.words, w.scales2, w.zeros2, out, M, xi.stride(0),
                                                  out.stride(0), num_warps=tile.nw * tile.nwn,
                                                  **tile.consts(K, w.group))  # fmt: skip
    return out
