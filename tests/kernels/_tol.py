"""Shared tolerance rule for kernel tests: our error against a float64 "truth" may be at most twice
the error of the plain-torch reference computed in the test dtype, plus a small absolute term."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

# The absolute term only covers values that the low-precision reference happens to get exactly right
# (its error can be ~0 on a tiny tensor); it is two orders below a single wrong element's error.
ATOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}


def assert_close_to_truth(
    ours: Tensor, ref_lowp: Tensor, truth: Tensor, what: str = "", dtype: torch.dtype | None = None
) -> None:
    """``dtype`` picks the absolute term when ``ours`` is kept in higher precision (e.g. a float32 loss)."""
    assert ours.shape == truth.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(truth.shape)}"
    scale = max(1.0, truth.abs().max().item())
    err = (ours.double() - truth.double()).abs().max().item()
    ref_err = (ref_lowp.double() - truth.double()).abs().max().item()
    bound = 2 * ref_err + ATOL[dtype or ours.dtype] * scale
    assert err <= bound, f"{what}: error {err:.3g} > bound {bound:.3g} (reference error {ref_err:.3g})"


def need_interpreter() -> None:
    from pretrainctl_kernels import available

    if available().mode != "interpreter":
        pytest.skip("CPU interpreter tests need TRITON_INTERPRET=1")


def need_gpu() -> None:
    from pretrainctl_kernels import available

    if not torch.cuda.is_available() or available().mode != "gpu":
        pytest.skip("needs an NVIDIA GPU with compiled Triton (run pytest -m gpu in its own process)")
