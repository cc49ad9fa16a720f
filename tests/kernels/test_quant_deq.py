"""int4 decode GEMM on weights dequantized in registers, several groups per dot (quant_deq) vs the
float64 truth; its dispatch and limits.

On CPU the kernel computes its tile in plain Triton ((q - z) s in float32 rounded once to x's dtype),
which tests the word tiling, k orders, x addressing, split-K, masking and both dot forms; the PTX
bf16x2 unpacking itself is tested by the GPU tests."""

from __future__ import annotations

import pytest
import torch
from pretrainctl_kernels import quant, quant_deq, quant_half2
from pretrainctl_kernels.quant import int4_matmul, int4_matmul_ref, quantize_int4

from tests.kernels._tol import assert_close_to_truth, need_gpu, need_interpreter


def _case(M: int, K: int, group: int, dtype: torch.dtype, device: str, N: int = 40, **kw) -> None:
    gen = torch.Generator().manual_seed(M + K + group)
    packed, scales, zeros = (t.to(device) for t in quantize_int4(torch.randn(N, K, generator=gen), group))
    scales, zeros = scales.to(dtype), zeros.to(dtype)  # the rounded scales are what both sides see
    x = torch.randn(M, K, generator=gen).to(device, dtype)
    truth = int4_matmul_ref(x.double(), packed, scales.double(), zeros.double(), group)
    ref = int4_matmul_ref(x, packed, scales, zeros, group)
    ours = int4_matmul(x, packed, scales, zeros, group, deq=True, **kw)
    assert ours.dtype == dtype
    assert_close_to_truth(ours, ref, truth, f"int4 deq M={M} K={K} group={group} {kw}")


@pytest.mark.parametrize(
    "M,K,group,kw",
    [
        (16, 256, 32, dict()),  # INT4_DEQ's tile: 8 groups over 8 splits, the prefetch masked off
        (5, 512, 64, dict(gb=2, split_k=3, order=0)),  # uneven splits, one masked group; x permuted
        (16, 512, 32, dict(gb=4, split_k=1, bn=32, stages=2)),  # several steps with the register prefetch
        (16, 512, 32, dict(gb=2, split_k=1, bn=16, stages=3, swap=False)),  # two steps deep, 8 steps
        (4, 384, 64, dict(gb=2, split_k=2, stages=3)),  # two steps deep, the second buffer masked off
        (16, 512, 64, dict(gb=1, split_k=2, stages=1, pipe=3)),  # Triton's loop pipelining
        (7, 512, 32, dict(gb=2, split_k=3, two_pass=True)),  # K splits summed by a second launch
        (9, 384, 128, dict(gb=2, split_k=1, stages=1, swap=False)),  # x W^T; a half-masked last step
        (2, 256, 16, dict(gb=4, split_k=2, order=0, swap=False)),  # two words per group
        (1, 256, 64, dict(gb=1, split_k=4)),  # M == 1 on the matrix units (15 masked rows of x)
    ],
)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_int4_deq_interpreter(M: int, K: int, group: int, kw: dict, dtype: torch.dtype) -> None:
    need_interpreter()
    # N=40 is not a multiple of any row tile: the last program's rows are part masked.
    _case(M, K, group, dtype, "cpu", **kw)


def test_int4_deq_orders_agree_interpreter() -> None:
    need_interpreter()
    # Both k orders pair the same weight with the same x: the products are equal up to summation order.
    gen = torch.Generator().manual_seed(5)
    packed, scales, zeros = quantize_int4(torch.randn(24, 256, generator=gen), 64)
    x = torch.randn(3, 256, generator=torch.Generator().manual_seed(6))
    a = int4_matmul(x, packed, scales, zeros, 64, deq=True, order=0, split_k=1)
    b = int4_matmul(x, packed, scales, zeros, 64, deq=True, order=1, split_k=1)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_int4_deq_dispatch_and_rejects(monkeypatch: pytest.MonkeyPatch) -> None:
    need_interpreter()
    packed, scales, zeros = quantize_int4(torch.randn(24, 64), 32)
    s, z = scales.half(), zeros.half()
    x1, x16 = torch.randn(1, 64).half(), torch.randn(16, 64).half()
    seen = []
    real = quant._launch
    monkeypatch.setattr(quant, "_launch", lambda kern, *a, **k: seen.append(kern) or real(kern, *a, **k))
    dq, h2, wd, mm = quant_deq._int4_deq, quant_half2._int4_h2, quant._int4_words, quant._int4_mm
    int4_matmul(x16, packed, s, z, 32, deq=True)
    int4_matmul(x1, packed, s, z, 32, deq=True)  # asked for: M == 1 too
    int4_matmul(x16, packed, s, z, 32)  # INT4_DEQ_DEFAULT as committed
    committed = dq if quant.INT4_DEQ_DEFAULT else wd
    monkeypatch.setattr(quant, "INT4_DEQ_DEFAULT", True)
    int4_matmul(x16, packed, s, z, 32)  # the default for 1 < M <= 16
    int4_matmul(x1, packed, s, z, 32)  # M == 1 keeps its own default (half2)
    int4_matmul(x16, packed, s, z, 32, words=True)  # asking for another kernel gets it
    int4_matmul(x16, packed, s, z, 32, swap=True)  # a word-kernel keyword: the word kernel
    int4_matmul(torch.randn(17, 64).half(), packed, s, z, 32)  # prefill
    assert seen == [dq, dq, committed, dq, h2, wd, wd, mm]
    for bad, match in (
        (dict(x=torch.randn(17, 64).half()), "M <= 16"),
        (dict(xres=True), "xres"),
        (dict(words=False), "not words=False"),
        (dict(gb=3), "power of two"),
        (dict(order=2), "order"),
        (dict(stages=4), "stages"),
        (dict(pipe=0), "pipe"),
    ):
        args = dict(x=x16) | bad
        xx = args.pop("x")
        with pytest.raises(ValueError, match=match):
            int4_matmul(xx, packed, s, z, 32, deq=True, **args)
    p48, s48, z48 = quantize_int4(torch.randn(8, 96), 48)
    with pytest.raises(ValueError, match="power of two"):
        int4_matmul(torch.randn(4, 96), p48, s48, z48, 48, deq=True)


# Every tile bench_quant_deq times (run 9e; the tiles of the 9a-9d sweeps were GPU-tested in those runs),
# at the decode shape, in bf16 against the float64 truth.
T, F = True, False
DEQ_TILES = [
    (64, 8, 4, 1, 2, T, 1, 1, F), (64, 8, 8, 1, 2, T, 1, 1, F), (64, 16, 8, 1, 2, T, 1, 1, F),
    (64, 4, 8, 1, 2, T, 1, 1, F), (64, 8, 8, 2, 2, T, 1, 1, F), (64, 4, 8, 2, 2, T, 1, 1, F),
    (64, 8, 4, 1, 2, T, 1, 1, T),
]  # fmt: skip


def test_deq_tiles_match_the_bench() -> None:
    from pretrainctl_kernels.bench_quant_deq import DEQ_CANDIDATES, deq_kwargs

    assert DEQ_TILES == DEQ_CANDIDATES  # the GPU tests below cover every timed candidate
    assert tuple(quant.INT4_DEQ) in DEQ_TILES
    kw = dict(deq=T, bn=64, split_k=8, num_warps=4, gb=1, stages=2, swap=T, order=1, pipe=1, two_pass=F)
    assert deq_kwargs(DEQ_TILES[0]) == kw


@pytest.mark.gpu
@pytest.mark.parametrize("tile", DEQ_TILES, ids=lambda t: "-".join(map(str, t)))
def test_int4_deq_gpu_bf16(tile: tuple) -> None:
    need_gpu()
    from pretrainctl_kernels.bench_quant_deq import deq_kwargs

    kw = deq_kwargs(tile)
    kw.pop("deq")
    _case(16, 4096, 128, torch.bfloat16, "cuda", N=4096, **kw)


@pytest.mark.gpu
@pytest.mark.parametrize("M,group,kw", [(1, 128, dict()), (7, 128, dict(split_k=3)), (16, 32, dict(gb=4))])
def test_int4_deq_gpu_shapes(M: int, group: int, kw: dict) -> None:
    need_gpu()
    _case(M, 4096, group, torch.bfloat16, "cuda", N=4096, **kw)
    _case(M, 512, group, torch.float16, "cuda", N=200, **kw)  # fp16: the plain-Triton tile on the GPU
