"""int4 M == 1 GEMV in fp16x2 arithmetic (quant_half2) vs the float64 truth; its dispatch and limits.

On CPU the kernel runs its plain-Triton emulation (same masks, pairs, zero points, per-group x scaling,
split-K and masking; float32 products); the PTX arithmetic itself is tested by the GPU tests."""

from __future__ import annotations

import pytest
import torch
from pretrainctl_kernels import quant, quant_half2
from pretrainctl_kernels.quant import int4_matmul, int4_matmul_ref, quantize_int4

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
    ours = int4_matmul(x, packed, scales, zeros, group, half2=True, **kw)
    assert ours.dtype == dtype
    assert torch.isfinite(ours).all()
    assert_close_to_truth(ours, ref, truth, f"int4 half2 K={K} group={group} {kw}")


@pytest.mark.parametrize(
    "K,group,kw",
    [
        (256, 32, dict()),  # INT4_HALF2's tile: every group in one step, the prefetch masked off
        (256, 32, dict(hacc=1)),  # a whole group summed in fp16 pairs (tl.reduce with the pair add)
        (384, 128, dict(gb=2, split_k=2)),  # 3 groups over 2 splits: one masked group, split-K fix-up
        (512, 64, dict(bn=8, gb=1, split_k=3, stages=1, hacc=1)),  # uneven splits, no prefetch
        (512, 64, dict(bn=32, gb=2, num_warps=2)),  # several steps with the register prefetch
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


def test_int4_half2_dispatch_and_rejects(monkeypatch: pytest.MonkeyPatch) -> None:
    need_interpreter()
    packed, scales, zeros = quantize_int4(torch.randn(24, 64), 32)
    x = torch.randn(1, 64).half()
    s, z = scales.half(), zeros.half()
    seen = []
    real = quant._launch
    monkeypatch.setattr(quant, "_launch", lambda kern, *a, **k: seen.append(kern) or real(kern, *a, **k))
    int4_matmul(x, packed, s, z, 32, half2=True)
    int4_matmul(x, packed, s, z, 32)  # INT4_HALF2_DEFAULT as committed
    committed = quant_half2._int4_h2 if quant.INT4_HALF2_DEFAULT else quant._int4_words
    monkeypatch.setattr(quant, "INT4_HALF2_DEFAULT", True)
    int4_matmul(x, packed, s, z, 32)  # the default: half2
    int4_matmul(x, packed, s, z, 32, words=True)  # asking for the word kernel gets it
    int4_matmul(x, packed, s, z, 32, half2=False)
    int4_matmul(x.float(), packed, scales, zeros, 32)  # float32 x: fp16 arithmetic would lose precision
    h2, wd = quant_half2._int4_h2, quant._int4_words
    assert seen == [h2, committed, h2, wd, wd, wd]
    for bad, match in (
        (dict(x=x.float()), "fp16/bf16 x"),
        (dict(x=torch.randn(2, 64).half()), "M == 1"),
        (dict(xres=True), "neither xres"),
        (dict(words=False), "neither xres"),
        (dict(gb=3), "power of two"),
        (dict(hacc=2), "hacc"),
    ):
        args = dict(x=x) | bad
        xx = args.pop("x")
        with pytest.raises(ValueError, match=match):
            int4_matmul(xx, packed, s, z, 32, half2=True, **args)


# Every tile the run-8 bench times, at the decode shape, in bf16 against the float64 truth.
H2_TILES = [
    (16, 1, 4, 16, 2, 0), (16, 1, 4, 16, 2, 1), (16, 1, 4, 8, 2, 0), (16, 1, 4, 8, 2, 1),
    (32, 1, 8, 16, 2, 0), (32, 1, 8, 16, 2, 1), (32, 1, 4, 8, 2, 0), (16, 1, 4, 16, 1, 0),
    (8, 1, 4, 16, 2, 0), (16, 2, 4, 8, 2, 0), (16, 1, 8, 16, 2, 0), (8, 1, 4, 8, 2, 0),
    (16, 1, 4, 8, 1, 1), (8, 1, 2, 8, 2, 1), (16, 1, 2, 8, 2, 1), (8, 1, 4, 8, 2, 1), (16, 1, 4, 4, 2, 1),
]  # fmt: skip


def test_h2_tiles_match_the_bench() -> None:
    from pretrainctl_kernels.bench_quant_h2 import H2_CANDIDATES, h2_kwargs

    assert H2_TILES == H2_CANDIDATES  # the GPU tests below cover every timed candidate
    assert tuple(quant.INT4_HALF2) in H2_TILES
    assert h2_kwargs(H2_TILES[1]) == dict(half2=True, bn=16, split_k=1, num_warps=4, gb=16, stages=2, hacc=1)


@pytest.mark.gpu
@pytest.mark.parametrize("tile", H2_TILES, ids=lambda t: "-".join(map(str, t)))
def test_int4_half2_gpu_bf16(tile: tuple) -> None:
    need_gpu()
    from pretrainctl_kernels.bench_quant_h2 import h2_kwargs

    kw = h2_kwargs(tile)
    kw.pop("half2")
    _case(4096, 128, torch.bfloat16, "cuda", N=4096, **kw)


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
