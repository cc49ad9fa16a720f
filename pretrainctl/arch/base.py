"""What every architecture provides: hidden states from token ids, a separate output head, and
its own accounting (parameters, FLOPs per token, KV-cache bytes) for ``scaling/``."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ParamCount:
    """total: every parameter; active: those used per token (< total for MoE); non_embedding: total
    minus the token embedding and an untied output head (Kaplan et al., 2020 convention)."""

    total: int
    active: int
    non_embedding: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class LanguageModel(nn.Module):
    """Subclasses define ``embed``, ``forward(tokens, causal=...) -> hidden`` and the accounting."""

    vocab_size: int
    d_model: int

    def head_weight(self) -> torch.Tensor:
        """(V, D) output projection, exposed so objectives can fuse or chunk it with the loss."""
        raise NotImplementedError

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.head_weight().t()

    def aux_loss(self) -> torch.Tensor | None:
        """Auxiliary losses of the last forward (e.g. MoE load balancing), already weighted; added
        to the objective's loss by the training module. None when the architecture has none."""
        return None

    def after_optimizer_step(self) -> None:
        """Called once per optimizer step, after it (e.g. to update auxiliary-loss-free MoE routing
        biases); with gradient accumulation, not after the intermediate micro-batches."""

    def diagnostics(self) -> dict[str, float]:
        """Scalars to log per step (e.g. per-layer MoE load statistics); cheap, no extra forward."""
        return {}

    def num_params(self) -> ParamCount:
        raise NotImplementedError

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token (forward + backward = 3x forward) at context ``seq_len``."""
        raise NotImplementedError

    def kv_cache_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        raise NotImplementedError
