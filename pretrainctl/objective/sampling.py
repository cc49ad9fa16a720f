"""Token sampling shared by objectives that generate left to right."""

from __future__ import annotations

import torch


def pick_token(
    logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator
) -> torch.Tensor:
    """logits (B, V) -> (B, 1): greedy at temperature <= 0, else top-k sampling."""
    logits = logits.float()
    if temperature <= 0:
        return logits.argmax(-1, keepdim=True)
    logits = logits / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)


def sample_autoregressive(
    model, prompt: torch.Tensor, max_new_tokens: int, temperature: float, top_k: int | None,
    generator: torch.Generator, max_context: int, stop_id: int | None = None,
) -> torch.Tensor:  # fmt: skip
    """prompt (1, T) -> (1, T + n) ids. Uses the model's decoding cache when it has one and the whole
    sample fits in ``max_context``; otherwise recomputes the last ``max_context`` tokens each step."""
    cached = hasattr(model, "init_cache") and prompt.shape[1] + max_new_tokens <= max_context
    if cached:
        cache = model.init_cache(prompt.shape[0], prompt.shape[1] + max_new_tokens)
        hidden = model.forward_cached(prompt, cache)
    ids = prompt
    for _ in range(max_new_tokens):
        if not cached:
            hidden = model(ids[:, -max_context:], causal=True)
        nxt = pick_token(model.logits(hidden[:, -1]), temperature, top_k, generator)
        ids = torch.cat([ids, nxt], dim=1)
        if stop_id is not None and int(nxt) == stop_id:
            break
        if cached:
            hidden = model.forward_cached(nxt, cache)
    return ids
