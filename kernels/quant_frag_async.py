"""quant_frag's int4 decode GEMM with the weight stream staged through shared memory by cp.async.

EXPERIMENTAL. Run 10 (BENCHMARKS.md) ran quant_frag on an H200: correct, but 9.1 us at M = 16, K = N =
4096 (best tile), i.e. ~0.9 TB/s: latency-bound. Its register ping-pong keeps only two chunks per warp in
flight (~16 KB per SM), and each chunk's words, scales and zeros occupy registers while in flight. Here the
weights, scales and zeros go global -> shared memory by cp.async (no registers while in flight) in a ring of
``s`` chunks per warp, so s - 1 chunks (up to all of a warp's K slice) are in flight at once; x, an L2 hit,
keeps the register ping-pong. Every thread reads back only the shared words it copied itself (the copy and
read layouts are the same), so cp.async.wait_group orders the ring without a barrier. Same storage
(quant_frag.FragInt4), same fragment arithmetic (quant_frag._a_operand / _b_operand), same result.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pretrainctl_kernels.quant_frag import FragInt4, _a_operand, _b_operand
from pretrainctl_kernels.quant_launch import reasons
from torch import Tensor
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy as cp
from triton.experimental.gluon.language.nvidia.ampere import mma_v2

__all__ = ["Int4FragCp", "int4_matmul_frag_cp"]

# Triton 3.6 (the GPU machines) names it async_copy_global_to_shared; 3.9 renamed it async_load.
_cp_load = getattr(cp, "async_load", None) or cp.async_copy_global_to_shared
SMEM_LIMIT = 200 * 1024  # bytes of ring per program (sm_90 allows 227 KB; the split-K sum needs a few)


# fmt: off
@gluon.jit
def _issue(ws, ss, zs, wp, szp, c, S: gl.constexpr, NCH: gl.constexpr, CPG: gl.constexpr):
    """cp.async chunk c's words, scales and zeros into ring slot c % S. Past the warp's last chunk it
    copies the last chunk again (into a slot already read), which keeps the group count static."""
    cc = gl.minimum(c, NCH - 1)
    slot = c % S
    _cp_load(ws.index(slot), wp + cc * 128)
    _cp_load(ss.index(slot), szp[0] + (cc // CPG) * 16)
    _cp_load(zs.index(slot), szp[1] + (cc // CPG) * 16)


@gluon.jit
def _quad(v, l: gl.constexpr, NW: gl.constexpr, RT: gl.constexpr):
    """(NW, 32 RT, 2) int32 [a] -> (NW, 32 RT, 4) [r = a + 2 b] in l (a register renaming)."""
    t = gl.permute(gl.join(v, v), [0, 1, 3, 2])
    return gl.convert_layout(gl.reshape(t, [NW, 32 * RT, 4]), l, assert_trivial=True)


@gluon.jit
def _int4_frag_cp(X, WR, S2, Z2, OUT, M, s_xm, s_om, K: gl.constexpr, GROUP: gl.constexpr,
                  RT: gl.constexpr, NW: gl.constexpr, S: gl.constexpr):
    """quant_frag._int4_frag with the weight path through an S-slot cp.async ring (module docstring)."""
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[NW, 1, 1],
                                                   instr_shape=[1, 16, 8])
    a_l: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=8)
    b_l: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=mma, k_width=8)
    w_l: gl.constexpr = gl.BlockedLayout(size_per_thread=[1, 1, 4], threads_per_warp=[1, 32, 1],
                                         warps_per_cta=[NW, 1, 1], order=[2, 1, 0])
    sz_l: gl.constexpr = gl.BlockedLayout(size_per_thread=[1, 1, 2], threads_per_warp=[1, 32, 1],
                                          warps_per_cta=[NW, 1, 1], order=[2, 1, 0])
    x_l: gl.constexpr = gl.BlockedLayout(size_per_thread=[1, 1, 1, 8], threads_per_warp=[1, 8, 4, 1],
                                         warps_per_cta=[NW, 1, 1, 1], order=[3, 2, 1, 0])
    flat: gl.constexpr = gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[2, 1, 0])
    KC: gl.constexpr = K // 64
    KW: gl.constexpr = K // NW
    NCH: gl.constexpr = KW // 64
    CPG: gl.constexpr = GROUP // 64
    G: gl.constexpr = K // GROUP
    gl.static_assert(KW % GROUP == 0)
    gl.static_assert(GROUP % 64 == 0)
    gl.static_assert(S >= 2)

    pid = gl.program_id(0)
    wi = gl.arange(0, NW, layout=gl.SliceLayout(1, gl.SliceLayout(2, w_l)))
    li = gl.arange(0, RT * 32, layout=gl.SliceLayout(0, gl.SliceLayout(2, w_l)))
    ri = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(1, w_l)))
    w3 = gl.expand_dims(gl.expand_dims(wi, 1), 2)
    l3 = gl.expand_dims(gl.expand_dims(li, 0), 2)
    r3 = gl.expand_dims(gl.expand_dims(ri, 0), 1)
    wp = WR + ((pid * RT + l3 // 32) * KC + w3 * NCH) * 128 + (l3 % 32) * 4 + r3

    swi = gl.arange(0, NW, layout=gl.SliceLayout(1, gl.SliceLayout(2, sz_l)))
    sli = gl.arange(0, RT * 32, layout=gl.SliceLayout(0, gl.SliceLayout(2, sz_l)))
    sai = gl.arange(0, 2, layout=gl.SliceLayout(0, gl.SliceLayout(1, sz_l)))
    sw3 = gl.expand_dims(gl.expand_dims(swi, 1), 2)
    sl3 = gl.expand_dims(gl.expand_dims(sli, 0), 2)
    sa3 = gl.expand_dims(gl.expand_dims(sai, 0), 1)
    sofs = (((pid * RT + sl3 // 32) * G + sw3 * (KW // GROUP)) * 8 + (sl3 % 32) // 4) * 2 + sa3
    szp = (S2 + sofs, Z2 + sofs)

    xw = gl.arange(0, NW, layout=gl.SliceLayout(1, gl.SliceLayout(2, gl.SliceLayout(3, x_l))))
    xm = gl.arange(0, 16, layout=gl.SliceLayout(0, gl.SliceLayout(2, gl.SliceLayout(3, x_l))))
    xt = gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(3, x_l))))
    xq = gl.arange(0, 8, layout=gl.SliceLayout(0, gl.SliceLayout(1, gl.SliceLayout(2, x_l))))
    xw4 = gl.expand_dims(gl.expand_dims(gl.expand_dims(xw, 1), 2), 3)
    xm4 = gl.expand_dims(gl.expand_dims(gl.expand_dims(xm, 0), 2), 3)
    xt4 = gl.expand_dims(gl.expand_dims(gl.expand_dims(xt, 0), 1), 3)
    xq4 = gl.expand_dims(gl.expand_dims(gl.expand_dims(xq, 0), 1), 2)
    xp = X + xm4 * s_xm + xw4 * (KW // 2) + xt4 * 8 + xq4
    xmask = xm4 < M

    ws = gl.allocate_shared_memory(gl.int32, [S, NW, 32 * RT, 4], flat)
    ss = gl.allocate_shared_memory(gl.int32, [S, NW, 32 * RT, 2], flat)
    zs = gl.allocate_shared_memory(gl.int32, [S, NW, 32 * RT, 2], flat)
    for c in gl.static_range(S - 1):
        _issue(ws, ss, zs, wp, szp, c, S, NCH, CPG)
        cp.commit_group()
    xa = gl.load(xp, mask=xmask)
    acc = gl.zeros([NW, RT * 16, 16], gl.float32, layout=mma)
    for c in range(NCH):
        _issue(ws, ss, zs, wp, szp, c + S - 1, S, NCH, CPG)
        cp.commit_group()
        xb = gl.load(xp + gl.minimum(c + 1, NCH - 1) * 32, mask=xmask)
        cp.wait_group(S - 1)  # chunk c's group has landed (S - 1 younger groups may still be in flight)
        slot = c % S
        words = ws.index(slot).load(w_l)
        s2 = _quad(ss.index(slot).load(sz_l), w_l, NW, RT)
        z2 = _quad(zs.index(slot).load(sz_l), w_l, NW, RT)
        acc = mma_v2(_a_operand(words, s2, z2, a_l, NW, RT), _b_operand(xa, b_l, NW), acc)
        xa = xb
    cp.wait_group(0)

    red = gl.sum(acc, axis=0)
    o_l: gl.constexpr = gl.SliceLayout(0, mma)
    on = gl.expand_dims(gl.arange(0, RT * 16, layout=gl.SliceLayout(1, o_l)), 1)
    om = gl.expand_dims(gl.arange(0, 16, layout=gl.SliceLayout(0, o_l)), 0)
    gl.store(OUT + om * s_om + pid * (RT * 16) + on, red.to(gl.bfloat16), mask=(om < M) & (on < RT * 16))
# fmt: on


@dataclass(frozen=True)
class Int4FragCp:
    """_int4_frag_cp's launch parameters: ``rt`` row tiles of 16 channels per program, ``nw`` warps (the K
    split inside a program), ``s`` ring slots per warp (s - 1 chunks of 64 k in flight)."""

    rt: int = 2
    nw: int = 8
    s: int = 8

    def smem_bytes(self) -> int:
        return self.s * self.nw * 32 * self.rt * 8 * 4  # words (4) + scales (2) + zeros (2) int32 per lane

    def why_not(self, M: int, N: int, K: int, group: int) -> list[str]:
        return reasons((
            (M > 16, f"M <= 16 (got {M})"),
            (N % (16 * self.rt), f"N a multiple of 16 rt = {16 * self.rt} (got {N})"),
            (K % (self.nw * group), f"K a multiple of nw * group = {self.nw * group} (got {K})"),
            (self.s < 2, f"s >= 2 (got {self.s})"),
            (self.smem_bytes() > SMEM_LIMIT, f"a ring of <= {SMEM_LIMIT} bytes (got {self.smem_bytes()})"),
        ))  # fmt: skip

    def consts(self, K: int, group: int) -> dict:
        return dict(K=K, GROUP=group, RT=self.rt, NW=self.nw, S=self.s)


def int4_matmul_frag_cp(x: Tensor, w: FragInt4, tile: Int4FragCp | None = None) -> Tensor:
    """x (M <= 16, K) bf16 on a CUDA GPU (sm_80+) @ dequant(w).T -> (M, N) bf16."""
    tile = tile or Int4FragCp()
    (N, K), M = w.shape, x.shape[0]
    why = tile.why_not(M, N, K, w.group)
    if x.shape[1] != K:
        why.append(f"x of K = {K} columns (got {tuple(x.shape)})")
    if x.dtype != torch.bfloat16 or not x.is_cuda:
        why.append(f"bf16 x on a CUDA GPU (got {x.dtype} on {x.device}; Gluon has no CPU interpreter)")
    if why:
        raise ValueError(f"int4_matmul_frag_cp: {tile} needs " + "; ".join(why))
    if x.stride(1) != 1 or x.stride(0) % 8 or x.data_ptr() % 16:
        x = x.clone(memory_format=torch.contiguous_format)
    out = torch.empty(M, N, device=x.device, dtype=torch.bfloat16)
    if M == 0:
        return out
    xi = x.view(torch.int32)
    grid = (N // (16 * tile.rt),)
    args = (xi, w.words, w.scales2, w.zeros2, out, M, xi.stride(0), out.stride(0))
    _int4_frag_cp[grid](*args, num_warps=tile.nw, **tile.consts(K, w.group))
    return out
