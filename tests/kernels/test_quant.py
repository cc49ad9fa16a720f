"""Quantized matmuls vs their dequantize-then-matmul references; pack/unpack and rounding bounds."""

from __future__ import annotations

import pytest
import torch
from pretrainctl_kernels import quant_launch
from pretrainctl_kernels.quant import (
    Int4Bytes,
    Int4Words,
    Int4Xres,
    dequantize_int4,
    dequantize_int8,
    int4_matmul,
    int4_matmul_ref,
    int8_matmul,
    int8_matmul_ref,
    pack_int4,
    quantize_int4,
    quantize_int8,
    unpack_int4,
)

from tests.kernels._tol import assert_close_to_truth, need_gpu, need_interpreter


def test_pack_unpack_roundtrip() -> None:
    q = torch.randint(0, 16, (7, 38), generator=torch.Generator().manual_seed(0))
    packed = pack_int4(q)
    assert packed.shape == (7, 19) and packed.dtype == torch.uint8
    assert torch.equal(unpack_int4(packed), q.to(torch.uint8))
    assert packed[0, 0].item() == q[0, 0].item() | (q[0, 1].item() << 4)  # even k in the low nibble


@pytest.mark.parametrize("group", [32, 64, 128])
def test_int4_quantization_error_bound(group: int) -> None:
    w = torch.randn(40, 256, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    packed, scales, zeros = quantize_int4(w, group)
    err = (dequantize_int4(packed, scales, zeros, group) - w).abs().reshape(40, -1, group)
    # Round-to-nearest: at most half a step per group (plus float slack).
    assert (err <= scales[..., None] / 2 * (1 + 1e-9)).all()
    assert zeros.min() >= 0 and zeros.max() <= 15 and torch.equal(zeros, zeros.round())


def test_int8_quantization_error_bound() -> None:
    w = torch.randn(40, 72, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    q, scale = quantize_int8(w)
    assert q.dtype == torch.int8
    assert ((dequantize_int8(q, scale) - w).abs() <= scale[:, None] / 2 * (1 + 1e-9)).all()


def _int4_case(M: int, N: int, K: int, group: int, dtype: torch.dtype, device: str, tile=None) -> None:  # noqa: ANN001
    gen = torch.Generator().manual_seed(M + group)
    w = torch.randn(N, K, generator=gen)
    packed, scales, zeros = (t.to(device) for t in quantize_int4(w, group))
    scales = scales.to(dtype)  # dtype-rounded scales are what the kernel and the reference both see
    x = torch.randn(M, K, generator=gen).to(device, dtype)
    truth = int4_matmul_ref(x.double(), packed, scales.double(), zeros.double(), group)
    ref = int4_matmul_ref(x, packed, scales, zeros.to(dtype), group)
    ours = int4_matmul(x, packed, scales, zeros.to(dtype), group, tile=tile)
    assert ours.dtype == dtype
    assert_close_to_truth(ours, ref, truth, f"int4 M={M} group={group} {tile}")


def _int8_case(M: int, N: int, K: int, dtype: torch.dtype, device: str, **kw) -> None:
    gen = torch.Generator().manual_seed(M)
    q, scale = (t.to(device) for t in quantize_int8(torch.randn(N, K, generator=gen)))
    scale = scale.to(dtype)
    x = torch.randn(M, K, generator=gen).to(device, dtype)
    truth = int8_matmul_ref(x.double(), q, scale.double())
    ours = int8_matmul(x, q, scale, **kw)
    assert_close_to_truth(ours, int8_matmul_ref(x, q, scale), truth, f"int8 M={M}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("M,group", [(1, 32), (19, 64), (5, 128)])
def test_int4_matmul_interpreter(M: int, group: int, dtype: torch.dtype) -> None:
    need_interpreter()
    # The byte kernel (_int4_mm) at every M; decode sizes have their own kernels (tests below).
    # N=40 is not a multiple of the 32-wide column tile; M=19 spans two 16-row tiles.
    _int4_case(M, 40, 256, group, dtype, "cpu", Int4Bytes(bm=16, bn=32, bk=32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize(
    "M,K,group,kw",
    [
        (1, 256, 32, dict(vec=True)),  # float32 GEMV, every group of K in one step
        (1, 256, 32, dict(vec=False, bn=16)),  # the matrix units, 15 masked rows
        (1, 384, 128, dict(vec=True, bn=16, gb=2, split=2)),  # 3 groups: split 2's step half masked
        (1, 512, 64, dict(vec=True, bn=32, gb=1, split=3)),  # 8 groups over 3 splits: uneven, one fix-up
        (1, 256, 16, dict(vec=True, bn=8, gb=4, stages=2)),  # two words per group; a pipelined loop
        (5, 384, 128, dict(bn=32, gb=2)),  # matrix units, 3 groups in steps of 2
        (16, 256, 32, dict(bn=32, gb=2, split=3)),
        (7, 512, 128, dict(bn=16, gb=1, split=2, swap=True)),  # the product as W x^T
    ],
)
def test_int4_words_interpreter(M: int, K: int, group: int, kw: dict, dtype: torch.dtype) -> None:
    need_interpreter()
    # The word kernel (decode, M <= 16): int32 words, split-K in whole groups, M == 1 as an exactly
    # dequantized float32 GEMV (vec) or on the matrix units with codes q - z; N=40 is not a multiple of
    # any column tile.
    _int4_case(M, 40, K, group, dtype, "cpu", Int4Words(asm=False, **kw))


@pytest.mark.parametrize(
    "M,K,group,kw",
    [
        (1, 256, 32, dict(vec=False, bn=16, gb=2)),
        (5, 384, 128, dict(bn=32, gb=2, split=2)),
        (16, 512, 64, dict(bn=16, gb=1, split=3, swap=True)),
    ],
)
def test_int4_words_zero_point_factored_interpreter(M: int, K: int, group: int, kw: dict) -> None:
    need_interpreter()
    # Codes 128 + q (what the PTX unpacking makes on a GPU, here in plain Triton) with the zero point
    # taken out of each group's sum. Float32 keeps only ~2**-16 of that difference of two large sums,
    # so the test is in fp16, where the reference's own rounding is the larger error.
    _int4_case(M, 40, K, group, torch.float16, "cpu", Int4Words(asm=True, **kw))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize(
    "K,group,kw",
    [
        (256, 32, dict()),  # Int4Xres's default tile: two register buffers, zero point per element
        (256, 32, dict(zin=False, bn=16, rows=4)),  # zero point out of the sum: s (sum q x - z sum x)
        (384, 128, dict(bn=8, rows=4, split=2)),  # 3 groups over 2 splits: one masked group, fix-up
        (512, 64, dict(bn=32, rows=8, split=3, stages=1, zin=False)),  # uneven splits, no prefetch
        (256, 16, dict(bn=8, rows=8, stages=2)),  # one step per program: the second buffer masked off
        (512, 128, dict(bn=16, rows=2, stages=3)),  # one loop-carried buffer
    ],
)
def test_int4_xres_interpreter(K: int, group: int, kw: dict, dtype: torch.dtype) -> None:
    need_interpreter()
    # M == 1 GEMV with x loaded once per program (quant_gemv): N=40 is not a multiple of any row tile, so
    # the last program's rows are part masked, and its prefetch past them must write nothing.
    _int4_case(1, 40, K, group, dtype, "cpu", Int4Xres(**kw))


def test_int4_xres_rejects() -> None:
    packed, scales, zeros = quantize_int4(torch.randn(24, 64), 32)
    with pytest.raises(ValueError, match=r"Int4Xres\(.*\) needs M == 1 \(got 2\)"):
        int4_matmul(torch.randn(2, 64), packed, scales, zeros, 32, tile=Int4Xres())
    with pytest.raises(ValueError, match="powers of two"):
        int4_matmul(torch.randn(1, 64), packed, scales, zeros, 32, tile=Int4Xres(bn=16, rows=32))


def test_int4_words_edge_cases() -> None:
    need_interpreter()
    packed, scales, zeros = quantize_int4(torch.randn(24, 64), 32)
    # Zero tokens: an empty (0, N) result, nothing launched.
    assert int4_matmul(torch.randn(0, 64), packed, scales, zeros, 32).shape == (0, 24)
    # A packed weight that cannot be read as int32 words in place (a column slice) is copied first.
    wide = torch.cat([packed, packed], 1)[:, 1 : 1 + packed.shape[1]]
    x = torch.randn(1, 64)
    ref = int4_matmul_ref(x, wide, scales, zeros, 32)
    torch.testing.assert_close(int4_matmul(x, wide, scales, zeros, 32), ref, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="gb a power of two"):
        int4_matmul(x, packed, scales, zeros, 32, tile=Int4Words(gb=3))
    p48, s48, z48 = quantize_int4(torch.randn(24, 96), 48)  # group / 8 = 6: no word kernel
    with pytest.raises(ValueError, match="power of two"):
        int4_matmul(torch.randn(1, 96), p48, s48, z48, 48, tile=Int4Words())


@pytest.mark.parametrize("join,split_k", [(True, 1), (True, 3), (False, 1)])
def test_int4_matmul_unpacking_interpreter(join: bool, split_k: int) -> None:
    need_interpreter()
    # Both unpackings of the byte kernel's matrix-unit path: re-interleaved into one full-depth dot, or
    # two half-depth dots over the even and odd k.
    tile = Int4Bytes(bm=16, bn=32, bk=32, split=split_k, join=join)
    _int4_case(19, 40, 256, 64, torch.float16, "cpu", tile)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("M", [1, 19])
def test_int8_matmul_interpreter(M: int, dtype: torch.dtype) -> None:
    need_interpreter()
    _int8_case(M, 40, 72, dtype, "cpu", bm=16, bn=32, bk=64)  # K=72: a partial reduction tile


@pytest.mark.parametrize("M", [1, 5])
def test_quant_matmul_split_k_interpreter(M: int) -> None:
    need_interpreter()
    # Split-K with uneven shares (8 int4 tiles over 3 programs; K=72 int8 over 2) and the float32
    # partial sum; M=1 takes the vector (GEMV) path, M=5 the matrix-unit path.
    _int4_case(M, 40, 256, 64, torch.float16, "cpu", Int4Bytes(bn=32, bk=32, split=3))
    _int4_case(M, 40, 256, 64, torch.float16, "cpu", Int4Words(bn=32, gb=1, split=3))
    _int8_case(M, 40, 72, torch.float16, "cpu", bn=32, bk=32, split_k=3)
    # One launch: the last split of each tile writes the output and leaves the shared float32
    # workspace and the arrival counters zeroed, so the next call (any shape) starts clean.
    ws, cnt = quant_launch._WS[torch.device("cpu")]
    assert ws.abs().max().item() == 0.0 and cnt.abs().max().item() == 0


@pytest.mark.gpu
@pytest.mark.parametrize("M", [1, 16, 300])
@pytest.mark.parametrize("group", [32, 128])
def test_int4_matmul_gpu_bf16(M: int, group: int) -> None:
    need_gpu()
    _int4_case(M, 4096, 4096, group, torch.bfloat16, "cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("M", [16, 300])
def test_int4_matmul_two_dot_unpacking_gpu_bf16(M: int) -> None:
    need_gpu()
    _int4_case(M, 4096, 4096, 128, torch.bfloat16, "cuda", Int4Bytes(join=False))


@pytest.mark.gpu
@pytest.mark.parametrize(
    "M,tile",
    [
        (1, Int4Bytes()),  # the byte kernel's GEMV
        (16, Int4Bytes()),
        (1, Int4Words(vec=True, bn=64, gb=4, split=8)),  # float32 GEMV with the split-K fix-up
        (1, Int4Words(vec=False, asm=True, swap=True)),  # matrix units, PTX codes, wgmma
        (1, Int4Words(vec=False, asm=True, swap=False, bn=128, split=4)),  # mma.sync
        (16, Int4Words(asm=True, swap=False)),
        (16, Int4Words(asm=True, swap=True, bn=128, gb=2, split=2, stages=2)),
        (16, Int4Words(asm=False, swap=True)),  # codes q - z
        (9, Int4Words(asm=True, gb=2, split=3, stages=3)),
        (1, Int4Words(vec=True, bn=32, warps=8, gb=16, stages=2)),  # other float32 GEMV tiles
        (1, Int4Words(vec=True, bn=8, warps=4, gb=16, stages=2)),
        (1, Int4Words(vec=True, bn=16, warps=4, gb=8, stages=2)),
        (1, Int4Words(vec=True, bn=8, warps=2, gb=16, stages=2)),
        (1, Int4Words(vec=True, bn=16, warps=4, gb=32, stages=1)),
    ],
)
def test_int4_decode_variants_gpu_bf16(M: int, tile: object) -> None:
    need_gpu()
    _int4_case(M, 4096, 4096, 128, torch.bfloat16, "cuda", tile)


@pytest.mark.gpu
@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(zin=False),
        dict(bn=8, rows=4),
        dict(bn=16, rows=2),
        dict(bn=32, rows=4, warps=8),
        dict(bn=16, rows=4, stages=3, zin=False),
        dict(bn=16, rows=4, stages=1),
        dict(bn=32, rows=4, split=2),
        dict(bn=64, rows=8, split=4),
    ],
)
def test_int4_xres_gpu_bf16(kw: dict) -> None:
    need_gpu()
    _int4_case(1, 4096, 4096, 128, torch.bfloat16, "cuda", Int4Xres(**kw))


@pytest.mark.gpu
@pytest.mark.parametrize("M", [1, 300])
def test_int8_matmul_gpu_bf16(M: int) -> None:
    need_gpu()
    _int8_case(M, 4096, 4096, torch.bfloat16, "cuda")
