"""int4 decode GEMM on weights repacked into mma fragment order (quant_frag, Gluon): the repacking and its
inverse, the per-thread arithmetic (tests/kernels/frag_emulation.py) against x @ dequantize(W)^T, the
kernel's sm_90 machine code (compiled here without a GPU), and on a GPU the kernel itself."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest
import torch
from pretrainctl_kernels.quant import dequantize_int4, int4_matmul_ref, quantize_int4
from pretrainctl_kernels.quant_frag import (
    FragInt4,
    Int4Frag,
    frag_tile,
    int4_matmul_frag,
    int4_matmul_frag_ref,
    repack_int4,
    unrepack_int4,
)

from tests.kernels._tol import assert_close_to_truth, need_gpu
from tests.kernels.frag_emulation import deq_word, emulate, logical_emulate


def _weight(N: int, K: int, group: int, seed: int = 0) -> tuple:
    packed, scales, zeros = quantize_int4(
        torch.randn(N, K, generator=torch.Generator().manual_seed(seed)), group
    )
    return packed, scales.bfloat16(), zeros.bfloat16()  # the kernel's scales and zeros are bf16


def test_repack_places_every_nibble() -> None:
    N, K = 32, 128
    q = torch.randint(0, 16, (N, K), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    packed = q[:, 0::2] | (q[:, 1::2] << 4)
    w = repack_int4(packed, torch.ones(N, 2), torch.zeros(N, 2), 64)
    assert w.words.shape == (2, 2, 32, 4) and w.words.dtype == torch.int32 and w.shape == (N, K)
    words = w.words.long() & 0xFFFFFFFF
    n, k = torch.meshgrid(torch.arange(N), torch.arange(K), indexing="ij")
    # row n = 16 tile + 8 a + g, k = 64 kc + 16 t + 4 j + 2 b + e: words[tile, kc, 4 g + t, a + 2 b],
    # nibble j + 4 e
    tile, a, g = n // 16, (n // 8) % 2, n % 8
    kc, t, j, b, e = k // 64, (k // 16) % 4, (k // 4) % 4, (k // 2) % 2, k % 2
    word = words[tile, kc, 4 * g + t, a + 2 * b]
    assert torch.equal((word >> (4 * (j + 4 * e))) & 15, q.long())


@pytest.mark.parametrize("N,K,group", [(16, 64, 64), (48, 512, 128), (32, 1024, 256)])
def test_unrepack_inverts_repack(N: int, K: int, group: int) -> None:
    packed, scales, zeros = _weight(N, K, group)
    back = unrepack_int4(repack_int4(packed, scales, zeros, group))
    assert torch.equal(back[0], packed) and torch.equal(back[1], scales) and torch.equal(back[2], zeros)


def test_lop3_pairs_are_the_bf16_reference_weights() -> None:
    # The PTX unpack of every word gives, bit for bit, the weights dequantize_int4(..., bf16) gives.
    N, K, group = 16, 256, 128
    packed, scales, zeros = _weight(N, K, group, seed=1)
    ref = dequantize_int4(packed, scales, zeros, group, torch.bfloat16).float()
    w = repack_int4(packed, scales, zeros, group)
    lane = torch.arange(32)
    g, t = lane // 4, lane % 4
    for kc in range(K // 64):
        grp = kc * 64 // group
        for r in range(4):
            a, b = r % 2, r // 2
            pairs = deq_word(w.words[0, kc, :, r], w.scales2[0, grp, g, a], w.zeros2[0, grp, g, a])
            for j, (lo, hi) in enumerate(pairs):
                k = 64 * kc + 16 * t + 4 * j + 2 * b
                assert torch.equal(lo, ref[8 * a + g, k]) and torch.equal(hi, ref[8 * a + g, k + 1])


@pytest.mark.parametrize(
    "M,N,K,group,rt,nw",
    [(16, 64, 1024, 128, 2, 8), (7, 32, 512, 128, 1, 4), (1, 32, 256, 64, 2, 2), (16, 48, 512, 256, 1, 2)],
)
def test_emulated_kernel_matches_the_reference(M: int, N: int, K: int, group: int, rt: int, nw: int) -> None:
    packed, scales, zeros = _weight(N, K, group, seed=M + N)
    x = torch.randn(M, K, generator=torch.Generator().manual_seed(K)).bfloat16()
    w = repack_int4(packed, scales, zeros, group)
    ours = emulate(x, w, rt=rt, nw=nw)
    ref = x.float() @ dequantize_int4(packed, scales, zeros, group, torch.bfloat16).float().t()
    # The same bf16 products, summed in another float32 order: within float32 rounding of |x| |W|.
    bound = 1e-5 * (x.float().abs() @ dequantize_int4(packed, scales, zeros, group).float().abs().t()) + 1e-6
    assert ours.shape == (M, N) and ((ours - ref).abs() <= bound).all()


@pytest.mark.parametrize("M,N,K,group,rt,nw", [(16, 64, 1024, 128, 2, 8), (5, 48, 512, 256, 3, 2)])
def test_kernel_transliteration_matches_the_reference(
    M: int, N: int, K: int, group: int, rt: int, nw: int
) -> None:
    # The kernel's own index arithmetic, join / reshape / permute chains and pack=2 pairing, on logical
    # tensors (frag_emulation.logical_emulate).
    packed, scales, zeros = _weight(N, K, group, seed=M)
    x = torch.randn(M, K, generator=torch.Generator().manual_seed(N)).bfloat16()
    ours = logical_emulate(x, repack_int4(packed, scales, zeros, group), rt=rt, nw=nw)
    ref = x.float() @ dequantize_int4(packed, scales, zeros, group, torch.bfloat16).float().t()
    bound = 1e-5 * (x.float().abs() @ dequantize_int4(packed, scales, zeros, group).float().abs().t()) + 1e-6
    assert ours.shape == (M, N) and ((ours - ref).abs() <= bound).all()


def test_emulation_catches_a_wrong_word_order() -> None:
    # The check above can fail: words a and b swapped within each lane's 128-bit load.
    packed, scales, zeros = _weight(32, 256, 128, seed=3)
    x = torch.randn(16, 256, generator=torch.Generator().manual_seed(4)).bfloat16()
    w = repack_int4(packed, scales, zeros, 128)
    bad = FragInt4(w.words[..., [0, 2, 1, 3]].contiguous(), w.scales2, w.zeros2, 128)
    ref = x.float() @ dequantize_int4(packed, scales, zeros, 128, torch.bfloat16).float().t()
    assert (emulate(x, bad, rt=2, nw=2) - ref).abs().max() > 1e-2


def test_frag_rejects() -> None:
    packed, scales, zeros = _weight(32, 512, 128)
    w = repack_int4(packed, scales, zeros, 128)
    x = torch.randn(4, 512).bfloat16()
    for tile, xx, match in (
        (Int4Frag(), x, "on a CUDA GPU"),  # Gluon kernels have no CPU interpreter
        (Int4Frag(), torch.randn(17, 512).bfloat16(), r"M <= 16 \(got 17\)"),
        (Int4Frag(rt=4), x, "N a multiple of 16 rt nwn = 64"),
        (Int4Frag(rt=1, nwn=4), x, "N a multiple of 16 rt nwn = 64"),
        (Int4Frag(nw=8), x, "K a multiple of nw \\* group = 1024"),
        (Int4Frag(nw=2, u=3), x, "u dividing the 4 chunks per warp"),
        (Int4Frag(nw=2, d=5), x, r"2 <= d <= the 4 chunks per warp / u \(got d = 5\)"),
    ):
        with pytest.raises(ValueError, match=match):
            int4_matmul_frag(xx, w, tile)
    with pytest.raises(ValueError, match="group % 64 == 0"):
        repack_int4(*quantize_int4(torch.randn(16, 64), 32), 32)
    torch.testing.assert_close(int4_matmul_frag_ref(x, w), int4_matmul_ref(x, packed, scales, zeros, 128))


def test_frag_tile_fits_short_k() -> None:
    assert frag_tile(4096, 4096, 128) == Int4Frag()  # the measured default (BENCHMARKS.md, run 13)
    assert frag_tile(32, 512, 128) == Int4Frag(nw=4, d=2)  # 2 chunks per warp: too few for 4 sets
    assert frag_tile(32, 256, 128) == Int4Frag(nw=2, d=2)
    assert frag_tile(32, 128, 128) == Int4Frag(nw=1, d=2)
    assert frag_tile(32, 64, 64) == Int4Frag()  # nothing fits (1 chunk): the default, which says why
    assert Int4Frag().why_not(1, 32, 64, 64)


# Compiled in a child process: Triton's CPU interpreter (TRITON_INTERPRET=1, set for the whole test
# session) replaces the library functions Gluon kernels call (gl.sum's combine), so it must be off.
_REPORT = """
from pretrainctl_kernels.sass_check import frag_kernel_report
rep = frag_kernel_report()
print(rep["regs"], rep["spill_bytes"], dict(rep["loop"]))
"""


def test_frag_kernel_machine_code_sm90() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run(
        [sys.executable, "-c", _REPORT], capture_output=True, text=True, env=env, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    regs, spill, loop = run.stdout.strip().splitlines()[-1].split(" ", 2)
    loop = ast.literal_eval(loop)  # the dict of opcode counts the child printed
    assert int(spill) == 0 and int(regs) <= 128  # 128: 4 programs of 4 warps per multiprocessor
    # The main loop (d = 4 steps of one 64-k chunk of one row tile: the default tile) moves no weights
    # through shared memory: no shared stores, loads or barriers; 8 mma per chunk and row tile; the
    # unpack's 4 lop3 / 4 sub / 4 mul per word.
    assert not {"STS", "LDS", "LDSM", "BAR"} & set(loop), loop
    assert loop["HMMA"] == 32 and loop["HADD2"] == loop["HMUL2"] == 64, loop


@pytest.mark.gpu
@pytest.mark.parametrize(
    "M,group,tile",
    [
        (16, 128, Int4Frag()),
        (1, 128, Int4Frag()),
        (7, 64, Int4Frag()),
        (16, 128, Int4Frag(rt=2, nw=8, pf=True, d=2)),  # run 10's first default
        (16, 256, Int4Frag(rt=2, nw=16, pf=True, d=2)),
        (16, 128, Int4Frag(rt=1, nw=8, pf=True, d=2)),
        (16, 128, Int4Frag(rt=2, nw=8, u=2, d=2)),
        (9, 128, Int4Frag(nw=4, rt=4, pf=True, d=2)),
        (16, 128, Int4Frag(nw=8, nwn=2, d=2)),
        (3, 128, Int4Frag(nwn=2, cg=True, d=2)),
        (16, 64, Int4Frag(rt=2, nw=8, nwn=2, cg=True, d=2)),
        (16, 128, Int4Frag(nw=8, d=3)),
        (11, 128, Int4Frag(d=3)),  # 14 loading steps: a loop of 4 x 3 and 2 more
    ],
)
def test_int4_frag_gpu_bf16(M: int, group: int, tile: Int4Frag) -> None:
    need_gpu()
    N = K = 4096
    packed, scales, zeros = (t.cuda() for t in _weight(N, K, group, seed=M))
    x = torch.randn(M, K, generator=torch.Generator().manual_seed(M)).bfloat16().cuda()
    truth = int4_matmul_ref(x.double(), packed, scales.double(), zeros.double(), group)
    ours = int4_matmul_frag(x, repack_int4(packed, scales, zeros, group), tile)
    assert ours.dtype == torch.bfloat16
    assert_close_to_truth(ours, int4_matmul_ref(x, packed, scales, zeros, group), truth, f"frag M={M} {tile}")
