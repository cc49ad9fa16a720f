"""quant_frag's int4 decode GEMM with the weights staged by a cp.async ring (quant_frag_async, Gluon): its
launch checks, its sm_90 machine code (compiled here without a GPU) and on a GPU the kernel itself against
a float64 truth. The fragment arithmetic it shares with quant_frag is emulated in test_quant_frag.py."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest
import torch
from pretrainctl_kernels.quant import int4_matmul_ref
from pretrainctl_kernels.quant_frag import repack_int4
from pretrainctl_kernels.quant_frag_async import Int4FragCp, int4_matmul_frag_cp

from tests.kernels._tol import assert_close_to_truth, need_gpu
from tests.kernels.test_quant_frag import _weight


def test_frag_cp_rejects() -> None:
    w = repack_int4(*_weight(32, 512, 128), 128)
    x = torch.randn(4, 512).bfloat16()
    for tile, xx, match in (
        (Int4FragCp(), x, "on a CUDA GPU"),  # Gluon kernels have no CPU interpreter
        (Int4FragCp(), torch.randn(17, 512).bfloat16(), r"M <= 16 \(got 17\)"),
        (Int4FragCp(rt=4), x, "N a multiple of 16 rt = 64"),
        (Int4FragCp(nw=8), x, "K a multiple of nw \\* group = 1024"),
        (Int4FragCp(nw=2, s=1), x, r"s >= 2 \(got 1\)"),
        (Int4FragCp(rt=2, nw=16, s=8), x, r"a ring of <= 204800 bytes \(got 262144\)"),
        (Int4FragCp(nw=2), torch.randn(4, 256).bfloat16(), r"x of K = 512 columns"),
    ):
        with pytest.raises(ValueError, match=match):
            int4_matmul_frag_cp(xx, w, tile)


_REPORT = """
from pretrainctl_kernels.sass_check import frag_cp_kernel_report
rep = frag_cp_kernel_report()
print(rep["regs"], rep["spill_bytes"], rep["shared_bytes"], dict(rep["loop"]))
"""


def test_frag_cp_kernel_machine_code_sm90() -> None:
    # A child process without TRITON_INTERPRET (see test_quant_frag.test_frag_kernel_machine_code_sm90).
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run(
        [sys.executable, "-c", _REPORT], capture_output=True, text=True, env=env, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    regs, spill, shared, loop = run.stdout.strip().splitlines()[-1].split(" ", 3)
    loop = ast.literal_eval(loop)
    assert int(spill) == 0 and int(regs) <= 128
    assert int(shared) == Int4FragCp().smem_bytes()  # the ring is the kernel's whole shared memory
    # One 64-k chunk per iteration of the default tile (2 row tiles): its weights arrive by cp.async (2 x
    # 128-bit words, 2 x 64-bit scales, 2 x 64-bit zeros), only x is loaded into registers (2 rows x 2 x
    # 128-bit), the words come back by 128-bit shared loads and feed 16 mma through the unpack's 4 sub / 4
    # mul per word.
    assert loop["LDGSTS"] == 6 and loop["LDG"] == 4, loop
    assert loop["HMMA"] == 16 and loop["HADD2"] == loop["HMUL2"] == 32, loop


@pytest.mark.gpu
@pytest.mark.parametrize(
    "M,N,K,group,tile",
    [
        (16, 4096, 4096, 128, Int4FragCp()),
        (1, 4096, 4096, 128, Int4FragCp()),
        (7, 4096, 4096, 64, Int4FragCp(rt=1, s=4)),
        (16, 4096, 4096, 256, Int4FragCp(nw=4)),
        (9, 4096, 4096, 128, Int4FragCp(s=3)),
        (16, 4096, 4096, 128, Int4FragCp(nw=16, s=4)),
        (13, 256, 1024, 128, Int4FragCp()),  # 2 chunks per warp, fewer than the ring's 8 slots
    ],
)
def test_int4_frag_cp_gpu_bf16(M: int, N: int, K: int, group: int, tile: Int4FragCp) -> None:
    need_gpu()
    packed, scales, zeros = (t.cuda() for t in _weight(N, K, group, seed=M))
    x = torch.randn(M, K, generator=torch.Generator().manual_seed(M)).bfloat16().cuda()
    truth = int4_matmul_ref(x.double(), packed, scales.double(), zeros.double(), group)
    ours = int4_matmul_frag_cp(x, repack_int4(packed, scales, zeros, group), tile)
    assert ours.dtype == torch.bfloat16
    assert_close_to_truth(ours, int4_matmul_ref(x, packed, scales, zeros, group), truth, f"cp M={M} {tile}")
