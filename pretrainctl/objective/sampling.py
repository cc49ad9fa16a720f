"""Token sampling shared by objectives that generate left to right."""

from __future__ import annotations

import torch


def sample_autoregressive(
    model, prompt: torch.Tensor, max_new_tokens: int, temperature: float, top_k: int | None,
    generator: torch.Generator, max_context: int, stop_id: int | None = None,
) -> torch.Tensor:  # fmt: skip
    """prompt (1, T) -> (1, T + n) ids; recomputes the context each step (no KV cache), cropped to
    the last ``max_context`` tokens."""
    ids = prompt
    for _ in range(max_new_tokens):
        logits = model.logits(model(ids[:, -max_context:], causal=True)[:, -1]).float()  # (1, V)
        if temperature <= 0:
            nxt = logits.argmax(-1, keepdim=True)
        else:
            logits = logits / temperature
            if top_k:
                kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)
        ids = torch.cat([ids, nxt], dim=1)
        if stop_id is not None and int(nxt) == stop_id:
            break
    return ids
