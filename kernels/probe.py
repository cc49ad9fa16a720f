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
