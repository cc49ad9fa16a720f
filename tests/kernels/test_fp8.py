"""fp8 (e4m3) row-wise scaled matmul vs its dequantize-then-matmul reference; quantizer rounding bound."""

from __future__ import annotations

import pytest
import torch
from pretrainctl_kernels import fp8_available
from pretrainctl_kernels.fp8 import (
    E4M3_MAX,
    dequantize_fp8,
    fp8_linear,
    fp8_matmul,
    fp8_matmul_ref,
    quantize_fp8,
)

from tests.kernels._tol import assert_close_to_truth, need_gpu, need_interpreter


@pytest.mark.parametrize("dim", [1, 0])
def test_quantize_fp8_rounding_bound(dim: int) -> None:
    # Rows of very different magnitude: each row (dim=1) / column (dim=0) gets its own scale.
    gen = torch.Generator().manual_seed(0)
    t = (
        torch.randn(24, 40, generator=gen, dtype=torch.float64)
        * torch.logspace(-3, 3, 24, dtype=torch.float64)[:, None]
    )
    q, scale = quantize_fp8(t, dim=dim)
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (t.shape[1 - dim],)
    assert (q.float().abs().amax(dim=dim) == E4M3_MAX).all(), "each slice's amax maps to 448"
    err = (dequantize_fp8(q, scale, dim=dim, dtype=torch.float64) - t).abs()
    s = scale.double().unsqueeze(dim)
    # e4m3 keeps 3 mantissa bits: round-to-nearest is within 2^-4 relative for normal values and within
    # half the subnormal spacing 2^-9 (in scaled units) below the smallest normal 2^-6.
    bound = torch.maximum(t.abs() * 2.0**-4, s * 2.0**-10) * (1 + 1e-6)
    assert (err <= bound).all(), f"max excess {(err - bound).max().item():.3g}"
    assert (err > 0).any(), "quantization must be lossy for random inputs (a test that cannot fail)"


def test_fp8_matmul_ref_matches_dequantized_product() -> None:
    gen = torch.Generator().manual_seed(1)
    x, w = torch.randn(9, 48, generator=gen), torch.randn(20, 48, generator=gen)
    xq, xs = quantize_fp8(x)
    wq, ws = quantize_fp8(w)
    expect = dequantize_fp8(xq, xs, dtype=torch.float64) @ dequantize_fp8(wq, ws, dtype=torch.float64).t()
    got = fp8_matmul_ref(xq, xs, wq, ws, out_dtype=torch.float64, compute=torch.float64)
    torch.testing.assert_close(got, expect, rtol=1e-12, atol=1e-12)
    # The quantized product stays near the float one (e4m3's 2^-4 relative step, averaged over K).
    assert (got - x.double() @ w.double().t()).abs().max() < 0.1 * (x @ w.t()).abs().max()


def test_fp8_available_says_why() -> None:
    status = fp8_available()
    assert status.mode in ("gpu", "interpreter", "none") and status.reason


def _case(M: int, N: int, K: int, out_dtype: torch.dtype, device: str, w_cols: bool = False, **kw) -> None:
    gen = torch.Generator().manual_seed(M + N)
    x = torch.randn(M, K, generator=gen) * torch.linspace(0.1, 10, M)[:, None]  # per-row ranges differ
    if w_cols:  # a (K, N) weight with one scale per column, passed as its (N, K) transposed view
        wq_kn, ws = quantize_fp8(torch.randn(K, N, generator=gen), dim=0)
        wq = wq_kn.to(device).t()
    else:
        wq, ws = quantize_fp8(torch.randn(N, K, generator=gen))
        wq = wq.to(device)
    xq, xs = quantize_fp8(x)
    xq, xs, ws = xq.to(device), xs.to(device), ws.to(device)
    truth = fp8_matmul_ref(xq, xs, wq, ws, out_dtype=torch.float64, compute=torch.float64)
    ref = fp8_matmul_ref(xq, xs, wq, ws, out_dtype=out_dtype)  # float32 product, rounded to out_dtype
    ours = fp8_matmul(xq, xs, wq, ws, out_dtype=out_dtype, **kw)
    assert ours.dtype == out_dtype
    assert_close_to_truth(ours, ref, truth, f"fp8 M={M} N={N} K={K}")


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_fp8_matmul_interpreter(out_dtype: torch.dtype) -> None:
    need_interpreter()
    # M=19, N=40 not multiples of the 16 x 32 tile; K=72 leaves a partial 32-deep reduction tile.
    _case(19, 40, 72, out_dtype, "cpu", tiles=(16, 32, 32, 2, 4, 1))
    _case(19, 40, 64, out_dtype, "cpu", w_cols=True, tiles=(16, 32, 32, 2, 4, 1))  # even K, strided W


def test_fp8_linear_interpreter() -> None:
    need_interpreter()
    gen = torch.Generator().manual_seed(2)
    x, w = torch.randn(5, 64, generator=gen), torch.randn(24, 64, generator=gen)
    wq, ws = quantize_fp8(w)
    xq, xs = quantize_fp8(x)
    ours = fp8_linear(x, wq, ws, tiles=(16, 32, 32, 1, 4, 1))
    torch.testing.assert_close(ours, fp8_matmul_ref(xq, xs, wq, ws, out_dtype=torch.float32))


@pytest.mark.gpu
@pytest.mark.parametrize("M,N,K", [(4096, 4096, 4096), (1000, 2816, 1024), (16, 4096, 4096)])
def test_fp8_matmul_gpu_bf16(M: int, N: int, K: int) -> None:
    need_gpu()
    if not fp8_available().ok:
        pytest.skip(fp8_available().reason)
    _case(M, N, K, torch.bfloat16, "cuda")
    _case(M, N, K, torch.bfloat16, "cuda", w_cols=True)


@pytest.mark.gpu
def test_fp8_accumulation_precision_gpu() -> None:
    # Hopper's fp8 tensor cores accumulate in reduced precision; the default promotes every K tile.
    # At K = 16384 with float32 output our error must stay within 2x that of cuBLAS's non-fast path.
    need_gpu()
    if not fp8_available().ok or not hasattr(torch, "_scaled_mm"):
        pytest.skip("needs fp8 tensor cores and torch._scaled_mm")
    gen = torch.Generator(device="cuda").manual_seed(0)
    xq = quantize_fp8(torch.randn(256, 16384, device="cuda", generator=gen))[0]
    wq = quantize_fp8(torch.randn(256, 16384, device="cuda", generator=gen))[0]
    truth = xq.double() @ wq.double().t()
    one = torch.ones((), device="cuda")
    ref = torch._scaled_mm(xq, wq.t(), scale_a=one, scale_b=one, out_dtype=torch.float32)  # not fast_accum
    ours = fp8_matmul(xq, one.expand(256), wq, one.expand(256), out_dtype=torch.float32)
    scale = truth.abs().max().item()
    err, ref_err = ((t.double() - truth).abs().max().item() for t in (ours, ref))
    assert err <= 2 * ref_err + 1e-6 * scale, f"error {err:.3g}, cuBLAS {ref_err:.3g}, |truth| {scale:.3g}"
