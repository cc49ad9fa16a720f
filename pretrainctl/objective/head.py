"""Output head + cross-entropy per target token, whole or in chunks of tokens.

A large vocabulary makes the (N, V) float32 logits the biggest tensor of a training step (and the
softmax keeps a second copy for backward). ``head_losses`` computes, per target token, the plain
negative log-likelihood, the log-partition ``lse = logsumexp(logits)`` and the uniform-target
cross-entropy ``lse - mean(logits)`` that label smoothing mixes in. With ``chunk_size`` it runs
over ``chunk_size`` tokens at a time under activation checkpointing: forward keeps only the three
per-token vectors, and backward recomputes one chunk's logits at a time, so no more than one chunk
of logits ever exists (the Liger-Kernel idea, Hsu et al. 2024, arXiv:2410.10989, in plain torch;
``pretrainctl_kernels.losses`` is the fused Triton version). Chunked and whole give the same loss
and gradients up to float32 rounding (tests/objective/test_ar.py).

Losses built from these (``token_loss``):
- label smoothing (Szegedy et al. 2016): ``(1 - eps) * nll + eps * (lse - mean(logits))``, the
  cross-entropy against ``(1 - eps) * onehot + eps / V``, as ``F.cross_entropy(label_smoothing=eps)``;
- z-loss (PaLM, Chowdhery et al. 2022, arXiv:2204.02311; OLMo 2, arXiv:2501.00656):
  ``+ z * lse**2``, which pulls the log-partition towards 0 so the logits cannot drift upwards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial

import torch
from torch.utils.checkpoint import checkpoint

from pretrainctl.arch.base import LanguageModel


@dataclass
class HeadLosses:
    """Per target token (N,), float32."""

    nll: torch.Tensor  # -log p(target)
    lse: torch.Tensor  # log-partition logsumexp(logits)
    uniform: torch.Tensor  # cross-entropy against the uniform distribution: lse - mean(logits)


def logits_losses(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """float32 logits (n, V), targets (n,) -> nll, lse, uniform (n,) as in ``HeadLosses``."""
    lse = torch.logsumexp(logits, dim=-1)  # (n,)
    nll = lse - logits.gather(-1, targets[:, None]).squeeze(-1)
    return nll, lse, lse - logits.mean(-1)


def rows_losses(head: Callable[[torch.Tensor], torch.Tensor], hidden: torch.Tensor, targets: torch.Tensor):
    return logits_losses(head(hidden).float(), targets)  # (n, V) float32 logits


def chunked(fn: Callable[..., tuple[torch.Tensor, ...]], *rows: torch.Tensor, chunk_size: int | None):
    """``fn(*rows)`` -> tuple of (N, ...) tensors, computed over ``chunk_size`` rows at a time under
    activation checkpointing (backward recomputes one chunk at a time). None: all rows at once."""
    if chunk_size is None or chunk_size >= rows[0].shape[0]:
        return fn(*rows)
    parts = []
    for n0 in range(0, rows[0].shape[0], chunk_size):
        part = [r[n0 : n0 + chunk_size] for r in rows]
        if torch.is_grad_enabled() and any(r.requires_grad for r in part):
            parts.append(checkpoint(fn, *part, use_reentrant=False))
        else:
            parts.append(fn(*part))
    return tuple(torch.cat(cols) for cols in zip(*parts, strict=True))


def head_losses(
    head: Callable[[torch.Tensor], torch.Tensor],
    hidden: torch.Tensor,
    targets: torch.Tensor,
    chunk_size: int | None = None,
) -> HeadLosses:
    """hidden (N, D), targets (N,) -> per-token losses of ``head(hidden)`` (N, V). ``chunk_size``:
    tokens per chunk (None: all at once)."""
    return HeadLosses(*chunked(partial(rows_losses, head), hidden, targets, chunk_size=chunk_size))


def token_loss(losses: HeadLosses, z_loss: float, label_smoothing: float) -> torch.Tensor:
    """(N,) training loss per token from ``head_losses``."""
    loss = losses.nll
    if label_smoothing:
        loss = (1 - label_smoothing) * loss + label_smoothing * losses.uniform
    if z_loss:
        loss = loss + z_loss * losses.lse.square()
    return loss


@lru_cache(maxsize=1)
def _fused_kernel():
    """(linear_cross_entropy, mode) when the Triton kernels can run here, else None."""
    try:
        import pretrainctl_kernels

        status = pretrainctl_kernels.available()
        if not status.ok:
            return None
        from pretrainctl_kernels.losses import linear_cross_entropy
    except ImportError:
        return None
    return linear_cross_entropy, status.mode


def fused_head_loss(
    model: LanguageModel,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    keep: torch.Tensor,
    z_loss: float,
    chunk_size: int | None = None,
) -> torch.Tensor | None:
    """Summed ``nll + z_loss * lse**2`` over kept targets through the fused Triton linear
    cross-entropy (``chunk_size`` rows of logits at a time; None: the kernel's default), or None where
    it does not apply: the architecture's backend is not ``triton``, its head is not a plain
    ``hidden @ head_weight().T``, or the kernel cannot run on these tensors."""
    if getattr(model, "backend", "torch") != "triton" or type(model).logits is not LanguageModel.logits:
        return None
    kernel = _fused_kernel()
    if kernel is None or hidden.is_cuda != (kernel[1] == "gpu"):
        return None
    fn, _ = kernel
    ignored = torch.where(keep, targets, torch.full_like(targets, -100))
    return fn(hidden, model.head_weight(), ignored, ignore_index=-100, z_loss=z_loss, reduction="sum",
              chunk_size=chunk_size)  # fmt: skip
