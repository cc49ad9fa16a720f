"""fp8 (e4m3) row-wise scaled matmul: y = (xq @ wq^T) * x_scale[:, None] * w_scale[None, :].

Row-wise ("per-token activation, per-channel weight") scaling as used for fp8 training and inference
(Micikevicius et al. 2022, "FP8 Formats for Deep Learning", arXiv:2209.05433; DeepSeek-V3's fine-grained
fp8 GEMMs, arXiv:2412.19437, use finer tiles of the same idea). Each row of x and each output channel of
W gets one float32 scale = amax / 448 (448 is e4m3's largest finite value), so every row uses the
format's full range. Because a scale is constant along K it factors out of the dot product: the kernel
multiplies e4m3 tiles on the fp8 tensor cores with float32 accumulation and applies both scales once,
in the epilogue. fp8 tensor cores exist from sm_89 (Ada) and sm_90 (Hopper) on; see
:func:`pretrainctl_kernels.fp8_available`. Triton's CPU interpreter evaluates fp8 dots exactly, so
the kernel is tested there too.

Weights use nn.Linear's (N, K) = (out, in) layout; a (K, N) weight is passed as its transposed view
(any strides work) after :func:`quantize_fp8` with ``dim=0`` (one scale per column).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from pretrainctl_kernels.probe import fp8_available
from torch import Tensor

__all__ = ["E4M3_MAX", "quantize_fp8", "dequantize_fp8", "fp8_matmul", "fp8_matmul_ref", "fp8_linear"]

E4M3_MAX = 448.0


# fmt: off
@triton.jit
def _fp8_mm(A, B, SA, SB, C, M, N, K, s_am, s_ak, s_bn, s_bk, s_cm, s_cn, BM: tl.constexpr, BN: tl.constexpr,
            BK: tl.constexpr, GROUP_M: tl.constexpr, EVEN_K: tl.constexpr, PROMOTE: tl.constexpr):
    """C (M, N) = (A (M, K) @ B (N, K)^T) * SA[m] * SB[n]; e4m3 operands, float32 accumulate.
    PROMOTE: how many K elements Hopper's fp8 tensor cores may sum in their reduced-precision
    accumulator before the partial is added to the float32 one (None: Triton's sm_90 default, never)."""
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BM)
    num_n = tl.cdiv(N, BN)
    # Grouped launch order: GROUP_M row tiles sweep the column tiles together, so their B tiles are
    # reused from L2 instead of being fetched once per row tile.
    width = GROUP_M * num_n
    first_m = (pid // width) * GROUP_M
    size_m = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % width) % size_m
    pid_n = (pid % width) // size_m
    rm = pid_m * BM + tl.arange(0, BM)
    rn = pid_n * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    # Out-of-range rows/columns read a valid row instead (modulo) and are masked at the store, so the
    # main-loop loads need no M/N mask.
    a_ptr = A + (rm % M)[:, None] * s_am + rk[None, :] * s_ak  # (BM, BK)
    b_ptr = B + (rn % N)[None, :] * s_bn + rk[:, None] * s_bk  # (BK, BN): W's rows are K-contiguous
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    for k0 in range(0, K, BK):
        if EVEN_K:
            a = tl.load(a_ptr)
            b = tl.load(b_ptr)
        else:
            kmask = k0 + rk < K
            a = tl.load(a_ptr, mask=kmask[None, :], other=0.0)
            b = tl.load(b_ptr, mask=kmask[:, None], other=0.0)
        acc = tl.dot(a, b, acc, max_num_imprecise_acc=PROMOTE)
        a_ptr += BK * s_ak
        b_ptr += BK * s_bk
    sa = tl.load(SA + rm, mask=rm < M, other=0.0)
    sb = tl.load(SB + rn, mask=rn < N, other=0.0)
    acc = acc * sa[:, None] * sb[None, :]
    tl.store(C + rm[:, None] * s_cm + rn[None, :] * s_cn, acc.to(C.dtype.element_ty),
             mask=(rm[:, None] < M) & (rn[None, :] < N))
# fmt: on


class FP8Tiles:
    """Launch tables (bm, bn, bk, group_m, num_warps, num_stages), from the H200 runs 5 and 5e
    (bench/results/h200_kernels_run5e.txt). Promoted accumulation keeps a second (partial) float32
    accumulator in registers, so it wants the tile that leaves room for it: 256x128 ran at 968
    TFLOP/s there where 128x256 fell to 465; fast accumulation is fastest at 128x256 (1299).
    `bench` times CANDIDATES (promoted) in the same run."""

    DEFAULT = (256, 128, 128, 8, 8, 3)  # 4 stages: within +-7% of this, either way, in runs 5f and 5g
    FAST = (128, 256, 128, 8, 8, 3)
    CANDIDATES = ((256, 128, 128, 8, 8, 3), (256, 128, 128, 8, 8, 4), (128, 128, 128, 8, 8, 4),
                  (128, 128, 128, 8, 8, 3), (128, 256, 128, 8, 8, 3))  # fmt: skip


def quantize_fp8(t: Tensor, dim: int = -1) -> tuple[Tensor, Tensor]:
    """2-D t -> (q e4m3 with t's shape, float32 scales over the other axis) with t ~ q * scale.

    ``dim`` is the axis each scale covers: dim=-1 (or 1) gives one scale per row -- activations
    (M, K) and nn.Linear weights (N, K), one per output channel; dim=0 gives one per column, for a
    (K, N) weight. scale = amax / 448 so the largest entry maps to e4m3's largest finite value."""
    if t.dim() != 2:
        raise ValueError(f"quantize_fp8: expected a 2-D tensor, got shape {tuple(t.shape)}")
    tf = t.float()
    amax = tf.abs().amax(dim=dim, keepdim=True).clamp(min=1e-12)
    scale = amax / E4M3_MAX
    q = (tf / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)  # round to nearest even
    return q, scale.squeeze(dim)


def dequantize_fp8(q: Tensor, scale: Tensor, dim: int = -1, dtype: torch.dtype = torch.float32) -> Tensor:
    ct = torch.float64 if dtype == torch.float64 else torch.float32  # q * scale is exact in float64
    return (q.to(ct) * scale.to(ct).unsqueeze(dim)).to(dtype)


def _check(xq: Tensor, x_scale: Tensor, wq: Tensor, w_scale: Tensor) -> None:
    M, K = xq.shape
    N = wq.shape[0]
    if wq.shape[1] != K or x_scale.shape != (M,) or w_scale.shape != (N,):
        raise ValueError(f"fp8_matmul: xq {tuple(xq.shape)}, x_scale {tuple(x_scale.shape)}, wq "
                         f"{tuple(wq.shape)}, w_scale {tuple(w_scale.shape)}; expected (M, K), (M,), "
                         "(N, K), (N,)")  # fmt: skip
    if xq.dtype != torch.float8_e4m3fn or wq.dtype != torch.float8_e4m3fn:
        raise ValueError(f"fp8_matmul: operands must be float8_e4m3fn, got {xq.dtype} and {wq.dtype}")


def fp8_matmul(xq: Tensor, x_scale: Tensor, wq: Tensor, w_scale: Tensor,
               out_dtype: torch.dtype = torch.bfloat16, tiles: tuple | None = None,
               fast_accum: bool = False) -> Tensor:  # fmt: skip
    """(xq (M, K) e4m3 @ wq (N, K)^T e4m3) * x_scale (M,) [:, None] * w_scale (N,) [None, :] -> (M, N).

    Hopper's fp8 tensor cores accumulate with reduced precision; by default each K tile's partial
    (bk = 128 products, the promotion interval of DeepSeek-V3's fp8 GEMMs) is promoted to the float32
    accumulator. ``fast_accum=True`` never promotes (faster, less accurate at large K), like
    torch._scaled_mm's ``use_fast_accum``. Raises RuntimeError where this GPU has no fp8 tensor cores
    (the reason is in the message)."""
    status = fp8_available()
    if not status.ok:
        raise RuntimeError(f"fp8_matmul cannot run here: {status.reason}")
    _check(xq, x_scale, wq, w_scale)
    bm, bn, bk, group_m, warps, stages = tiles or (FP8Tiles.FAST if fast_accum else FP8Tiles.DEFAULT)
    M, K = xq.shape
    N = wq.shape[0]
    out = torch.empty(M, N, device=xq.device, dtype=out_dtype)
    grid = (triton.cdiv(M, bm) * triton.cdiv(N, bn),)
    _fp8_mm[grid](xq, wq, x_scale.float().contiguous(), w_scale.float().contiguous(), out, M, N, K,
                  *xq.stride(), *wq.stride(), *out.stride(), BM=bm, BN=bn, BK=bk, GROUP_M=group_m,
                  EVEN_K=K % bk == 0, PROMOTE=None if fast_accum else bk, num_warps=warps,
                  num_stages=stages)  # fmt: skip
    return out


def fp8_matmul_ref(xq: Tensor, x_scale: Tensor, wq: Tensor, w_scale: Tensor,
                   out_dtype: torch.dtype = torch.bfloat16,
                   compute: torch.dtype = torch.float32) -> Tensor:  # fmt: skip
    """Plain-torch twin: dequantize both operands in ``compute`` precision, matmul, cast."""
    _check(xq, x_scale, wq, w_scale)
    x = xq.to(compute) * x_scale.to(compute)[:, None]
    w = wq.to(compute) * w_scale.to(compute)[:, None]
    return (x @ w.t()).to(out_dtype)


def fp8_linear(x: Tensor, wq: Tensor, w_scale: Tensor, tiles: tuple | None = None) -> Tensor:
    """x (M, K) float @ dequant(wq, w_scale)^T, with x quantized to e4m3 per row on the fly; x's dtype out."""
    xq, x_scale = quantize_fp8(x, dim=-1)
    return fp8_matmul(xq, x_scale, wq, w_scale, out_dtype=x.dtype, tiles=tiles)
