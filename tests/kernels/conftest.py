"""Kernel tests. CPU runs use Triton's interpreter (TRITON_INTERPRET=1, set by tests/conftest.py).

Triton fixes interpreter-or-compiled when a kernel is defined, once per process. When this process
was asked only for GPU tests (``pytest -m gpu``) on a machine with CUDA, drop the interpreter so the
kernels compile; the interpreter tests then skip themselves."""

from __future__ import annotations

import os


def pytest_configure(config) -> None:  # noqa: ANN001 - pytest's Config
    markexpr = (config.getoption("markexpr", "") or "").replace(" ", "")
    if markexpr != "gpu":
        return
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") == "1":
        os.environ.pop("TRITON_INTERPRET")
