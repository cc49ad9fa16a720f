"""A per-thread emulation of quant_frag._int4_frag in plain torch: which words, scales and x each lane of
each warp loads, the inline PTX unpack (lop3, sub.bf16x2, mul.bf16x2) bit for bit, the PTX ISA's
mma.sync m16n8k16 fragment layout, and the split-K sum over the warps. Gluon kernels do not run under
Triton's CPU interpreter, so this is how the repacked layout and the fragment bookkeeping are tested on
CPU; the kernel itself is tested against the same reference on the GPU."""

from __future__ import annotations

import torch
from pretrainctl_kernels.quant_frag import CHUNK, FragInt4
from torch import Tensor

LANE = torch.arange(32)
G_OF, T_OF = LANE // 4, LANE % 4  # the ISA's groupID and threadID_in_group of each lane


def _halves(v: Tensor) -> tuple[Tensor, Tensor]:
    """32-bit patterns (int64) -> their (low, high) bf16 halves as float32."""
    lo = (v & 0xFFFF).to(torch.int32).to(torch.int16).view(torch.bfloat16).float()
    hi = ((v >> 16) & 0xFFFF).to(torch.int32).to(torch.int16).view(torch.bfloat16).float()
    return lo, hi


def deq_word(word: Tensor, s2: Tensor, z2: Tensor) -> list[tuple[Tensor, Tensor]]:
    """The kernel's PTX on one word per lane, for j < 4: lop3.b32 t, w >> 4j, 0x000F000F, 0x43004300, 0xEA
    ((a & b) | c); sub.rn.bf16x2 t, t, z2; mul.rn.bf16x2 t, t, s2. -> the four (low, high) pairs."""
    w = word.long() & 0xFFFFFFFF
    s_lo, s_hi = _halves(s2.long())
    z_lo, z_hi = _halves(z2.long())
    out = []
    for j in range(4):
        lo, hi = _halves(((w >> (4 * j)) & 0x000F000F) | 0x43004300)  # 128 + q, exact
        lo = ((lo - z_lo).bfloat16().float() * s_lo).bfloat16().float()  # exact sub, one rounding in mul
        hi = ((hi - z_hi).bfloat16().float() * s_hi).bfloat16().float()
        out.append((lo, hi))
    return out


def mma_m16n8k16(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 from per-lane fragments (PTX ISA layout):
    a (32, 8) = a0..a7, b (32, 4) = b0..b3, c (32, 4) = c0..c3 -> d (32, 4)."""
    A, B, C = torch.zeros(16, 16), torch.zeros(16, 8), torch.zeros(16, 8)
    g, t = G_OF, T_OF
    for i in range(8):  # a_i: row g + 8 ((i // 2) % 2), column 2 t + i % 2 + 8 (i // 4)
        A[g + 8 * ((i // 2) % 2), 2 * t + i % 2 + 8 * (i // 4)] = a[:, i]
    for i in range(
        4
    ):  # b_i: row 2 t + i % 2 + 8 (i // 2), column g; c_i: row g + 8 (i // 2), column 2 t + i % 2
        B[2 * t + i % 2 + 8 * (i // 2), g] = b[:, i]
        C[g + 8 * (i // 2), 2 * t + i % 2] = c[:, i]
    D = A @ B + C
    return torch.stack([D[g + 8 * (i // 2), 2 * t + i % 2] for i in range(4)], dim=1)


def emulate(x: Tensor, w: FragInt4, rt: int = 2, nw: int = 8) -> Tensor:
    """x (M <= 16, K) bf16 -> (M, N) float32, as _int4_frag computes it before the bf16 store: program pid
    owns row tiles pid rt .. pid rt + rt - 1, warp wi the chunks [wi K/64/nw, (wi + 1) K/64/nw); per chunk
    kc a lane loads words[tile, kc, lane, 0..3], the scale / zero pairs [tile, kc 64 // group, g, a] and
    x[m, 64 kc + 16 t .. + 15] for m = g, g + 8 (the two n8 tiles of x^T)."""
    (N, K), M = w.shape, x.shape[0]
    assert K % (nw * CHUNK) == 0 and N % (16 * rt) == 0
    xp = torch.zeros(16, K)
    xp[:M] = x.float()
    per_warp = K // CHUNK // nw
    out_t = torch.zeros(N, 16)
    g, t = G_OF, T_OF
    for pid in range(N // (16 * rt)):
        part = torch.zeros(nw, rt, 2, 32, 4)  # [warp, row tile, n8 tile, lane, c0..c3]
        for wi in range(nw):
            for kc in range(wi * per_warp, (wi + 1) * per_warp):
                grp, k0 = kc * CHUNK // w.group, kc * CHUNK
                xr = [xp[(g + 8 * u)[:, None], (k0 + 16 * t)[:, None] + torch.arange(16)] for u in range(2)]
                for c in range(rt):
                    tile = pid * rt + c
                    words = w.words[tile, kc]  # (32 lanes, 4): r = a + 2 b
                    s2, z2 = w.scales2[tile, grp, g], w.zeros2[tile, grp, g]  # (32 lanes, a)
                    pairs = [deq_word(words[:, r], s2[:, r % 2], z2[:, r % 2]) for r in range(4)]
                    for s in range(4):  # k-step s: pair s of each word -> a0a1, a2a3, a4a5, a6a7
                        afrag = torch.stack([v for r in range(4) for v in pairs[r][s]], dim=1)
                        for u in range(2):  # b0..b3 = physical k 4 s .. 4 s + 3 of the lane's 16
                            part[wi, c, u] = mma_m16n8k16(afrag, xr[u][:, 4 * s : 4 * s + 4], part[wi, c, u])
        acc = part.sum(0)  # the split-K over the warps
        for c in range(rt):
            for u in range(2):
                for i in range(4):  # c_i: row (n) g + 8 (i // 2), column (m) 8 u + 2 t + i % 2
                    n = (pid * rt + c) * 16 + g + 8 * (i // 2)
                    out_t[n, 8 * u + 2 * t + i % 2] = acc[c, u, :, i]
    return out_t[:, :M].T.contiguous()


def logical_emulate(x: Tensor, w: FragInt4, rt: int = 2, nw: int = 8) -> Tensor:
    """_int4_frag transliterated op by op on logical tensors (gl.join = torch.stack(..., -1); gl.reshape /
    gl.permute as in torch), with inline_asm_elementwise's pack=2 read as Triton defines it: one asm
    instance takes two consecutive elements of each input in the thread's register order (here the last
    axis) and each 32-bit output register holds two consecutive output elements, the first in the low
    half. This checks the kernel's own index arithmetic and operand assembly, which the per-lane
    emulation above does not read. x (M <= 16, K) bf16 -> (M, N) float32."""
    (N, K), M = w.shape, x.shape[0]
    KC, KW = K // 64, K // nw
    NCH, CPG = KW // 64, w.group // 64
    xi = torch.zeros(16, K, dtype=torch.bfloat16)
    xi[:M] = x
    xi = xi.view(torch.int16).long() & 0xFFFF
    xi = xi[:, 0::2] | (xi[:, 1::2] << 16)  # X viewed as int32 bf16 pairs, (16, K / 2)
    wr, s2f, z2f = w.words.reshape(-1).long(), w.scales2.reshape(-1).long(), w.zeros2.reshape(-1).long()
    wi = torch.arange(nw)[:, None, None]
    li = torch.arange(rt * 32)[None, :, None]
    ri = torch.arange(4)[None, None, :]
    xm, xt, xq = (
        torch.arange(16)[:, None, None],
        torch.arange(4)[None, :, None],
        torch.arange(8)[None, None, :],
    )
    xp = xm * (K // 2) + wi[..., None] * (KW // 2) + xt * 8 + xq  # (nw, 16, 4, 8) int32 offsets of x

    def j(u: Tensor, v: Tensor) -> Tensor:  # gl.join
        return torch.stack((u, v), -1)

    out = torch.zeros(16, N)
    for pid in range(N // (16 * rt)):
        tile, lane = pid * rt + li // 32, li % 32
        wp = (tile * KC + wi * NCH) * 128 + lane * 4 + ri
        sofs = ((tile * (K // w.group) + wi * (KW // w.group)) * 8 + lane // 4) * 2 + ri % 2
        acc = torch.zeros(nw, rt * 16, 16)
        for c in range(NCH):
            words = wr[wp + c * 128]
            s2, z2 = s2f[sofs + (c // CPG) * 16], z2f[sofs + (c // CPG) * 16]
            xv = xi.reshape(-1)[xp + c * 32]
            # _deq, pack=2: instance b takes words r = 2 b (a = 0) and 2 b + 1 (a = 1); output j / 4 + j is
            # pair j of the first / second word, its halves the elements 2 b, 2 b + 1.
            o = []
            for a in range(2):
                word = words[..., a::2]  # (nw, 32 rt, 2 [b])
                pj = deq_word(word, s2[..., a::2], z2[..., a::2])
                o += [torch.stack(p, -1).reshape(nw, rt * 32, 4) for p in pj]  # element 2 b + e
            t = j(j(j(o[0], o[1]), j(o[2], o[3])), j(j(o[4], o[5]), j(o[6], o[7])))
            t = (
                t.reshape(nw, rt, 8, 4, 2, 2, 2, 2, 2)
                .permute(0, 1, 8, 2, 4, 3, 7, 6, 5)
                .reshape(nw, rt * 16, 64)
            )
            # _b_operand, pack=2: instance p takes x pairs q = 2 p, 2 p + 1; x0 = the first's halves, x1 the
            # second's, each as elements 2 p, 2 p + 1.
            lo, hi = _halves(xv)  # (nw, 16, 4, 8)
            x0 = torch.stack((lo[..., 0::2], hi[..., 0::2]), -1).reshape(nw, 16, 4, 8)
            x1 = torch.stack((lo[..., 1::2], hi[..., 1::2]), -1).reshape(nw, 16, 4, 8)
            b = j(x0, x1).reshape(nw, 16, 4, 4, 2, 2).permute(0, 5, 2, 3, 4, 1).reshape(nw, 64, 16)
            acc = acc + t @ b  # mma_v2 on the logical operands, float32
        out[:, pid * rt * 16 : (pid + 1) * rt * 16] = acc.sum(0).T  # gl.sum over the warps, stored transposed
    return out[:M]
