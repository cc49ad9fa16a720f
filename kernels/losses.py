"""Fused linear cross-entropy: output-head matmul + cross-entropy (+ z-loss) without full logits.

The (N, V) logits of a large-vocabulary head dominate training memory (16k tokens x 128k vocab is
4 GiB in bf16 before the float32 copies an unfused loss makes). Following Liger-Kernel's fused linear
cross-entropy (Hsu et al. 2024, arXiv:2410.10989), rows are processed in chunks: per chunk the logits
are computed with one cuBLAS matmul, a Triton kernel turns them *in place* into the gradient of the
loss with respect to the logits (online log-sum-exp over the vocabulary, float32 math), and two more
matmuls fold that into the gradients of the hidden states and the head weight. All gradient work is
done in the forward pass, so the backward only scales by the incoming gradient, and at no time does
more than one chunk of logits exist.

z-loss (PaLM, Chowdhery et al. 2022, arXiv:2204.02311) adds ``z_loss * logsumexp(logits)**2`` per
target token; its gradient is ``2 * z_loss * lse * softmax``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["linear_cross_entropy", "linear_cross_entropy_ref"]

# Default chunk: ~2^28 logits (512 MiB in bf16), i.e. 2048 rows for a 128k vocabulary. Fewer, larger
# chunks keep the head matmuls efficient and cut the passes over the float32 weight-gradient buffer.
CHUNK_ELEMENTS = 1 << 28


# fmt: off
@triton.jit
def _ce_rows(LOGITS, stride_row, TARGETS, LOSS, LSE, V, ignore_index, z_loss, grad_scale,
             BLOCK_V: tl.constexpr, WRITE_GRAD: tl.constexpr):
    """One program per row: loss (and z-loss), then d(loss)/d(logits) written over the logits."""
    row = tl.program_id(0).to(tl.int64)
    ptr = LOGITS + row * stride_row
    target = tl.load(TARGETS + row)
    valid = target != ignore_index
    offs = tl.arange(0, BLOCK_V)
    # Pass 1: online max / sum-of-exp over the vocabulary, float32 (Milakov & Gimelshein 2018).
    m = tl.full([BLOCK_V], float("-inf"), dtype=tl.float32)
    s = tl.zeros([BLOCK_V], dtype=tl.float32)
    for v0 in range(0, V, BLOCK_V):
        x = tl.load(ptr + v0 + offs, mask=v0 + offs < V, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, x)
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        s = s * tl.exp(m - m_safe) + tl.exp(x - m_safe)
        m = m_new
    m_row = tl.max(m, 0)
    lse = m_row + tl.log(tl.sum(s * tl.exp(m - m_row), 0))
    x_target = tl.load(ptr + target, mask=valid, other=0.0).to(tl.float32)
    loss = tl.where(valid, lse - x_target + z_loss * lse * lse, 0.0)
    tl.store(LOSS + row, loss)
    tl.store(LSE + row, lse)
    if WRITE_GRAD:
        # Pass 2: grad = (softmax * (1 + 2 z lse) - onehot(target)) * grad_scale; zero for ignored rows.
        coef = tl.where(valid, grad_scale, 0.0)
        for v0 in range(0, V, BLOCK_V):
            mask = v0 + offs < V
            x = tl.load(ptr + v0 + offs, mask=mask, other=0.0).to(tl.float32)
            g = tl.exp(x - lse) * (1.0 + 2.0 * z_loss * lse) - tl.where(v0 + offs == target, 1.0, 0.0)
            tl.store(ptr + v0 + offs, (g * coef).to(LOGITS.dtype.element_ty), mask=mask)
# fmt: on


def _ce_chunk(
    logits: Tensor,
    targets: Tensor,
    ignore_index: int,
    z_loss: float,
    grad_scale: float,
    write_grad: bool,
    block_v: int | None,
) -> Tensor:
    """Loss per row (float32) of a logits chunk (C, V); overwrites ``logits`` with its gradient."""
    C, V = logits.shape
    loss = torch.empty(C, device=logits.device, dtype=torch.float32)
    lse = torch.empty_like(loss)
    bv = block_v or min(4096, triton.next_power_of_2(V))
    _ce_rows[(C,)](logits, logits.stride(0), targets, loss, lse, V, ignore_index, z_loss, grad_scale,
                   BLOCK_V=bv, WRITE_GRAD=write_grad, num_warps=8 if bv >= 2048 else 4)  # fmt: skip
    return loss


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, targets: Tensor, ignore_index: int, z_loss: float,
                reduction: str, chunk_size: int | None, block_v: int | None) -> Tensor:  # fmt: skip
        N, D = hidden.shape  # (N, D)
        V = weight.shape[0]  # weight (V, D)
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        write_grad = need_h or need_w
        n_valid = int((targets != ignore_index).sum().item()) if reduction == "mean" else 1
        grad_scale = 1.0 / max(n_valid, 1) if reduction == "mean" else 1.0
        chunk = chunk_size or max(1, min(N, CHUNK_ELEMENTS // V))
        hidden, weight, targets = hidden.contiguous(), weight.contiguous(), targets.contiguous()
        total = torch.zeros((), device=hidden.device, dtype=torch.float32)
        grad_h = torch.empty_like(hidden) if need_h else None  # (N, D)
        # float32 accumulator across chunks: summing low-precision partial products would round once
        # per chunk instead of once overall.
        grad_w = torch.zeros(V, D, device=weight.device, dtype=torch.float32) if need_w else None
        for n0 in range(0, N, chunk):
            h = hidden[n0 : n0 + chunk]  # (C, D)
            logits = h @ weight.t()  # (C, V), input dtype; becomes d loss / d logits in place
            total += _ce_chunk(logits, targets[n0 : n0 + chunk], ignore_index, z_loss, grad_scale,
                               write_grad, block_v).sum()  # fmt: skip
            if grad_h is not None:
                torch.mm(logits, weight, out=grad_h[n0 : n0 + chunk])  # (C, D)
            if grad_w is not None:
                if weight.dtype == torch.float32:
                    grad_w.addmm_(logits.t(), h)
                else:
                    grad_w += logits.t() @ h  # (V, D)
            del logits
        ctx.save_for_backward(grad_h, None if grad_w is None else grad_w.to(weight.dtype))
        return total * grad_scale

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        grad_h, grad_w = ctx.saved_tensors
        g = grad_out.float()
        dh = None if grad_h is None else (grad_h * g).to(grad_h.dtype)
        dw = None if grad_w is None else (grad_w * g).to(grad_w.dtype)
        return dh, dw, None, None, None, None, None, None


def _check(hidden: Tensor, weight: Tensor, targets: Tensor, reduction: str) -> None:
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"linear_cross_entropy: hidden {tuple(hidden.shape)} and weight "
                         f"{tuple(weight.shape)} must be (N, D) and (V, D)")  # fmt: skip
    if targets.shape != hidden.shape[:1]:
        raise ValueError(f"linear_cross_entropy: targets {tuple(targets.shape)} must be (N,)")
    if reduction not in ("sum", "mean"):
        raise ValueError(f"linear_cross_entropy: reduction={reduction!r}; choose 'sum' or 'mean'")


def linear_cross_entropy(hidden: Tensor, weight: Tensor, targets: Tensor, *, ignore_index: int = -100,
                         z_loss: float = 0.0, reduction: str = "sum", chunk_size: int | None = None,
                         block_v: int | None = None) -> Tensor:  # fmt: skip
    """Cross-entropy of ``hidden @ weight.T`` against ``targets`` without materialising all logits.

    hidden (N, D), weight (V, D), targets (N,) int64. Returns a float32 scalar: the sum (or mean over
    non-ignored targets) of ``lse - logit[target] + z_loss * lse**2``. ``chunk_size`` rows of logits
    exist at a time (default: ~2^28 logits); ``block_v`` is the kernel's vocabulary tile.

    Under autocast (mixed-precision training: bf16 hidden states, float32 head weight) both operands are
    cast to the autocast dtype first, as ``F.linear`` would cast them, and each gradient comes back in its
    input's dtype; outside autocast hidden and weight must share a dtype."""
    _check(hidden, weight, targets, reduction)
    dev = hidden.device.type
    if torch.is_autocast_enabled(dev):
        dt = torch.get_autocast_dtype(dev)
        hidden, weight = hidden.to(dt), weight.to(dt)  # differentiable casts: float32 grads stay float32
    if hidden.dtype != weight.dtype:
        raise ValueError(f"linear_cross_entropy: hidden is {hidden.dtype} but weight is {weight.dtype}; "
                         "cast one, or call it under torch.autocast")  # fmt: skip
    with torch.autocast(dev, enabled=False):  # the matmuls inside must not re-cast the chunk tensors
        return _LinearCrossEntropy.apply(hidden, weight, targets, ignore_index, float(z_loss), reduction,
                                         chunk_size, block_v)  # fmt: skip


def linear_cross_entropy_ref(hidden: Tensor, weight: Tensor, targets: Tensor, *, ignore_index: int = -100,
                             z_loss: float = 0.0, reduction: str = "sum") -> Tensor:  # fmt: skip
    """Plain-torch twin: full logits in the input dtype, loss math in float32."""
    _check(hidden, weight, targets, reduction)
    logits = hidden @ weight.t()  # (N, V)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    valid = targets != ignore_index
    loss = F.cross_entropy(logits, targets, ignore_index=ignore_index, reduction="sum")
    if z_loss:
        lse = torch.logsumexp(logits, dim=-1)
        loss = loss + z_loss * (lse.square() * valid).sum()
    if reduction == "mean":
        loss = loss / valid.sum().clamp(min=1)
    return loss
