"""RMSNorm, RoPE and SwiGLU kernels vs their plain-torch references, forward and backward."""

from __future__ import annotations

import pytest
import torch
from pretrainctl_kernels.norms import apply_rope, apply_rope_ref, rms_norm, rms_norm_ref, swiglu, swiglu_ref

from tests.kernels._tol import assert_close_to_truth, need_gpu, need_interpreter

DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])


def _check(fn, ref, inputs: list[torch.Tensor], grad_in: list[bool], dtype: torch.dtype, **kw) -> None:
    def run(f, dt, **extra):
        xs = [t.to(dt).requires_grad_(r) for t, r in zip(inputs, grad_in)]
        out = f(*xs, **extra)
        g = torch.randn(out.shape, generator=torch.Generator().manual_seed(7)).to(out.device, dt)
        return (out, *torch.autograd.grad(out, [x for x in xs if x.requires_grad], g))

    truth, low, ours = run(ref, torch.float64), run(ref, dtype), run(fn, dtype, **kw)
    for i, (a, r, t) in enumerate(zip(ours, low, truth)):
        assert_close_to_truth(a, r, t, f"output {i}")


@DTYPES
def test_rms_norm_interpreter(dtype: torch.dtype) -> None:
    need_interpreter()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 13, 40, generator=gen)  # 39 rows in programs of 16: the last one partial
    w = 1 + 0.1 * torch.randn(40, generator=gen)
    _check(rms_norm, rms_norm_ref, [x, w], [True, True], dtype)


@DTYPES
def test_rope_interpreter(dtype: torch.dtype) -> None:
    need_interpreter()
    gen = torch.Generator().manual_seed(1)
    B, T, H, D = 2, 11, 3, 24
    ang = torch.arange(T)[:, None] * (10000 ** (-torch.arange(D // 2) / (D // 2)))[None, :]
    qkv = torch.randn(B, T, 3 * H, D, generator=gen)
    x = qkv[:, :, H : 2 * H]  # a strided view, as RoPE is applied to a slice of fused QKV
    _check(lambda x: apply_rope(x, ang.cos(), ang.sin()), lambda x: apply_rope_ref(x, ang.cos(), ang.sin()),
           [x], [True], dtype)  # fmt: skip


@DTYPES
def test_swiglu_interpreter(dtype: torch.dtype) -> None:
    need_interpreter()
    gen = torch.Generator().manual_seed(2)
    a, b = torch.randn(7, 45, generator=gen) * 3, torch.randn(7, 45, generator=gen)
    _check(swiglu, swiglu_ref, [a, b], [True, True], dtype, block=128)  # 315 elements: 3 blocks


@pytest.mark.gpu
def test_norms_gpu_bf16() -> None:
    need_gpu()
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 1024, 2048, generator=gen).cuda()
    w = (1 + 0.1 * torch.randn(2048, generator=gen)).cuda()
    _check(rms_norm, rms_norm_ref, [x, w], [True, True], torch.bfloat16)
    a, b = torch.randn(4096, 1000, generator=gen).cuda(), torch.randn(4096, 1000, generator=gen).cuda()
    _check(swiglu, swiglu_ref, [a, b], [True, True], torch.bfloat16)
    T, D = 1024, 128
    ang = (torch.arange(T)[:, None] * (10000 ** (-torch.arange(D // 2) / (D // 2)))[None, :]).cuda()
    x = torch.randn(2, T, 8, D, generator=gen).cuda()
    _check(lambda x: apply_rope(x, ang.cos(), ang.sin()), lambda x: apply_rope_ref(x, ang.cos(), ang.sin()),
           [x], [True], torch.bfloat16)  # fmt: skip
