"""Compute backends for the attention and MoE front-ends: ``torch`` (runs anywhere) or ``triton``
(the ``pretrainctl_kernels`` package). Parameters and checkpoints are identical under both, so a
checkpoint trained with one loads and runs with the other.

When Triton cannot run here, ``triton`` falls back to torch with a one-line notice. Calls the kernels
do not cover (cached decoding with more keys than queries, a bidirectional window, MoE capacity
dropping) take the torch path call by call.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import lru_cache

import torch

from pretrainctl.arch.layers import attend
from pretrainctl.errors import UserError

BACKENDS = ("torch", "triton")
AttendFn = Callable[..., torch.Tensor]


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise UserError(f"arch.backend={backend!r} is not a backend; the choices are: {', '.join(BACKENDS)}.")


@lru_cache(maxsize=1)
def _kernels():
    """The kernels package when Triton can run in this process, else None (with a notice, once)."""
    try:
        import pretrainctl_kernels
    except ImportError as exc:  # pragma: no cover - the package ships with pretrainctl
        print(f"pretrainctl: arch.backend=triton unavailable ({exc}); using torch", file=sys.stderr)
        return None
    status = pretrainctl_kernels.available()
    if not status.ok:
        print(f"pretrainctl: arch.backend=triton unavailable ({status.reason}); using torch", file=sys.stderr)
        return None
    from pretrainctl_kernels import attention as attention_kernels
    from pretrainctl_kernels import moe as moe_kernels

    return attention_kernels, moe_kernels, status.mode


def _runs_here(t: torch.Tensor, mode: str) -> bool:
    # Compiled Triton needs CUDA tensors; the interpreter (tests) runs on CPU tensors.
    return t.is_cuda if mode == "gpu" else not t.is_cuda


def triton_attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    window: int | None = None,
    softcap: float | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """``layers.attend`` through the Triton flash-attention kernel where it applies."""
    kernels = _kernels()
    covered = kernels is not None and q.shape[1] == k.shape[1] and (window is None or causal)
    if not covered or not _runs_here(q, kernels[2]):
        return attend(q, k, v, causal=causal, window=window, softcap=softcap, scale=scale)
    return kernels[0].attention(q, k, v, causal=causal, window=window, softcap=softcap, scale=scale)


def attention_fn(backend: str) -> AttendFn:
    check_backend(backend)
    return triton_attend if backend == "triton" and _kernels() is not None else attend


def moe_fn(backend: str, torch_fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """The routed-expert FFN: ``torch_fn`` (the arch's torch path) or the Triton grouped kernels."""
    check_backend(backend)
    kernels = _kernels() if backend == "triton" else None
    if kernels is None:
        return torch_fn

    def triton_moe(x, expert_idx, expert_weight, w_gate, w_up, w_down, *, keep=None, **kw):
        if keep is not None or not _runs_here(x, kernels[2]):  # capacity dropping: torch path
            return torch_fn(x, expert_idx, expert_weight, w_gate, w_up, w_down, keep=keep, **kw)
        return kernels[1].moe_ffn(x, expert_idx, expert_weight, w_gate, w_up, w_down)

    return triton_moe
