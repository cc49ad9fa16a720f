"""Mixture-of-experts dispatch: permute by expert, grouped SwiGLU GEMM, grouped down GEMM, combine.

Tokens routed to k experts each (N*k assignments) are sorted by expert (:func:`moe_permute`); every
expert's rows then form one contiguous segment, and one Triton launch multiplies every segment by
its own expert's weights (a grouped GEMM, as in MegaBlocks, Gale et al. 2022, arXiv:2211.15841). The
launch grid is a flat list of row tiles built on the device from per-expert counts (no host sync, no
per-expert Python loop); an expert with zero tokens owns zero tiles. The token gather is fused into
the first GEMM's A loads, SwiGLU (Shazeer 2020, arXiv:2002.05202) into its epilogue, and the down
GEMM stores each row straight to its (token, slot) position, so no permutation is ever materialized.

The backward pass is four launches: the down GEMM's input gradient with the SwiGLU backward in its
epilogue (it reads the saved pre-activations and writes the gate and up gradients), one input-gradient
GEMM that sums both branches and stores in (token, slot) order, one weight-gradient launch for the
gate and up weights sharing the gathered x tiles, and the down weight gradient. Weight gradients
reduce over each expert's segment in a kernel of their own, so nothing needs atomics.

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

__all__ = ["MoEBlocks", "moe_permute", "grouped_matmul", "moe_ffn", "moe_ffn_ref"]

PLAIN, SWIGLU, DUAL, SWIGLU_BWD = 0, 1, 2, 3  # _grouped_rows modes


class MoEBlocks:
    """Tile sizes (rows, cols, reduction) and launch settings for both grouped kernels; ``None`` fields
    take ``DEFAULT`` (picked by the sweep in tune.py on an H200). Tests pass large tiles."""

    DEFAULT = (128, 128, 64, 8, 3)  # (bm, bn, bk, num_warps, num_stages); bench/results/h200_kernels_run5.txt
    SMEM = 200 * 1024  # pipeline buffers must fit the multiprocessor's shared memory (227 KiB on sm_90)

    def stages(self, tile_bytes: int) -> int:
        """num_stages, lowered until the stages' operand tiles fit SMEM (float32 inputs, dual operands)."""
        return max(1, min(self.num_stages, self.SMEM // max(tile_bytes, 1)))

    def __init__(self, bm: int | None = None, bn: int | None = None, bk: int | None = None,
                 num_warps: int | None = None, num_stages: int | None = None) -> None:  # fmt: skip
        given = (bm, bn, bk, num_warps, num_stages)
        self.bm, self.bn, self.bk, self.num_warps, self.num_stages = (
            g or d for g, d in zip(given, self.DEFAULT, strict=True)
        )


# fmt: off
@triton.jit
def _grouped_rows(A, GATHER, A2, B1, B2, C, C2, PRE_G, PRE_U, SCATTER, TILE_E, TILE_ROW, OFFS, K, N, E,
                  s_am, s_ak, s_be, s_bk, s_bn, s_cm, s_cn,
                  MODE: tl.constexpr, HAS_GATHER: tl.constexpr, HAS_SCATTER: tl.constexpr,
                  SAVE_PRE: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """For the rows r of expert e's segment, one (BM, BN) tile per program, a = A[gather(r)]:
    PLAIN       C[r] = a @ B1[e]
    SWIGLU      C[r] = silu(a @ B1[e]) * (a @ B2[e]), pre-activations optionally saved to PRE_G/PRE_U
    DUAL        C[r] = a @ B1[e] + A2[r] @ B2[e]
    SWIGLU_BWD  d = a @ B1[e], with g, u read from PRE_G/PRE_U: C[r] = dL/dg, C2[r] = dL/du
    With a scatter, PLAIN and DUAL store row r at SCATTER[r] instead."""
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
    a2_ptr = A2 + rows.to(tl.int64)[:, None] * s_am + ks[None, :] * s_ak
    b_off = e.to(tl.int64) * s_be + ks[:, None] * s_bk + cols[None, :] * s_bn  # (BK, BN)
    acc1 = tl.zeros([BM, BN], dtype=tl.float32)
    acc2 = tl.zeros([BM, BN], dtype=tl.float32)
    for k0 in range(0, K, BK):
        kmask = k0 + ks < K
        amask = rmask[:, None] & kmask[None, :]
        a = tl.load(a_ptr + k0 * s_ak, mask=amask, other=0.0)
        bmask = kmask[:, None] & cmask[None, :]
        acc1 += tl.dot(a, tl.load(B1 + b_off + k0 * s_bk, mask=bmask, other=0.0))
        if MODE == 1:
            acc2 += tl.dot(a, tl.load(B2 + b_off + k0 * s_bk, mask=bmask, other=0.0))
        if MODE == 2:
            a2 = tl.load(a2_ptr + k0 * s_ak, mask=amask, other=0.0)
            acc1 += tl.dot(a2, tl.load(B2 + b_off + k0 * s_bk, mask=bmask, other=0.0))
    out_mask = rmask[:, None] & cmask[None, :]
    p_off = rows.to(tl.int64)[:, None] * s_cm + cols[None, :] * s_cn  # sorted-row position
    if HAS_SCATTER:
        dst = tl.load(SCATTER + rows, mask=rmask, other=0).to(tl.int64)
        c_off = dst[:, None] * s_cm + cols[None, :] * s_cn
    else:
        c_off = p_off
    if MODE == 1:
        if SAVE_PRE:
            tl.store(PRE_G + p_off, acc1.to(PRE_G.dtype.element_ty), mask=out_mask)
            tl.store(PRE_U + p_off, acc2.to(PRE_U.dtype.element_ty), mask=out_mask)
        acc1 = acc1 * tl.sigmoid(acc1) * acc2
    if MODE == 3:
        g = tl.load(PRE_G + p_off, mask=out_mask, other=0.0).to(tl.float32)
        u = tl.load(PRE_U + p_off, mask=out_mask, other=0.0).to(tl.float32)
        sg = tl.sigmoid(g)
        tl.store(C2 + p_off, (acc1 * g * sg).to(C2.dtype.element_ty), mask=out_mask)  # d/du = d * silu(g)
        acc1 = acc1 * u * sg * (1 + g * (1 - sg))  # d/dg = d * u * silu'(g)
    tl.store(C + c_off, acc1.to(C.dtype.element_ty), mask=out_mask)


@triton.jit
def _grouped_wgrad(A, GATHER_A, G, G2, GATHER_G, C, C2, OFFS, KA, N, s_am, s_ak, s_gm, s_gn, s_ce, s_ck, s_cn,
                   HAS_GATHER_A: tl.constexpr, HAS_GATHER_G: tl.constexpr, DUAL: tl.constexpr,
                   BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """C[e] (KA, N) = A[gather_a(seg_e)]^T @ G[gather_g(seg_e)]: the weight gradient, reduced over each
    segment; DUAL also C2[e] = (same A)^T @ G2[seg_e], so both share every A tile load."""
    e = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_n = tl.program_id(2)
    start = tl.load(OFFS + e)
    end = tl.load(OFFS + e + 1)
    am = pid_m * BM + tl.arange(0, BM)  # rows of C = columns of A
    gn = pid_n * BN + tl.arange(0, BN)
    ks = tl.arange(0, BK)
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    acc2 = tl.zeros([BM, BN], dtype=tl.float32)
    for r0 in range(start, end, BK):
        rows = r0 + ks
        rmask = rows < end
        src = rows
        if HAS_GATHER_A:
            src = tl.load(GATHER_A + rows, mask=rmask, other=0)
        gsrc = rows
        if HAS_GATHER_G:
            gsrc = tl.load(GATHER_G + rows, mask=rmask, other=0)
        a = tl.load(A + src.to(tl.int64)[:, None] * s_am + am[None, :] * s_ak,
                    mask=rmask[:, None] & (am[None, :] < KA), other=0.0)  # (BK, BM)
        g_off = gsrc.to(tl.int64)[:, None] * s_gm + gn[None, :] * s_gn
        gmask = rmask[:, None] & (gn[None, :] < N)
        a_t = tl.trans(a)
        acc += tl.dot(a_t, tl.load(G + g_off, mask=gmask, other=0.0))  # (BK, BN)
        if DUAL:
            acc2 += tl.dot(a_t, tl.load(G2 + g_off, mask=gmask, other=0.0))
    c_off = e.to(tl.int64) * s_ce + am[:, None] * s_ck + gn[None, :] * s_cn
    c_mask = (am[:, None] < KA) & (gn[None, :] < N)
    tl.store(C + c_off, acc.to(C.dtype.element_ty), mask=c_mask)
    if DUAL:
        tl.store(C2 + c_off, acc2.to(C2.dtype.element_ty), mask=c_mask)
# fmt: on


def moe_permute(expert_idx: Tensor, num_experts: int) -> tuple[Tensor, Tensor]:
    """Sort the N*k assignments by expert.

    Returns ``order`` (N*k,) int64 -- sorted position -> flat assignment index (token * k + slot);
    ``order // k`` is the token -- and ``offsets`` (E+1,) int32 with expert e's rows in
    [offsets[e], offsets[e+1])."""
    flat = expert_idx.reshape(-1).to(torch.int32)  # (N*k,)
    sorted_ids, order = torch.sort(flat, stable=True)
    # Segment starts by binary search in the sorted ids: no bincount, whose CUDA version syncs with the
    # host to size its output.
    bounds = torch.arange(num_experts + 1, device=flat.device, dtype=torch.int32)
    offsets = torch.searchsorted(sorted_ids, bounds, out_int32=True)
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


class _Plan:
    """What every launch of one MoE call shares: segment offsets, the tile list, the tiles' shape."""

    def __init__(self, offsets: Tensor, M: int, blocks: MoEBlocks) -> None:
        self.offsets, self.M, self.blocks = offsets, M, blocks
        self.tile_e, self.tile_row = _tiles(offsets, M, blocks.bm)


def _rows(plan: _Plan, mode: int, a: Tensor, b1: Tensor, *, gather: Tensor | None = None,
          a2: Tensor | None = None, b2: Tensor | None = None, pre: tuple[Tensor, Tensor] | None = None,
          save_pre: bool = False, scatter: Tensor | None = None) -> tuple[Tensor, ...]:  # fmt: skip
    """One _grouped_rows launch; returns (out,), (out, g, u) with save_pre, or (d_g, d_u) for SWIGLU_BWD.
    b1 and b2 are (E, K, N) with any strides, the same for both; a2 and the outputs share a's layout."""
    E, K, N = b1.shape
    bl = plan.blocks
    out = torch.empty(plan.M, N, device=a.device, dtype=a.dtype)
    c2 = torch.empty_like(out) if mode == SWIGLU_BWD else out
    pre_g, pre_u = pre if pre is not None else (out, out)
    if save_pre:
        pre_g, pre_u = torch.empty_like(out), torch.empty_like(out)
    grid = (plan.tile_e.numel(), triton.cdiv(N, bl.bn))
    n_a, n_b = (2 if mode == DUAL else 1), (2 if mode in (SWIGLU, DUAL) else 1)
    stages = bl.stages((n_a * bl.bm * bl.bk * a.element_size()) + n_b * bl.bk * bl.bn * b1.element_size())
    te = plan.tile_e  # stands in for absent index pointers (never read)
    _grouped_rows[grid](a, gather if gather is not None else te, a2 if a2 is not None else a, b1,
                        b2 if b2 is not None else b1, out, c2, pre_g, pre_u,
                        scatter if scatter is not None else te, te, plan.tile_row, plan.offsets, K, N, E,
                        *a.stride(), *b1.stride(), *out.stride(), MODE=mode, HAS_GATHER=gather is not None,
                        HAS_SCATTER=scatter is not None, SAVE_PRE=save_pre, BM=bl.bm, BN=bl.bn, BK=bl.bk,
                        num_warps=bl.num_warps, num_stages=stages)  # fmt: skip
    if mode == SWIGLU_BWD:
        return out, c2
    return (out, pre_g, pre_u) if save_pre else (out,)


def _wgrad(plan: _Plan, a: Tensor, g: Tensor, *, gather_a: Tensor | None = None, g2: Tensor | None = None,
           gather_g: Tensor | None = None) -> tuple[Tensor, ...]:  # fmt: skip
    """(E, KA, N) weight gradient(s) A[gather_a]^T @ G[gather_g] per segment; two when g2 is given."""
    E = plan.offsets.numel() - 1
    KA, N = a.shape[1], g.shape[1]
    bl = plan.blocks
    out = torch.empty(E, KA, N, device=a.device, dtype=a.dtype)
    out2 = torch.empty_like(out) if g2 is not None else out
    grid = (E, triton.cdiv(KA, bl.bm), triton.cdiv(N, bl.bn))
    n_g = 2 if g2 is not None else 1
    stages = bl.stages(bl.bk * (bl.bm * a.element_size() + n_g * bl.bn * g.element_size()))
    dummy = plan.offsets  # stands in for absent index pointers (never read)
    _grouped_wgrad[grid](a, gather_a if gather_a is not None else dummy, g, g2 if g2 is not None else g,
                         gather_g if gather_g is not None else dummy, out, out2, plan.offsets, KA, N,
                         *a.stride(), *g.stride(), *out.stride(), HAS_GATHER_A=gather_a is not None,
                         HAS_GATHER_G=gather_g is not None, DUAL=g2 is not None, BM=bl.bm, BN=bl.bn, BK=bl.bk,
                         num_warps=bl.num_warps, num_stages=stages)  # fmt: skip
    return (out, out2) if g2 is not None else (out,)


class _Experts(torch.autograd.Function):
    """x (N, D) -> y (N*k, D): row token*k + slot holds that assignment's expert output, unweighted."""

    @staticmethod
    def forward(ctx, x: Tensor, gather: Tensor, scatter: Tensor, plan: _Plan, w_gate: Tensor, w_up: Tensor,
                w_down: Tensor) -> Tensor:  # fmt: skip
        train = torch.is_grad_enabled() or any(ctx.needs_input_grad)
        h, *pre = _rows(plan, SWIGLU, x, w_gate, gather=gather, b2=w_up, save_pre=train)  # (M, H) sorted
        (y,) = _rows(plan, PLAIN, h, w_down, scatter=scatter)  # (M, D) in (token, slot) order
        if train:
            ctx.save_for_backward(x, gather, scatter, w_gate, w_up, w_down, h, *pre)
            ctx.plan = plan
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):
        x, gather, scatter, w_gate, w_up, w_down, h, g, u = ctx.saved_tensors
        plan = ctx.plan
        # (M, D) in (token, slot) order, row scatter[r] belonging to sorted row r; in the forward's dtype
        # (under autocast the incoming gradient can be float32).
        dy = dy.to(h.dtype).contiguous()
        d_g, d_u = _rows(plan, SWIGLU_BWD, dy, w_down.transpose(1, 2), gather=scatter, pre=(g, u))  # (M, H)
        wg_t, wu_t = w_gate.transpose(1, 2), w_up.transpose(1, 2)  # (E, H, D) views
        (dxs,) = _rows(plan, DUAL, d_g, wg_t, a2=d_u, b2=wu_t, scatter=scatter)  # (M, D), (token, slot) order
        dx = dxs.view(x.shape[0], -1, x.shape[1]).sum(1)  # (N, D): each token's k rows
        dwg, dwu = _wgrad(plan, x, d_g, gather_a=gather, g2=d_u)  # (E, D, H) each
        (dwd,) = _wgrad(plan, h, dy, gather_g=scatter)  # (E, H, D)
        return dx, None, None, None, dwg, dwu, dwd


class _GroupedMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor, plan: _Plan, w: Tensor) -> Tensor:
        ctx.save_for_backward(a, w)
        ctx.plan = plan
        return _rows(plan, PLAIN, a, w)[0]  # (M, N)

    @staticmethod
    def backward(ctx, dy: Tensor):
        a, w = ctx.saved_tensors
        dy = dy.contiguous()
        return _rows(ctx.plan, PLAIN, dy, w.transpose(1, 2))[0], None, _wgrad(ctx.plan, a, dy)[0]


def grouped_matmul(a: Tensor, offsets: Tensor, w: Tensor, blocks: MoEBlocks | None = None) -> Tensor:
    """a (M, K) sorted by expert, w (E, K, N): row r of expert e -> a[r] @ w[e]; returns (M, N)."""
    return _GroupedMatmul.apply(a, _Plan(offsets, a.shape[0], blocks or MoEBlocks()), w)


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
    gather = (order // k).to(torch.int32)  # sorted row -> token
    scatter = order.to(torch.int32)  # sorted row -> (token, slot) row of the output
    plan = _Plan(offsets, order.numel(), blocks)
    y = _Experts.apply(x, gather, scatter, plan, w_gate, w_up, w_down).view(N, k, -1)  # (N, k, D)
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
