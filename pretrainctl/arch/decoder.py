"""The pre-norm decoder stack every family shares: embedding, blocks of (token mixer, feed-forward),
final RMSNorm, tied or untied head — plus the accounting, the incremental-decoding cache and the
hooks (auxiliary loss, per-step update, diagnostics) gathered from whatever the blocks contain.

µP (Yang et al., 2022, "Tensor Programs V", arXiv:2203.03466), on with ``mup_base_width`` (the width
whose hyperparameters are tuned; width_mult = d_model / mup_base_width): hidden matrices are
initialized with std init_std / sqrt(width_mult) (variance ~ 1/fan_in), the final hidden state is
multiplied by 1 / width_mult (the output multiplier: logits scale like 1/width; ``mup_output_mult=False``
drops it, see below), attention logits use
1/head_dim instead of 1/sqrt(head_dim) (matched at the base width; widths grow at a fixed head count),
and the optimizer divides Adam's LR of hidden matrices by width_mult (optim/groups.py). Embeddings
and norms keep their init and LR. At width_mult 1 the model is exactly the standard one.

µP wants an untied head (``tie_embeddings=False``). A tied matrix is both µP's input embedding (Adam LR
Θ(1)) and its readout (whose effect should not grow with width): Adam takes one normalized step on
the sum of the two roles' gradients, and the output multiplier shrinks the readout's share of that sum
by 1/width_mult, so how the two roles mix in each update changes with width; without the multiplier
the readout's effect grows with width instead. On the default data (4096 pieces; bench/mup_evidence.py,
README "µP") the tied model's best LR fell from 0.016 at width 64 to 0.004 at 256 (to 0.004 or below
without the multiplier); untied, it was 0.004 at widths 64, 256 and 512 (two seeds at 64 and 256). So
the model prints a one-line notice when µP is on with a tied head. ``mup_output_mult=False`` keeps every
other µP rule and leaves the logits unscaled (the coordinate check's logits are then flat for a tied
head, but the LR still does not transfer).

A family file only says which mixer (attention, MLA, SSM, ...) and which feed-forward (SwiGLU, MoE)
each layer gets. Mixers provide ``forward(x, causal=, cache=, pos=)``, ``init_cache``,
``flops_per_token(seq_len)`` (FLOPs that are not weight products: attention scores, scans),
``kv_bytes_per_token`` and ``state_bytes``. Feed-forwards may provide ``inactive_params()`` (MoE),
``aux_loss()``, ``after_optimizer_step()`` and ``diagnostics(prefix)``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import torch
from torch import nn

from pretrainctl.arch.base import LanguageModel, ParamCount
from pretrainctl.arch.layers import RMSNorm, matmul_params

# Output projections of residual branches: initialized smaller with depth (GPT-2), so the residual
# stream's variance stays O(1) whatever the depth.
RESIDUAL_OUTPUTS = (
    "attn.o.weight",
    "mlp.down.weight",
    "mlp.w_down",
    "mlp.shared.down.weight",
    "attn.out_proj.weight",
    "attn.ssm.out_proj.weight",
)


@lru_cache(maxsize=1)
def _notice_tied_mup() -> None:
    print(
        "pretrainctl: µP with a tied head did not transfer the LR across widths in our sweep; "
        "set arch.tie_embeddings=false (README, µP)",
        file=sys.stderr,
    )


class Block(nn.Module):
    """x + mixer(norm(x)), then x + ffn(norm(x)). Names match the original dense checkpoints."""

    def __init__(self, dim: int, mixer: nn.Module, ffn: nn.Module, eps: float) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(dim, eps)
        self.attn = mixer
        self.mlp_norm = RMSNorm(dim, eps)
        self.mlp = ffn

    def forward(self, x: torch.Tensor, *, causal: bool, cache: Any = None, pos: int = 0) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), causal=causal, cache=cache, pos=pos)
        return x + self.mlp(self.mlp_norm(x))


@dataclass
class DecodeCache:
    """Per-layer caches (K/V, MLA latents, SSM states) and the number of positions already filled."""

    layers: list[Any]
    max_len: int
    pos: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Decoder(LanguageModel):
    """Shared stack; subclasses pass ``make_block(layer_index) -> Block``."""

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        n_layers: int,
        make_block: Callable[[int], Block],
        tie_embeddings: bool,
        norm_eps: float,
        init_std: float,
        backend: str = "torch",
        mup_base_width: int | None = None,
        mup_output_mult: bool = True,
    ) -> None:
        super().__init__()
        self.vocab_size, self.d_model, self.n_layers = vocab_size, d_model, n_layers
        self.mup_width_mult = d_model / mup_base_width if mup_base_width else 1.0
        # What the final hidden state is multiplied by before any head (1.0 = none).
        self.output_mult = 1.0 / self.mup_width_mult if mup_output_mult else 1.0
        self.tie_embeddings = tie_embeddings
        if mup_base_width and tie_embeddings:
            _notice_tied_mup()
        # Registration order (embed, blocks, norm, head) fixes the order of the init draws.
        self.embed = nn.Embedding(vocab_size, d_model)
        self.blocks = nn.ModuleList(make_block(i) for i in range(n_layers))
        self.norm = RMSNorm(d_model, norm_eps)
        self.head = None if tie_embeddings else nn.Linear(d_model, vocab_size, bias=False)
        self._init(init_std)
        if self.mup_width_mult != 1.0:
            for module in self.modules():
                if hasattr(module, "head_dim") and hasattr(module, "scale"):
                    module.scale = 1.0 / math.sqrt(module.head_dim * self.mup_width_mult)
        self.set_backend(backend)

    def set_backend(self, backend: str) -> None:
        """Route every attention and MoE front-end through ``backend`` ("torch" or "triton");
        parameters are untouched, so checkpoints move freely between backends."""
        from pretrainctl.arch.backends import attention_fn, moe_fn

        self.backend = backend
        for module in self.modules():
            if hasattr(module, "attend_fn"):
                module.attend_fn = attention_fn(backend)
            if hasattr(module, "moe_fn"):
                module.moe_fn = moe_fn(backend, module.torch_moe_fn)

    def _init(self, std: float) -> None:
        for name, p in self.named_parameters():
            if p.dim() < 2 or getattr(p, "keep_init", False):
                continue
            scale = 1 / math.sqrt(2 * self.n_layers) if name.endswith(RESIDUAL_OUTPUTS) else 1.0
            if p is not self.embed.weight and p is not self.head_weight():  # µP: hidden var ~ 1/fan_in
                scale /= math.sqrt(self.mup_width_mult)
            nn.init.normal_(p, std=std * scale)

    def head_weight(self) -> torch.Tensor:
        return self.embed.weight if self.head is None else self.head.weight

    def forward(self, tokens: torch.Tensor, *, causal: bool = True) -> torch.Tensor:
        """tokens (B, T) -> hidden (B, T, D), final norm applied."""
        x = self.embed(tokens)  # (B, T, D)
        for block in self.blocks:
            x = block(x, causal=causal)
        return self._output(self.norm(x))

    def _output(self, h: torch.Tensor) -> torch.Tensor:
        """µP's output multiplier on the final hidden state, so every head (fused, chunked) sees it."""
        return h if self.output_mult == 1.0 else h * self.output_mult

    # -- incremental decoding ---------------------------------------------------------------------
    def init_cache(self, batch: int, max_len: int) -> DecodeCache:
        """An empty cache for ``batch`` sequences of up to ``max_len`` positions."""
        p = self.embed.weight
        layers = [b.attn.init_cache(batch, max_len, p.device, p.dtype) for b in self.blocks]
        return DecodeCache(layers=layers, max_len=max_len)

    def forward_cached(self, tokens: torch.Tensor, cache: DecodeCache) -> torch.Tensor:
        """tokens (B, t): the next t positions (a prompt, then one token at a time) -> hidden (B, t, D),
        causal, equal to the matching rows of ``forward`` over the whole prefix; advances the cache."""
        t = tokens.shape[1]
        if cache.pos + t > cache.max_len:
            raise ValueError(f"cache holds {cache.max_len} positions; {cache.pos} used, {t} more asked")
        x = self.embed(tokens)
        for block, layer_cache in zip(self.blocks, cache.layers, strict=True):
            x = block(x, causal=True, cache=layer_cache, pos=cache.pos)
        cache.pos += t
        return self._output(self.norm(x))

    # -- hooks gathered from the blocks -----------------------------------------------------------
    def _ffn_hooks(self, name: str) -> list[tuple[int, Callable]]:
        return [(i, getattr(b.mlp, name)) for i, b in enumerate(self.blocks) if hasattr(b.mlp, name)]

    def aux_loss(self) -> torch.Tensor | None:
        losses = [fn() for _, fn in self._ffn_hooks("aux_loss")]
        losses = [x for x in losses if x is not None]
        return torch.stack(losses).sum() if losses else None

    def after_optimizer_step(self) -> None:
        for _, fn in self._ffn_hooks("after_optimizer_step"):
            fn()

    def diagnostics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for i, fn in self._ffn_hooks("diagnostics"):
            out.update(fn(f"moe/L{i}/"))
        violations = [v for k, v in out.items() if k.endswith("/max_violation")]
        if violations:  # one headline number across layers
            out["moe/max_violation"] = max(violations)
        return out

    # -- accounting -------------------------------------------------------------------------------
    def _inactive(self) -> int:
        """Parameters a token does not use (routed experts it is not sent to)."""
        return sum(fn() for _, fn in self._ffn_hooks("inactive_params"))

    def num_params(self) -> ParamCount:
        total = sum(p.numel() for p in self.parameters())
        embedding = self.embed.weight.numel() + (0 if self.head is None else self.head.weight.numel())
        return ParamCount(total=total, active=total - self._inactive(), non_embedding=total - embedding)

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token: 3 x forward, forward = 2 per active weight-matrix entry (head
        included) + each mixer's non-weight FLOPs (attention scores/values, SSM scan)."""
        forward = 2 * (matmul_params(self.blocks) - self._inactive() + self.head_weight().numel())
        forward += sum(b.attn.flops_per_token(seq_len) for b in self.blocks)
        return 3 * forward

    def kv_cache_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """Bytes the decoding cache grows by per token (attention-like layers only)."""
        return sum(b.attn.kv_bytes_per_token(dtype_bytes) for b in self.blocks)

    def state_bytes(self, dtype_bytes: int = 2) -> int:
        """Per-sequence cache bytes that do not grow with context (SSM states, conv windows)."""
        return sum(b.attn.state_bytes(dtype_bytes) for b in self.blocks)
