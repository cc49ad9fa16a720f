"""int4 M == 1 GEMV in fp16x2 arithmetic (quant_half2) vs the float64 truth; its dispatch and limits.

On CPU the kernel runs its plain-Triton emulation (same masks, pairs, zero points, per-group x scaling,
split-K and masking; float32 products); the PTX arithmetic itself is tested by the GPU tests."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch
from pretrainctl_kernels.quant import Int4Half2, int4_matmul, int4_matmul_ref, quantize_int4

from tests.kernels._tol import assert_close_to_truth, need_gpu, need_interpreter


def _case(K: int, group: int, dtype: torch.dtype, device: str, x_scale: torch.Tensor | None = None,
          N: int = 40, **kw) -> None:  # fmt: skip
    gen = torch.Generator().manual_seed(K + group)
    packed, scales, zeros = (t.to(device) for t in quantize_int4(torch.randn(N, K, generator=gen), group))
    scales, zeros = scales.to(dtype), zeros.to(dtype)
    x = torch.randn(1, K, generator=gen, dtype=torch.float64)
    if x_scale is not None:
        x = x * x_scale
    x = x.to(device, dtype)
    truth = int4_matmul_ref(x.double(), packed, scales.double(), zeros.double(), group)
    ref = int4_matmul_ref(x, packed, scales, zeros, group)
    ours = int4_matmul(x, packed, scales, zeros, group, tile=Int4Half2(**kw))
    assert ours.dtype == dtype
    assert torch.isfinite(ours).all()
    assert_close_to_truth(ours, ref, truth, f"int4 half2 K={K} group={group} {kw}")


@pytest.mark.parametrize(
    "K,group,kw",
    [
        (256, 32, dict()),  # Int4Half2's default tile: every group in one step, the prefetch masked off
        (256, 32, dict(hacc=1)),  # a whole group summed in fp16 pairs (tl.reduce with the pair add)
        (384, 128, dict(gb=2, split=2)),  # 3 groups over 2 splits: one masked group, split-K fix-up
        (512, 64, dict(bn=8, gb=1, split=3, stages=1, hacc=1)),  # uneven splits, no prefetch
        (512, 64, dict(bn=32, gb=2, warps=2)),  # several steps with the register prefetch
        (256, 16, dict(bn=16, gb=4)),  # two words per group
    ],
)
def test_int4_half2_interpreter(K: int, group: int, kw: dict) -> None:
    need_interpreter()
    # N=40 is not a multiple of any row tile: the last program's rows are part masked.
    _case(K, group, torch.float16, "cpu", **kw)


def test_int4_half2_group_magnitudes_interpreter() -> None:
    need_interpreter()
    # Groups of x whose magnitudes differ by 10**7: each is scaled by its own power of two before the
    # fp16 conversion and exactly scaled back (the output itself stays inside fp16 range).
    mags = torch.tensor([1e-5, 1.0, 3e2, 0.0, 7e-3, 20.0, 1.0, 50.0]).repeat_interleave(32)
    _case(256, 32, torch.float16, "cpu", x_scale=mags[None, :] / 4)


@pytest.mark.parametrize(
    "M,dtype,tile,match",
    [
        (1, torch.float32, Int4Half2(), "fp16/bf16 x"),
        (2, torch.float16, Int4Half2(), r"M == 1 \(got 2\)"),
        (1, torch.float16, Int4Half2(gb=3), "gb a power of two"),
        (1, torch.float16, Int4Half2(hacc=2), "hacc 0 or 1"),
    ],
)
def test_int4_half2_rejects(M: int, dtype: torch.dtype, tile: Int4Half2, match: str) -> None:
    # Dispatch to it (the M == 1 default for fp16/bf16 x): test_quant_deq.test_int4_default_tiles.
    packed, scales, zeros = quantize_int4(torch.randn(24, 64), 32)
    with pytest.raises(ValueError, match=match):
        int4_matmul(torch.randn(M, 64).to(dtype), packed, scales.half(), zeros.half(), 32, tile=tile)


# Every tile the run-8 bench times, at the decode shape, in bf16 against the float64 truth.
H2_TILES = [
    (16, 1, 4, 16, 2, 0), (16, 1, 4, 16, 2, 1), (16, 1, 4, 8, 2, 0), (16, 1, 4, 8, 2, 1),
    (32, 1, 8, 16, 2, 0), (32, 1, 8, 16, 2, 1), (32, 1, 4, 8, 2, 0), (16, 1, 4, 16, 1, 0),
    (8, 1, 4, 16, 2, 0), (16, 2, 4, 8, 2, 0), (16, 1, 8, 16, 2, 0), (8, 1, 4, 8, 2, 0),
    (16, 1, 4, 8, 1, 1), (8, 1, 2, 8, 2, 1), (16, 1, 2, 8, 2, 1), (8, 1, 4, 8, 2, 1), (16, 1, 4, 4, 2, 1),
]  # fmt: skip


def test_h2_tiles_match_the_bench() -> None:
    from pretrainctl_kernels.bench_quant_h2 import H2_CANDIDATES

    assert H2_TILES == H2_CANDIDATES  # the GPU tests below cover every timed candidate
    assert Int4Half2() in [Int4Half2(*t) for t in H2_TILES]
    assert Int4Half2(*H2_TILES[1]) == Int4Half2(bn=16, split=1, warps=4, gb=16, stages=2, hacc=1)


@pytest.mark.gpu
@pytest.mark.parametrize("tile", H2_TILES, ids=lambda t: "-".join(map(str, t)))
def test_int4_half2_gpu_bf16(tile: tuple) -> None:
    need_gpu()
    _case(4096, 128, torch.bfloat16, "cuda", N=4096, **asdict(Int4Half2(*tile)))


@pytest.mark.gpu
@pytest.mark.parametrize("hacc", [0, 1])
def test_int4_half2_gpu_x_range(hacc: int) -> None:
    need_gpu()
    # bf16 x far outside fp16's range (up to ~1e9) and far below it (1e-9), group by group: without the
    # per-group scaling the fp16 conversion would overflow to inf or flush to zero.
    gen = torch.Generator().manual_seed(3)
    mags = (10.0 ** torch.randint(-9, 10, (32,), generator=gen).double()).repeat_interleave(128)
    _case(4096, 128, torch.bfloat16, "cuda", x_scale=mags[None, :], N=4096, hacc=hacc)


@pytest.mark.gpu
def test_int4_half2_gpu_fp16() -> None:
    need_gpu()
    _case(4096, 128, torch.float16, "cuda", N=4096)
