"""int4 decode GEMM on weights dequantized in registers, several groups per dot (quant_deq) vs the
float64 truth; its dispatch and limits.

On CPU the kernel computes its tile in plain Triton ((q - z) s in float32 rounded once to x's dtype),
which tests the word tiling, k orders, x addressing, split-K, masking and both dot forms; the PTX
bf16x2 unpacking itself is tested by the GPU tests."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch
from pretrainctl_kernels import quant, quant_deq, quant_half2, quant_launch, quant_words
from pretrainctl_kernels.quant import (
    Int4Bytes,
    Int4Deq,
    Int4Half2,
    Int4Words,
    int4_matmul,
    int4_matmul_ref,
    int4_tile,
    quantize_int4,
)

from tests.kernels._tol import assert_close_to_truth, need_gpu, need_interpreter


def _case(M: int, K: int, group: int, dtype: torch.dtype, device: str, N: int = 40, **kw) -> None:
    gen = torch.Generator().manual_seed(M + K + group)
    packed, scales, zeros = (t.to(device) for t in quantize_int4(torch.randn(N, K, generator=gen), group))
    scales, zeros = scales.to(dtype), zeros.to(dtype)  # the rounded scales are what both sides see
    x = torch.randn(M, K, generator=gen).to(device, dtype)
    truth = int4_matmul_ref(x.double(), packed, scales.double(), zeros.double(), group)
    ref = int4_matmul_ref(x, packed, scales, zeros, group)
    ours = int4_matmul(x, packed, scales, zeros, group, tile=Int4Deq(**kw))
    assert ours.dtype == dtype
    assert_close_to_truth(ours, ref, truth, f"int4 deq M={M} K={K} group={group} {kw}")


@pytest.mark.parametrize(
    "M,K,group,kw",
    [
        (16, 256, 32, dict()),  # Int4Deq's default tile: 8 groups over 8 splits, the prefetch masked off
        (5, 512, 64, dict(gb=2, split=3, order=0)),  # uneven splits, one masked group; x permuted
        (16, 512, 32, dict(gb=4, split=1, bn=32, stages=2)),  # several steps with the register prefetch
        (16, 512, 32, dict(gb=2, split=1, bn=16, stages=3, swap=False)),  # two steps deep, 8 steps
        (4, 384, 64, dict(gb=2, split=2, stages=3)),  # two steps deep, the second buffer masked off
        (16, 512, 64, dict(gb=1, split=2, stages=1, pipe=3)),  # Triton's loop pipelining
        (7, 512, 32, dict(gb=2, split=3, two_pass=True)),  # K splits summed by a second launch
        (9, 384, 128, dict(gb=2, split=1, stages=1, swap=False)),  # x W^T; a half-masked last step
        (2, 256, 16, dict(gb=4, split=2, order=0, swap=False)),  # two words per group
        (1, 256, 64, dict(gb=1, split=4)),  # M == 1 on the matrix units (15 masked rows of x)
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
    a = int4_matmul(x, packed, scales, zeros, 64, tile=Int4Deq(order=0, split=1))
    b = int4_matmul(x, packed, scales, zeros, 64, tile=Int4Deq(order=1, split=1))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_int4_default_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    h = torch.float16
    # The committed defaults (H200-measured, see quant.py): run 9's kernel for 1 < M <= 16, run 8's
    # half2 GEMV for M == 1 with fp16/bf16 x, the word kernel for float32 x, the byte kernel otherwise.
    assert int4_tile(16, 32, h) == int4_tile(2, 128, torch.float32) == Int4Deq()
    assert int4_tile(1, 32, h) == int4_tile(1, 128, torch.bfloat16) == Int4Half2()
    assert int4_tile(1, 32, torch.float32) == Int4Words()  # fp16x2 arithmetic would lose its precision
    assert int4_tile(17, 32, h) == Int4Bytes()  # prefill
    assert int4_tile(4, 48, h) == int4_tile(1, 48, h) == Int4Bytes()  # group / 8 = 6: no word kernel
    monkeypatch.setattr(quant, "INT4_M16", (Int4Words(swap=False), Int4Deq()))  # as the benches retune it
    assert int4_tile(16, 32, h) == Int4Words(swap=False)


def test_int4_tiles_launch_their_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    need_interpreter()
    gen = torch.Generator().manual_seed(7)
    packed, scales, zeros = quantize_int4(torch.randn(24, 64, generator=gen), 32)
    s, z = scales.half(), zeros.half()
    x1, x16 = torch.randn(1, 64, generator=gen).half(), torch.randn(16, 64, generator=gen).half()
    seen = []
    real = quant_launch.launch

    def spy(kern, *a, **k):  # noqa: ANN001, ANN202
        seen.append(kern)
        return real(kern, *a, **k)

    monkeypatch.setattr(quant_launch, "launch", spy)
    monkeypatch.setattr(quant, "launch", spy)
    for x, tile in ((x16, None), (x1, Int4Deq()), (x16, Int4Words()), (x16, Int4Bytes()), (x1, None)):
        truth = int4_matmul_ref(x.double(), packed, s.double(), z.double(), 32)
        ours = int4_matmul(x, packed, s, z, 32, tile=tile)
        assert_close_to_truth(ours, int4_matmul_ref(x, packed, s, z, 32), truth, f"M={x.shape[0]} {tile}")
    dq, wd, mm, h2 = quant_deq._int4_deq, quant_words._int4_words, quant._int4_mm, quant_half2._int4_h2
    assert seen == [dq, dq, wd, mm, h2]  # M == 1 keeps its own default


@pytest.mark.parametrize(
    "M,tile,match",
    [
        (17, Int4Deq(), r"M <= 16 \(got 17\)"),
        (16, Int4Deq(gb=3), "gb a power of two"),
        (16, Int4Deq(order=2), "order 0 or 1"),
        (16, Int4Deq(stages=4), "stages 1, 2 or 3"),
        (16, Int4Deq(pipe=0), "pipe >= 1"),
    ],
)
def test_int4_deq_rejects(M: int, tile: Int4Deq, match: str) -> None:
    packed, scales, zeros = quantize_int4(torch.randn(24, 64), 32)
    with pytest.raises(ValueError, match=match):
        int4_matmul(torch.randn(M, 64).half(), packed, scales.half(), zeros.half(), 32, tile=tile)
    p48, s48, z48 = quantize_int4(torch.randn(8, 96), 48)
    with pytest.raises(ValueError, match="group / 8 a power of two"):
        int4_matmul(torch.randn(4, 96), p48, s48, z48, 48, tile=Int4Deq())


# Every tile bench_quant_deq times (run 9e; the tiles of the 9a-9d sweeps were GPU-tested in those runs),
# at the decode shape, in bf16 against the float64 truth.
T, F = True, False
DEQ_TILES = [
    (64, 8, 4, 1, 2, T, 1, 1, F), (64, 8, 8, 1, 2, T, 1, 1, F), (64, 16, 8, 1, 2, T, 1, 1, F),
    (64, 4, 8, 1, 2, T, 1, 1, F), (64, 8, 8, 2, 2, T, 1, 1, F), (64, 4, 8, 2, 2, T, 1, 1, F),
    (64, 8, 4, 1, 2, T, 1, 1, T),
]  # fmt: skip


def test_deq_tiles_match_the_bench() -> None:
    from pretrainctl_kernels.bench_quant_deq import DEQ_CANDIDATES

    assert DEQ_TILES == DEQ_CANDIDATES  # the GPU tests below cover every timed candidate
    assert Int4Deq() in [Int4Deq(*t) for t in DEQ_TILES]
    assert Int4Deq(*DEQ_TILES[0]) == Int4Deq(bn=64, split=8, warps=4, gb=1, stages=2, swap=T, order=1, pipe=1)


@pytest.mark.gpu
@pytest.mark.parametrize("tile", DEQ_TILES, ids=lambda t: "-".join(map(str, t)))
def test_int4_deq_gpu_bf16(tile: tuple) -> None:
    need_gpu()
    _case(16, 4096, 128, torch.bfloat16, "cuda", N=4096, **asdict(Int4Deq(*tile)))


@pytest.mark.gpu
@pytest.mark.parametrize("M,group,kw", [(1, 128, dict()), (7, 128, dict(split=3)), (16, 32, dict(gb=4))])
def test_int4_deq_gpu_shapes(M: int, group: int, kw: dict) -> None:
    need_gpu()
    _case(M, 4096, group, torch.bfloat16, "cuda", N=4096, **kw)
    _case(M, 512, group, torch.float16, "cuda", N=200, **kw)  # fp16: the plain-Triton tile on the GPU
