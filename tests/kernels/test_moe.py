"""moe_ffn (grouped Triton GEMMs) vs moe_ffn_ref (per-expert loop), forward and backward."""

from __future__ import annotations

import pytest
import torch
from pretrainctl_kernels.moe import MoEBlocks, grouped_matmul, moe_ffn, moe_ffn_ref, moe_permute

from tests.kernels._tol import assert_close_to_truth, need_gpu, need_interpreter


def _run(N: int, D: int, H: int, E: int, k: int, dtype: torch.dtype, device: str, blocks: MoEBlocks | None,
         empty: int = 2) -> None:  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    # The last `empty` experts are never chosen: they must get zero output and zero weight gradient.
    idx = torch.stack([torch.randperm(E - empty, generator=gen)[:k] for _ in range(N)]).to(device)
    mk = lambda *s, scale=1.0: (torch.randn(*s, generator=gen) * scale).to(device, dtype)
    inputs = (mk(N, D), torch.rand(N, k, generator=gen).to(device, dtype), mk(E, D, H, scale=D**-0.5),
              mk(E, D, H, scale=D**-0.5), mk(E, H, D, scale=H**-0.5))  # fmt: skip
    d_out = mk(N, D)

    def run(fn, dt, **extra):
        xs = [t.to(dt).requires_grad_() for t in inputs]
        out = fn(xs[0], idx, xs[1], *xs[2:], **extra)
        return (out, *torch.autograd.grad(out, xs, d_out.to(dt)))

    truth = run(moe_ffn_ref, torch.float64)
    ref = run(moe_ffn_ref, dtype)
    ours = run(moe_ffn, dtype, blocks=blocks)
    names = ("out", "dx", "d_expert_weight", "dw_gate", "dw_up", "dw_down")
    for name, a, r, t in zip(names, ours, ref, truth):
        assert a.dtype == dtype
        assert_close_to_truth(a, r, t, name)
    for g in ours[3:]:
        assert g[E - empty :].abs().max().item() == 0.0, "an expert without tokens got a gradient"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_moe_ffn_interpreter(dtype: torch.dtype) -> None:
    need_interpreter()
    # 37 tokens x top-2 over 7 experts (2 unused): segments of ~10-20 rows in 16-row tiles, D=24 and
    # H=40 not multiples of the 64-wide column / 32-deep reduction tiles.
    _run(37, 24, 40, 7, 2, dtype, "cpu", MoEBlocks(bm=16, bn=64, bk=32))


def test_moe_permute() -> None:
    idx = torch.tensor([[2, 0], [2, 3], [0, 2]])
    order, offsets = moe_permute(idx, num_experts=5)
    assert offsets.tolist() == [0, 2, 2, 5, 6, 6]
    assert idx.reshape(-1)[order].tolist() == [0, 0, 2, 2, 2, 3]
    assert (order // 2).tolist() == [0, 2, 0, 1, 2, 1]  # stable: token order kept inside an expert


def test_moe_blocks_stages_fit_shared_memory() -> None:
    blocks = MoEBlocks(bm=128, bn=128, bk=64, num_stages=3)
    assert blocks.stages(2 * 128 * 64 * 2 + 2 * 64 * 128 * 2) == 3  # bf16, dual operands: 3 x 64 KiB fit
    assert blocks.stages(2 * 128 * 64 * 4 + 2 * 64 * 128 * 4) == 1  # float32: 128 KiB per stage


def test_grouped_matmul_all_rows_one_expert() -> None:
    need_interpreter()
    gen = torch.Generator().manual_seed(3)
    a, w = torch.randn(19, 24, generator=gen), torch.randn(3, 24, 40, generator=gen)
    offsets = torch.tensor([0, 0, 19, 19], dtype=torch.int32)
    out = grouped_matmul(a, offsets, w, MoEBlocks(bm=16, bn=32, bk=32))
    torch.testing.assert_close(out, a @ w[1])


@pytest.mark.gpu
def test_moe_ffn_gpu_bf16() -> None:
    need_gpu()
    _run(4096, 1024, 512, 64, 6, torch.bfloat16, "cuda", None, empty=3)
