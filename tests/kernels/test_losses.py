"""linear_cross_entropy vs linear_cross_entropy_ref: loss, d hidden, d weight."""

from __future__ import annotations

import pytest
import torch
from pretrainctl_kernels.losses import linear_cross_entropy, linear_cross_entropy_ref

from tests.kernels._tol import assert_close_to_truth, need_gpu, need_interpreter

# name: (reduction, z_loss, fraction of targets ignored)
CASES = {
    "sum": ("sum", 0.0, 0.0),
    "mean_ignore": ("mean", 0.0, 0.3),
    "zloss_mean": ("mean", 1e-2, 0.1),
}


def _run(N: int, D: int, V: int, case: tuple, dtype: torch.dtype, device: str, **kw) -> None:
    reduction, z, ignored = case
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(N, D, generator=gen).to(device, dtype)
    weight = (torch.randn(V, D, generator=gen) / D**0.5).to(device, dtype)
    targets = torch.randint(0, V, (N,), generator=gen)
    targets[torch.rand(N, generator=gen) < ignored] = -100
    targets = targets.to(device)
    grad_out = 0.7  # a non-unit upstream gradient checks the backward's scaling

    def run(fn, dt, **extra):
        h, w = hidden.to(dt).requires_grad_(), weight.to(dt).requires_grad_()
        loss = fn(h, w, targets, z_loss=z, reduction=reduction, **extra)
        dh, dw = torch.autograd.grad(loss * grad_out, (h, w))
        return loss, dh, dw

    truth = run(linear_cross_entropy_ref, torch.float64)
    ref = run(linear_cross_entropy_ref, dtype)
    ours = run(linear_cross_entropy, dtype, **kw)
    assert ours[0].dtype == torch.float32
    for name, a, r, t in zip(("loss", "dhidden", "dweight"), ours, ref, truth):
        assert_close_to_truth(a, r, t, name, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("name", list(CASES))
def test_linear_ce_interpreter(name: str, dtype: torch.dtype) -> None:
    need_interpreter()
    # 37 rows in chunks of 16 (last one partial), vocabulary 301 in tiles of 128 (last one partial).
    _run(37, 24, 301, CASES[name], dtype, "cpu", chunk_size=16, block_v=128)


def test_linear_ce_under_autocast() -> None:
    """Mixed-precision training calls it with fp16 / bf16 hidden states and a float32 head weight under
    autocast: like F.linear there, both matmul operands run in the autocast dtype and the weight's
    gradient comes back in float32. Checked against the reference under the same autocast, and by
    the tests' rule against a float64 truth of the same fp16-rounded operands."""
    need_interpreter()
    gen = torch.Generator().manual_seed(3)
    hidden = torch.randn(37, 24, generator=gen).half()
    weight = torch.randn(301, 24, generator=gen) / 24**0.5  # float32, as a model's parameter
    targets = torch.randint(0, 301, (37,), generator=gen)

    def run(fn, autocast: bool, **kw):
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.float16, enabled=autocast):
            loss = fn(h, w, targets, reduction="mean", **kw)
        return (loss, *torch.autograd.grad(loss, (h, w)))

    ours = run(linear_cross_entropy, True, chunk_size=16, block_v=128)
    ref = run(linear_cross_entropy_ref, True)
    truth = run(lambda h, w, *a, **k: linear_cross_entropy_ref(h.double(), w.half().double(), *a, **k), False)
    assert (
        ours[0].dtype == torch.float32 and ours[1].dtype == torch.float16 and ours[2].dtype == torch.float32
    )
    for name, a, r, t in zip(("loss", "dhidden", "dweight"), ours, ref, truth):
        assert_close_to_truth(a, r, t, name, dtype=torch.float16)
    with pytest.raises(ValueError, match="hidden is torch.float16 but weight is torch.float32"):
        linear_cross_entropy(hidden, weight, targets)


def test_linear_ce_no_grad_path() -> None:
    need_interpreter()
    gen = torch.Generator().manual_seed(2)
    h, w = torch.randn(9, 16, generator=gen), torch.randn(33, 16, generator=gen)
    t = torch.randint(0, 33, (9,), generator=gen)
    with torch.no_grad():
        ours = linear_cross_entropy(h, w, t, reduction="mean", block_v=16)
    torch.testing.assert_close(ours, linear_cross_entropy_ref(h, w, t, reduction="mean"))


def test_linear_ce_ref_matches_torch() -> None:
    gen = torch.Generator().manual_seed(1)
    h, w = (
        torch.randn(11, 8, generator=gen, dtype=torch.float64),
        torch.randn(13, 8, generator=gen, dtype=torch.float64),
    )
    t = torch.randint(0, 13, (11,), generator=gen)
    t[3] = -100
    expect = torch.nn.functional.cross_entropy(h @ w.t(), t)
    torch.testing.assert_close(linear_cross_entropy_ref(h, w, t, reduction="mean"), expect)
    lse = torch.logsumexp(h @ w.t(), -1)
    zl = linear_cross_entropy_ref(h, w, t, reduction="sum", z_loss=0.5)
    torch.testing.assert_close(zl, torch.nn.functional.cross_entropy(h @ w.t(), t, reduction="sum")
                               + 0.5 * (lse.square() * (t != -100)).sum())  # fmt: skip


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(CASES))
def test_linear_ce_gpu_bf16(name: str) -> None:
    need_gpu()
    _run(4096, 1024, 32000, CASES[name], torch.bfloat16, "cuda", chunk_size=1024)
