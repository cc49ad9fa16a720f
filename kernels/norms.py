"""Memory-bound fusions: RMSNorm (Zhang & Sennrich 2019, arXiv:1910.07467), rotary position
embedding (RoFormer, Su et al. 2021, arXiv:2104.09864) and the SwiGLU gate (Shazeer 2020,
arXiv:2002.05202), each forward and backward in one pass over memory, math in float32.

RoPE uses the half-split convention (the first D/2 features pair with the last D/2, as in GPT-NeoX
and Llama's HF port): out = [x1 cos - x2 sin, x2 cos + x1 sin] with cos, sin of shape (T, D/2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["rms_norm", "rms_norm_ref", "apply_rope", "apply_rope_ref", "swiglu", "swiglu_ref"]


# fmt: off
@triton.jit
def _rms_fwd(X, W, Y, RSTD, N, D, eps, BD: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BD)
    mask = cols < D
    x = tl.load(X + row * D + cols, mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, 0) / D + eps)
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + row * D + cols, (x * rstd * w).to(Y.dtype.element_ty), mask=mask)
    tl.store(RSTD + row, rstd)


@triton.jit
def _rms_bwd(X, W, G, RSTD, DX, DW_PART, N, D, ROWS: tl.constexpr, BD: tl.constexpr):
    """ROWS rows per program; the weight gradient is written as one partial row per program (no
    atomics) and summed by the launcher."""
    pid = tl.program_id(0)
    cols = tl.arange(0, BD)
    mask = cols < D
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    dw = tl.zeros([BD], dtype=tl.float32)
    for i in range(0, ROWS):
        row = (pid * ROWS + i).to(tl.int64)
        live = (cols * 0 + row) < N  # (BD,): the interpreter wants vector masks
        x = tl.load(X + row * D + cols, mask=mask & live, other=0.0).to(tl.float32)
        g = tl.load(G + row * D + cols, mask=mask & live, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + tl.minimum(row, N - 1))  # clamped: padding rows store nothing
        xh = x * rstd
        wg = w * g
        # d/dx of x * rstd * w: rstd * (w g - xh * mean(w g xh))
        dx = rstd * (wg - xh * tl.sum(wg * xh, 0) / D)
        tl.store(DX + row * D + cols, dx.to(DX.dtype.element_ty), mask=mask & live)
        dw += g * xh
    tl.store(DW_PART + pid * D + cols, dw, mask=mask)


@triton.jit
def _rope(X, COS, SIN, Y, T, H, half, s_xb, s_xt, s_xh, sign, BH: tl.constexpr, BD: tl.constexpr):
    """One program per (b, t): all heads at once. sign=-1 applies the inverse rotation (backward)."""
    pid = tl.program_id(0)
    b = pid // T
    t = pid % T
    hs = tl.arange(0, BH)
    ds = tl.arange(0, BD)
    mask = (hs[:, None] < H) & (ds[None, :] < half)
    base = b.to(tl.int64) * s_xb + t * s_xt + hs[:, None] * s_xh + ds[None, :]  # (BH, BD)
    x1 = tl.load(X + base, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(X + base + half, mask=mask, other=0.0).to(tl.float32)
    c = tl.load(COS + t * half + ds, mask=ds < half, other=0.0).to(tl.float32)[None, :]
    s = sign * tl.load(SIN + t * half + ds, mask=ds < half, other=0.0).to(tl.float32)[None, :]
    out = b.to(tl.int64) * T * H * 2 * half + t * H * 2 * half + hs[:, None] * 2 * half + ds[None, :]
    tl.store(Y + out, (x1 * c - x2 * s).to(Y.dtype.element_ty), mask=mask)
    tl.store(Y + out + half, (x2 * c + x1 * s).to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _swiglu(A, B, G, OUT, DA, DB, n, BACKWARD: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    a = tl.load(A + offs, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(B + offs, mask=mask, other=0.0).to(tl.float32)
    sa = tl.sigmoid(a)
    if BACKWARD:
        g = tl.load(G + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(DA + offs, (g * b * sa * (1.0 + a * (1.0 - sa))).to(DA.dtype.element_ty), mask=mask)
        tl.store(DB + offs, (g * a * sa).to(DB.dtype.element_ty), mask=mask)
    else:
        tl.store(OUT + offs, (a * sa * b).to(OUT.dtype.element_ty), mask=mask)
# fmt: on


# ------------------------------------------------------------------------------------------- RMSNorm


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, eps: float, rows: int) -> Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).contiguous()  # (N, D)
        N, D = x2.shape
        y = torch.empty_like(x2)
        rstd = torch.empty(N, device=x.device, dtype=torch.float32)
        bd = triton.next_power_of_2(D)
        _rms_fwd[(N,)](x2, weight, y, rstd, N, D, eps, BD=bd, num_warps=8 if bd >= 4096 else 4)
        ctx.save_for_backward(x2, weight, rstd)
        ctx.shape, ctx.rows = shape, rows
        return y.view(shape)

    @staticmethod
    def backward(ctx, g: Tensor):
        x2, weight, rstd = ctx.saved_tensors
        N, D = x2.shape
        g2 = g.reshape(N, D).contiguous()
        dx = torch.empty_like(x2)
        n_prog = triton.cdiv(N, ctx.rows)
        dw_part = torch.empty(n_prog, D, device=x2.device, dtype=torch.float32)
        bd = triton.next_power_of_2(D)
        _rms_bwd[(n_prog,)](x2, weight, g2, rstd, dx, dw_part, N, D, ROWS=ctx.rows, BD=bd,
                            num_warps=8 if bd >= 4096 else 4)  # fmt: skip
        return dx.view(ctx.shape), dw_part.sum(0).to(weight.dtype), None, None


def rms_norm(x: Tensor, weight: Tensor, eps: float = 1e-6, *, rows_per_program: int = 16) -> Tensor:
    """x (..., D) * rsqrt(mean(x**2) + eps) * weight (D,); same dtype as x."""
    if weight.shape != x.shape[-1:]:
        raise ValueError(f"rms_norm: weight {tuple(weight.shape)} must be ({x.shape[-1]},)")
    return _RMSNorm.apply(x, weight, eps, rows_per_program)


def rms_norm_ref(x: Tensor, weight: Tensor, eps: float = 1e-6) -> Tensor:
    xf = x.to(torch.promote_types(x.dtype, torch.float32))
    y = xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps) * weight.to(xf.dtype)
    return y.to(x.dtype)


# ---------------------------------------------------------------------------------------------- RoPE


def _rope_launch(x: Tensor, cos: Tensor, sin: Tensor, sign: float) -> Tensor:
    B, T, H, D = x.shape  # (B, T, H, D)
    if x.stride(-1) != 1:
        x = x.contiguous()
    y = torch.empty(B, T, H, D, device=x.device, dtype=x.dtype)
    half = D // 2
    cos, sin = cos.contiguous(), sin.contiguous()
    _rope[(B * T,)](x, cos, sin, y, T, H, half, x.stride(0), x.stride(1), x.stride(2), sign,
                    BH=triton.next_power_of_2(H), BD=triton.next_power_of_2(half))  # fmt: skip
    return y


class _Rope(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        ctx.save_for_backward(cos, sin)
        return _rope_launch(x, cos, sin, 1.0)

    @staticmethod
    def backward(ctx, g: Tensor):
        cos, sin = ctx.saved_tensors
        return _rope_launch(g, cos, sin, -1.0), None, None  # a rotation's adjoint is its inverse


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x (B, T, H, D), cos/sin (T, D/2) -> rotated x (B, T, H, D); differentiable in x."""
    if x.shape[-1] % 2 or cos.shape != (x.shape[1], x.shape[-1] // 2) or sin.shape != cos.shape:
        raise ValueError(f"apply_rope: x {tuple(x.shape)} needs even D and cos/sin (T, D/2), got "
                         f"{tuple(cos.shape)}, {tuple(sin.shape)}")  # fmt: skip
    return _Rope.apply(x, cos, sin)


def apply_rope_ref(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)  # (B, T, H, D/2) each
    c, s = cos[None, :, None, :].to(x.dtype), sin[None, :, None, :].to(x.dtype)
    return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)


# -------------------------------------------------------------------------------------------- SwiGLU


class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, block: int) -> Tensor:
        a, b = a.contiguous(), b.contiguous()
        out = torch.empty_like(a)
        n = a.numel()
        _swiglu[(triton.cdiv(n, block),)](a, b, a, out, out, out, n, BACKWARD=False, BLOCK=block)
        ctx.save_for_backward(a, b)
        ctx.block = block
        return out

    @staticmethod
    def backward(ctx, g: Tensor):
        a, b = ctx.saved_tensors
        g = g.contiguous()
        da, db = torch.empty_like(a), torch.empty_like(b)
        n = a.numel()
        _swiglu[(triton.cdiv(n, ctx.block),)](a, b, g, a, da, db, n, BACKWARD=True, BLOCK=ctx.block)
        return da, db, None


def swiglu(gate: Tensor, up: Tensor, *, block: int = 1024) -> Tensor:
    """silu(gate) * up, elementwise, same shape and dtype."""
    if gate.shape != up.shape:
        raise ValueError(f"swiglu: gate {tuple(gate.shape)} and up {tuple(up.shape)} differ")
    return _SwiGLU.apply(gate, up, block)


def swiglu_ref(gate: Tensor, up: Tensor) -> Tensor:
    return F.silu(gate) * up
