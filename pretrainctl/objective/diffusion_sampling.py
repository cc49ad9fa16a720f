"""Sampling from a masked diffusion model: LLaDA's reverse process (Nie et al. 2025, arXiv:2502.09992,
§2.4 and Appendix B.3) with semi-autoregressive blocks and low-confidence remasking.

The new tokens start as MASK after the prompt. They are denoised block by block, left to right
(``block_length`` tokens per block); within a block, each of its steps predicts every masked position
at once with bidirectional attention, and commits a fixed number of those predictions: the most
confident ones (``low_confidence`` remasking: the least confident stay masked) or random ones
(``random``, the plain reverse process). After ``steps`` model calls in total no MASK is left.
"""

from __future__ import annotations

import math

import torch

from pretrainctl.arch.base import LanguageModel
from pretrainctl.errors import UserError
from pretrainctl.objective.sampling import pick_token

REMASKING = ("low_confidence", "random")


def tokens_per_step(length: int, steps: int) -> list[int]:
    """Split ``length`` tokens over ``steps`` steps as evenly as possible (LLaDA's schedule of
    transfers: the linear noise schedule unmasks the same expected number at each step)."""
    base, extra = divmod(length, steps)
    return [base + (1 if i < extra else 0) for i in range(steps)]


def sample_masked_diffusion(
    model: LanguageModel, prompt: torch.Tensor, mask_id: int, *, max_new_tokens: int, steps: int,
    block_length: int, remasking: str, temperature: float, top_k: int | None, generator: torch.Generator,
    max_context: int, stop_id: int | None = None, shift: bool = False,
) -> torch.Tensor:  # fmt: skip
    """prompt (1, T) -> (1, T' + n) ids, T' <= T. The prompt keeps its last ``max_context - n`` tokens
    (the model attends over prompt and new tokens together); the output stops after the first
    ``stop_id`` among the new tokens, and blocks after it are not computed. ``shift``: position i's
    prediction is the output at i - 1 (the objective's ``shift``; the prompt must not be empty)."""
    n = max_new_tokens
    if steps < 1 or block_length < 1:
        raise UserError(f"diffusion.steps={steps} and diffusion.block_length={block_length} must be >= 1.")
    if remasking not in REMASKING:
        raise UserError(f"diffusion.remasking={remasking!r}; choose one of: {', '.join(REMASKING)}.")
    if n >= max_context:
        raise UserError(
            f"max_new_tokens={n} must be below the run's context of {max_context} tokens: a diffusion "
            "model denoises all new tokens together with the prompt."
        )
    prompt = prompt[:, -(max_context - n) :]
    T = prompt.shape[1]
    if shift and T == 0:
        raise UserError("a diffusion model trained with objective.shift=true needs a non-empty prompt.")
    x = torch.cat([prompt, torch.full((1, n), mask_id, dtype=prompt.dtype, device=prompt.device)], dim=1)
    n_blocks = math.ceil(n / block_length)
    # Each block gets its share of the steps (at least one, at most one per token).
    block_steps = [max(1, min(round(steps / n_blocks), min(block_length, n - b * block_length)))
                   for b in range(n_blocks)]  # fmt: skip
    for b in range(n_blocks):
        lo, hi = T + b * block_length, min(T + (b + 1) * block_length, T + n)
        for count in tokens_per_step(hi - lo, block_steps[b]):
            if count == 0:
                continue
            hidden = model(x, causal=False)[0, lo - shift : hi - shift]  # (block, D)
            logits = model.logits(hidden).float()  # (block, V)
            logits[:, mask_id] = float("-inf")
            pred = pick_token(logits, temperature, top_k, generator)[:, 0]  # (block,)
            if remasking == "low_confidence":
                # the probability of the chosen token under the untempered model (LLaDA)
                confidence = torch.softmax(logits, -1).gather(1, pred[:, None])[:, 0]
            else:
                confidence = torch.rand(hi - lo, generator=generator).to(logits)
            still_masked = x[0, lo:hi] == mask_id
            confidence = confidence.masked_fill(~still_masked, float("-inf"))
            chosen = confidence.topk(count).indices  # (count,) positions in the block to commit
            x[0, lo + chosen] = pred[chosen]
        if stop_id is not None and (x[0, T:hi] == stop_id).any():
            break
    new = x[0, T:]
    if stop_id is not None and (new == stop_id).any():
        end = int((new == stop_id).nonzero()[0]) + 1
        return x[:, : T + end]
    return x
