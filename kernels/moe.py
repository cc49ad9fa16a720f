"""Mixture-of-experts dispatch: permute by expert, grouped SwiGLU GEMM, grouped down GEMM, combine.

Tokens routed to k experts each (N*k assignments) are sorted by expert (:func:`moe_permute`); every
expert's rows then form one contiguous segment, and one Triton launch multiplies every segment by
its own expert's weights (a grouped GEMM, as in MegaBlocks, Gale et al. 2022, arXiv:2211.15841). The
launch grid is a flat list of row tiles built on the device from per-expert counts (no host sync, no
per-expert Python loop); an expert with zero tokens owns zero tiles. The token gather is fused into
the first GEMM's A loads, SwiGLU (Shazeer 2020, arXiv:2002.05202) into its epilogue. Weight gradients
use a second kernel that reduces over each expert's segment. The weighted combine back to token
order is a gather over the inverse permutation, so nothing needs atomics.

Weight layout (documented contract, shared with the torch path):
    w_gate (E, D, H), w_up (E, D, H)   -- h = silu(x @ w_gate[e]) * (x @ w_up[e])
    w_down (E, H, D)                   -- y = h @ w_down[e]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["MoEBlocks", "moe_permute", "grouped_swiglu", "grouped_matmul", "moe_ffn", "moe_ffn_ref"]


class MoEBlocks:
    """Tile sizes (rows, cols, reduction) and launch settings for both grouped kernels; ``None`` fields
    take ``DEFAULT`` (picked by the sweep in tune.py on an H200). Tests pass large tiles."""

    DEFAULT = (128, 128, 32, 8, 4)  # (bm, bn, bk, num_warps, num_stages)

    def __init__(self, bm: int | None = None, bn: int | None = None, bk: int | None = None,
                 num_warps: int | None = None, num_stages: int | None = None) -> None:  # fmt: skip
        given = (bm, bn, bk, num_warps, num_stages)
        self.bm, self.bn, self.bk, self.num_warps, self.num_stages = (
            g or d for g, d in zip(given, self.DEFAULT, strict=True)
        )


# fmt: off
@triton.jit
def _grouped_rows(A, GATHER, B1, B2, C, PRE_G, PRE_U, TILE_E, TILE_ROW, OFFS, K, N, E,
                  s_am, s_ak, s_be, s_bk, s_bn, s_cm, s_cn,
                  HAS_GATHER: tl.constexpr, SWIGLU: tl.constexpr, SAVE_PRE: tl.constexpr,
                  BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """C[r] = A[gather(r)] @ B1[e] for the rows r of expert e's segment, one (BM, BN) tile each.
    With SWIGLU: C[r] = silu(A @ B1[e]) * (A @ B2[e]), pre-activations optionally saved."""
    tile = tl.program_id(0)
    pid_n = tl.program_id(1)
    e = tl.load(TILE_E + tile)
    valid = e < E
    e = tl.minimum(e, E - 1)
    row0 = tl.load(TILE_ROW + tile)
    row_end = tl.where(valid, tl.load(OFFS + e + 1), row0)  # past the real tiles: all rows masked
    rows = row0 + tl.arange(0, BM)
    rmask = rows < row_end
    src = rows
    if HAS_GATHER:
        src = tl.load(GATHER + rows, mask=rmask, other=0)
    src = src.to(tl.int64)
    cols = pid_n * BN + tl.arange(0, BN)
    cmask = cols < N
    ks = tl.arange(0, BK)
    a_ptr = A + src[:, None] * s_am + ks[None, :] * s_ak  # (BM, BK)
    b_off = e.to(tl.int64) * s_be + ks[:, None] * s_bk + cols[None, :] * s_bn  # (BK, BN)
    acc1 = tl.zeros([BM, BN], dtype=tl.float32)
    acc2 = tl.zeros([BM, BN], dtype=tl.float32)
    for k0 in range(0, K, BK):
        kmask = k0 + ks < K
        a = tl.load(a_ptr + k0 * s_ak, mask=rmask[:, None] & kmask[None, :], other=0.0)
        bmask = kmask[:, None] & cmask[None, :]
        acc1 += tl.dot(a, tl.load(B1 + b_off + k0 * s_bk, mask=bmask, other=0.0))
        if SWIGLU:
            acc2 += tl.dot(a, tl.load(B2 + b_off + k0 * s_bk, mask=bmask, other=0.0))
    out_mask = rmask[:, None] & cmask[None, :]
    c_off = rows.to(tl.int64)[:, None] * s_cm + cols[None, :] * s_cn
    if SWIGLU:
        if SAVE_PRE:
            tl.store(PRE_G + c_off, acc1.to(PRE_G.dtype.element_ty), mask=out_mask)
            tl.store(PRE_U + c_off, acc2.to(PRE_U.dtype.element_ty), mask=out_mask)
        acc1 = acc1 * tl.sigmoid(acc1) * acc2
    tl.store(C + c_off, acc1.to(C.dtype.element_ty), mask=out_mask)


@triton.jit
def _grouped_wgrad(A, GATHER, G, C, OFFS, KA, N, s_am, s_ak, s_gm, s_gn, s_ce, s_ck, s_cn,
                   HAS_GATHER: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """C[e] (KA, N) = A[gather(seg_e)]^T @ G[seg_e]: the weight gradient, reduced over each segment."""
    e = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_n = tl.program_id(2)
    start = tl.load(OFFS + e)
    end = tl.load(OFFS + e + 1)
    am = pid_m * BM + tl.arange(0, BM)  # rows of C = columns of A
    gn = pid_n * BN + tl.arange(0, BN)
    ks = tl.arange(0, BK)
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    for r0 in range(start, end, BK):
        rows = r0 + ks
        rmask = rows < end
        src = rows
        if HAS_GATHER:
            src = tl.load(GATHER + rows, mask=rmask, other=0)
        src = src.to(tl.int64)
        a = tl.load(A + src[:, None] * s_am + am[None, :] * s_ak, mask=rmask[:, None] & (am[None, :] < KA),
                    other=0.0)  # (BK, BM)
        g = tl.load(G + rows.to(tl.int64)[:, None] * s_gm + gn[None, :] * s_gn,
                    mask=rmask[:, None] & (gn[None, :] < N), other=0.0)  # (BK, BN)
        acc += tl.dot(tl.trans(a), g)
    tl.store(C + e.to(tl.int64) * s_ce + am[:, None] * s_ck + gn[None, :] * s_cn, acc.to(C.dtype.element_ty),
             mask=(am[:, None] < KA) & (gn[None, :] < N))
# fmt: on


def moe_permute(expert_idx: Tensor, num_experts: int) -> tuple[Tensor, Tensor]:
    """Sort the N*k assignments by expert.

    Returns ``order`` (N*k,) int64 -- sorted position -> flat assignment index (token * k + slot);
    ``order // k`` is the token -- and ``offsets`` (E+1,) int32 with expert e's rows in
    [offsets[e], offsets[e+1])."""
    flat = expert_idx.reshape(-1)  # (N*k,)
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=num_experts)
    offsets = torch.zeros(num_experts + 1, dtype=torch.int32, device=flat.device)
    offsets[1:] = counts.cumsum(0)
    return order, offsets


def _tiles(offsets: Tensor, M: int, bm: int) -> tuple[Tensor, Tensor]:
    """Flat tile list over all expert segments, computed on the device; the length is the upper bound
    cdiv(M, bm) + E so no host sync is needed, and surplus tiles carry the sentinel expert E."""
    E = offsets.numel() - 1
    counts = (offsets[1:] - offsets[:-1]).long()
    tiles = (counts + bm - 1) // bm  # (E,)
    tile_end = tiles.cumsum(0)
    t = torch.arange(triton.cdiv(M, bm) + E, device=offsets.device)
    te = torch.searchsorted(tile_end, t, right=True)  # (n_tiles,) in [0, E]
    ec = te.clamp(max=E - 1)
    row0 = offsets[:-1].long()[ec] + (t - (tile_end - tiles)[ec]) * bm
    return te.to(torch.int32), row0.to(torch.int32)


Rows = tuple[Tensor, Tensor | None, Tensor | None]


def _rows_launch(a: Tensor, gather: Tensor | None, b1: Tensor, b2: Tensor | None, offsets: Tensor, M: int,
                 blocks: MoEBlocks, save_pre: bool = False) -> Rows:  # fmt: skip
    E, K, N = b1.shape  # (E, K, N), any strides
    out = torch.empty(M, N, device=a.device, dtype=a.dtype)
    pre_g = torch.empty_like(out) if save_pre else out
    pre_u = torch.empty_like(out) if save_pre else out
    te, row0 = _tiles(offsets, M, blocks.bm)
    grid = (te.numel(), triton.cdiv(N, blocks.bn))
    _grouped_rows[grid](a, gather if gather is not None else te, b1, b2 if b2 is not None else b1, out, pre_g,
                        pre_u, te, row0, offsets, K, N, E, *a.stride(), *b1.stride(), *out.stride(),
                        HAS_GATHER=gather is not None, SWIGLU=b2 is not None, SAVE_PRE=save_pre,
                        BM=blocks.bm, BN=blocks.bn, BK=blocks.bk, num_warps=blocks.num_warps,
                        num_stages=blocks.num_stages)  # fmt: skip
    return out, (pre_g if save_pre else None), (pre_u if save_pre else None)


def _wgrad_launch(a: Tensor, gather: Tensor | None, g: Tensor, offsets: Tensor, blocks: MoEBlocks) -> Tensor:
    E = offsets.numel() - 1
    KA, N = a.shape[1], g.shape[1]
    out = torch.empty(E, KA, N, device=a.device, dtype=a.dtype)  # (E, KA, N)
    grid = (E, triton.cdiv(KA, blocks.bm), triton.cdiv(N, blocks.bn))
    _grouped_wgrad[grid](a, gather if gather is not None else offsets, g, out, offsets, KA, N, *a.stride(),
                         *g.stride(), *out.stride(), HAS_GATHER=gather is not None, BM=blocks.bm,
                         BN=blocks.bn, BK=blocks.bk, num_warps=blocks.num_warps,
                         num_stages=blocks.num_stages)  # fmt: skip
    return out


def _swiglu_grad(d_act: Tensor, g: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    gf, uf, df = g.float(), u.float(), d_act.float()
    sg = torch.sigmoid(gf)
    d_g = df * uf * sg * (1 + gf * (1 - sg))
    d_u = df * gf * sg
    return d_g.to(g.dtype), d_u.to(u.dtype)


class _GroupedSwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, gather: Tensor, offsets: Tensor, inv: Tensor, w_gate: Tensor, w_up: Tensor,
                blocks: MoEBlocks) -> Tensor:  # fmt: skip
        M = gather.numel()
        act, g, u = _rows_launch(x, gather, w_gate, w_up, offsets, M, blocks, save_pre=True)  # (M, H)
        ctx.save_for_backward(x, gather, offsets, inv, w_gate, w_up, g, u)
        ctx.blocks = blocks
        return act

    @staticmethod
    def backward(ctx, d_act: Tensor):
        x, gather, offsets, inv, w_gate, w_up, g, u = ctx.saved_tensors
        blocks = ctx.blocks
        d_g, d_u = _swiglu_grad(d_act.contiguous(), g, u)  # (M, H)
        M = d_g.shape[0]
        # dX for sorted rows = dG @ Wg[e]^T + dU @ Wu[e]^T; the transposes are stride swaps.
        dxs = _rows_launch(d_g, None, w_gate.transpose(1, 2), None, offsets, M, blocks)[0]
        dxs += _rows_launch(d_u, None, w_up.transpose(1, 2), None, offsets, M, blocks)[0]
        k = M // x.shape[0]
        dx = dxs[inv].view(x.shape[0], k, -1).sum(1)  # back to token order, (N, D)
        dwg = _wgrad_launch(x, gather, d_g, offsets, blocks)  # (E, D, H)
        dwu = _wgrad_launch(x, gather, d_u, offsets, blocks)
        return dx, None, None, None, dwg, dwu, None


class _GroupedMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor, offsets: Tensor, w: Tensor, blocks: MoEBlocks) -> Tensor:
        ctx.save_for_backward(a, offsets, w)
        ctx.blocks = blocks
        return _rows_launch(a, None, w, None, offsets, a.shape[0], blocks)[0]  # (M, N)

    @staticmethod
    def backward(ctx, dy: Tensor):
        a, offsets, w = ctx.saved_tensors
        dy = dy.contiguous()
        da = _rows_launch(dy, None, w.transpose(1, 2), None, offsets, a.shape[0], ctx.blocks)[0]
        dw = _wgrad_launch(a, None, dy, offsets, ctx.blocks)
        return da, None, dw, None


def grouped_swiglu(x: Tensor, gather: Tensor, offsets: Tensor, inv: Tensor, w_gate: Tensor, w_up: Tensor,
                   blocks: MoEBlocks | None = None) -> Tensor:  # fmt: skip
    """Sorted rows r: silu(x[gather[r]] @ w_gate[e]) * (x[gather[r]] @ w_up[e]) -> (N*k, H).
    ``inv`` (N*k,) maps flat assignment index -> sorted row (used to scatter dx back)."""
    return _GroupedSwiGLU.apply(x, gather, offsets, inv, w_gate, w_up, blocks or MoEBlocks())


def grouped_matmul(a: Tensor, offsets: Tensor, w: Tensor, blocks: MoEBlocks | None = None) -> Tensor:
    """a (M, K) sorted by expert, w (E, K, N): row r of expert e -> a[r] @ w[e]; returns (M, N)."""
    return _GroupedMatmul.apply(a, offsets, w, blocks or MoEBlocks())


def _check(x: Tensor, expert_idx: Tensor, expert_weight: Tensor, w_gate: Tensor, w_up: Tensor,
           w_down: Tensor) -> None:  # fmt: skip
    E, D, H = w_gate.shape
    if x.shape[1] != D or w_up.shape != (E, D, H) or w_down.shape != (E, H, D):
        shapes = [tuple(t.shape) for t in (x, w_gate, w_up, w_down)]
        raise ValueError(f"moe_ffn: x, w_gate, w_up, w_down have shapes {shapes}; expected (N, D), "
                         "(E, D, H), (E, D, H), (E, H, D)")  # fmt: skip
    if expert_idx.shape != expert_weight.shape or expert_idx.shape[0] != x.shape[0]:
        raise ValueError(f"moe_ffn: expert_idx {tuple(expert_idx.shape)} and expert_weight "
                         f"{tuple(expert_weight.shape)} must both be (N, k)")  # fmt: skip


def moe_ffn(x: Tensor, expert_idx: Tensor, expert_weight: Tensor, w_gate: Tensor, w_up: Tensor,
            w_down: Tensor, blocks: MoEBlocks | None = None) -> Tensor:  # fmt: skip
    """Routed SwiGLU experts: out[t] = sum_j expert_weight[t, j] * FFN_{expert_idx[t, j]}(x[t]).

    x (N, D), expert_idx (N, k) int, expert_weight (N, k), w_gate/w_up (E, D, H), w_down (E, H, D).
    Differentiable in x, expert_weight and the three weights."""
    _check(x, expert_idx, expert_weight, w_gate, w_up, w_down)
    blocks = blocks or MoEBlocks()
    N, k = expert_idx.shape
    order, offsets = moe_permute(expert_idx, w_gate.shape[0])
    inv = torch.empty_like(order)
    inv[order] = torch.arange(order.numel(), device=order.device)  # flat assignment -> sorted row
    gather = (order // k).to(torch.int32)  # sorted row -> token
    h = grouped_swiglu(x, gather, offsets, inv, w_gate, w_up, blocks)  # (N*k, H), sorted
    y = grouped_matmul(h, offsets, w_down, blocks)  # (N*k, D), sorted
    y = y[inv].view(N, k, -1)  # (N, k, D), token order
    return (y * expert_weight.to(y.dtype).unsqueeze(-1)).sum(1)  # (N, D)


def moe_ffn_ref(x: Tensor, expert_idx: Tensor, expert_weight: Tensor, w_gate: Tensor, w_up: Tensor,
                w_down: Tensor) -> Tensor:  # fmt: skip
    """Plain-torch twin: one masked matmul chain per expert (the per-expert loop)."""
    _check(x, expert_idx, expert_weight, w_gate, w_up, w_down)
    out = torch.zeros_like(x)
    for e in range(w_gate.shape[0]):
        tok, slot = (expert_idx == e).nonzero(as_tuple=True)
        if tok.numel() == 0:
            continue
        xe = x[tok]  # (n_e, D)
        h = F.silu(xe @ w_gate[e]) * (xe @ w_up[e])  # (n_e, H)
        out = out.index_add(0, tok, (h @ w_down[e]) * expert_weight[tok, slot, None].to(x.dtype))
    return out
