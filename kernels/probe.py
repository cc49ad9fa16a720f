"""Backend probe: can Triton kernels run in this process, and how."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Availability:
    """What runs here. ``mode`` is "gpu" (compiled Triton), "interpreter" (TRITON_INTERPRET=1 on CPU
    tensors, for tests) or "none"; ``reason`` says why in one line."""

    mode: str
    reason: str

    @property
    def ok(self) -> bool:
        return self.mode != "none"


@lru_cache(maxsize=1)
def available() -> Availability:
    """Probe once per process; cheap when Triton is missing."""
    if importlib.util.find_spec("triton") is None:
        return Availability("none", "triton is not installed (pip install 'pretrainctl[triton]')")
    if os.environ.get("TRITON_INTERPRET") == "1":
        return Availability("interpreter", "TRITON_INTERPRET=1: kernels run through Triton's CPU interpreter")
    import torch

    if not torch.cuda.is_available():
        return Availability("none", "no CUDA GPU is visible and TRITON_INTERPRET is not set")
    name = torch.cuda.get_device_name()
    return Availability("gpu", f"Triton compiles for {name}")


@lru_cache(maxsize=1)
def fp8_available() -> Availability:
    """Whether the fp8 (e4m3) matmul runs here: it needs torch's float8_e4m3fn and either the CPU
    interpreter (which evaluates fp8 dots exactly) or a GPU with fp8 tensor cores (sm_89 Ada, sm_90
    Hopper and later)."""
    base = available()
    if not base.ok:
        return base
    import torch

    if not hasattr(torch, "float8_e4m3fn"):
        return Availability("none", f"torch {torch.__version__} has no float8_e4m3fn dtype")
    if base.mode == "interpreter":
        return Availability("interpreter", "fp8 dots run (exactly, slowly) in Triton's CPU interpreter")
    major, minor = torch.cuda.get_device_capability()
    name = torch.cuda.get_device_name()
    if (major, minor) < (8, 9):
        return Availability("none", f"{name} is sm_{major}{minor}: fp8 tensor cores need sm_89 or newer")
    return Availability("gpu", f"fp8 e4m3 tensor cores on {name} (sm_{major}{minor})")
