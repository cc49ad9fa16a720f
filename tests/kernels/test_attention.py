"""attention vs attention_ref, forward and backward: interpreter (fp32/fp16) and GPU (bf16)."""

from __future__ import annotations

import pytest
import torch
from pretrainctl_kernels.attention import AttentionBlocks, attention, attention_ref

from tests.kernels._tol import assert_close_to_truth, need_gpu, need_interpreter

# (B, T, Hq, Hkv, Dqk, Dv, causal, window, softcap): odd lengths and head dims, none a block multiple.
CASES = {
    "causal_gqa": (1, 37, 4, 2, 24, 24, True, None, None),
    "bidir_mqa_mla_dims": (2, 29, 2, 1, 40, 24, False, None, None),
    "window_short": (1, 45, 2, 2, 24, 16, True, 5, None),
    "window_long": (1, 45, 2, 1, 16, 24, True, 33, None),
    "softcap_causal": (1, 37, 2, 1, 24, 40, True, None, 3.0),
    "softcap_bidir": (1, 21, 1, 1, 24, 24, False, None, 2.0),
}


def _run(case: tuple, dtype: torch.dtype, device: str, blocks: AttentionBlocks | None) -> None:
    B, T, HQ, HKV, DQK, DV, causal, window, cap = case
    gen = torch.Generator().manual_seed(0)
    mk = lambda *s: torch.randn(*s, generator=gen).to(device=device, dtype=dtype)
    q, k, v = mk(B, T, HQ, DQK), mk(B, T, HKV, DQK), mk(B, T, HKV, DV)
    do = mk(B, T, HQ, DV)
    kw = dict(causal=causal, window=window, softcap=cap)

    def fwd_bwd(fn, dt, **extra):
        xs = [x.to(dt).requires_grad_() for x in (q, k, v)]
        out = fn(*xs, **kw, **extra)
        return (out, *torch.autograd.grad(out, xs, do.to(dt)))

    truth = fwd_bwd(attention_ref, torch.float64)
    ref = fwd_bwd(attention_ref, dtype)
    ours = fwd_bwd(attention, dtype, blocks=blocks)
    for name, a, r, t in zip(("out", "dq", "dk", "dv"), ours, ref, truth):
        assert a.dtype == dtype
        assert_close_to_truth(a, r, t, name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("name", list(CASES))
def test_attention_interpreter(name: str, dtype: torch.dtype) -> None:
    need_interpreter()
    # BM 32 / BN 16 (and BDQK >= 16) keeps the interpreter quick while T=37 still spans two query
    # blocks and three key blocks, so the masked edges and the unmasked interior are both exercised.
    _run(CASES[name], dtype, "cpu", AttentionBlocks(bm=32, bn=16))


@pytest.mark.parametrize("bm,bn", [(16, 32), (16, 16)])
def test_attention_block_shapes(bm: int, bn: int) -> None:
    need_interpreter()
    _run((1, 53, 2, 1, 16, 16, True, 19, None), torch.float32, "cpu", AttentionBlocks(bm=bm, bn=bn))


def test_attention_rejects_bad_args() -> None:
    q = torch.zeros(1, 4, 3, 16)
    k = torch.zeros(1, 4, 2, 16)
    with pytest.raises(ValueError, match="multiple"):
        attention_ref(q, k, k, causal=True)
    with pytest.raises(ValueError, match="window"):
        attention_ref(q, q, q, causal=False, window=4)


def test_attention_ref_matches_sdpa() -> None:
    # The reference itself is checked against torch's SDPA (its math path) for the plain cases.
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 19, 4, 16, generator=gen, dtype=torch.float64) for _ in range(3))
    for causal in (True, False):
        sdpa = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal
        ).transpose(1, 2)
        torch.testing.assert_close(attention_ref(q, k, v, causal=causal), sdpa)


GPU_CASES = {
    "causal_d128": (2, 1024, 8, 8, 128, 128, True, None, None),
    "gqa_d64_bidir": (2, 1000, 8, 2, 64, 64, False, None, None),
    "mla_192_128": (1, 1024, 8, 8, 192, 128, True, None, None),
    "window_softcap": (2, 1031, 8, 4, 128, 128, True, 256, 30.0),
}


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(GPU_CASES))
def test_attention_gpu_bf16(name: str) -> None:
    need_gpu()
    _run(GPU_CASES[name], torch.bfloat16, "cuda", None)
