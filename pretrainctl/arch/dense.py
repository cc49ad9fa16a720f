"""Dense decoder in the Llama style (Touvron et al., 2023): pre-norm RMSNorm, RoPE, SwiGLU, grouped
K/V heads, tied or untied embeddings. Masking (causal or not) is chosen per call by the objective."""

from __future__ import annotations

import math

import torch
from torch import nn

from pretrainctl.arch.base import LanguageModel, ParamCount
from pretrainctl.arch.layers import Attention, RMSNorm, SwiGLU, matmul_params, swiglu_hidden
from pretrainctl.errors import UserError


class Block(nn.Module):
    def __init__(
        self, dim: int, n_heads: int, n_kv_heads: int, mlp_hidden: int, rope_theta: float, eps: float
    ):
        super().__init__()
        self.attn_norm = RMSNorm(dim, eps)
        self.attn = Attention(dim, n_heads, n_kv_heads, rope_theta)
        self.mlp_norm = RMSNorm(dim, eps)
        self.mlp = SwiGLU(dim, mlp_hidden)

    def forward(self, x: torch.Tensor, *, causal: bool) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), causal=causal)
        return x + self.mlp(self.mlp_norm(x))


class DenseTransformer(LanguageModel):
    """Args:
    vocab_size: set by build.py from the tokenizer.
    d_model, n_layers, n_heads: width, depth and query heads.
    n_kv_heads: K/V heads (None = n_heads; 1 = multi-query attention).
    mlp_hidden: SwiGLU width (None = 8/3 d_model rounded up to 64).
    tie_embeddings: share the input embedding with the output head.
    backend: "torch" (the Triton backend arrives with the kernels package).
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 256,
        n_layers: int = 4,
        n_heads: int = 4,
        n_kv_heads: int | None = None,
        mlp_hidden: int | None = None,
        tie_embeddings: bool = True,
        rope_theta: float = 10_000.0,
        norm_eps: float = 1e-6,
        init_std: float = 0.02,
        backend: str = "torch",
    ) -> None:
        super().__init__()
        n_kv_heads = n_kv_heads or n_heads
        if d_model % n_heads:
            raise UserError(f"arch.d_model={d_model} must be divisible by arch.n_heads={n_heads}.")
        if n_heads % n_kv_heads:
            raise UserError(f"arch.n_heads={n_heads} must be a multiple of arch.n_kv_heads={n_kv_heads}.")
        if backend != "torch":
            raise UserError(f"arch.backend={backend!r} is not available yet; the choices are: torch.")
        self.vocab_size, self.d_model, self.n_layers = vocab_size, d_model, n_layers
        self.tie_embeddings = tie_embeddings
        self.embed = nn.Embedding(vocab_size, d_model)
        hidden = mlp_hidden or swiglu_hidden(d_model)
        self.blocks = nn.ModuleList(
            Block(d_model, n_heads, n_kv_heads, hidden, rope_theta, norm_eps) for _ in range(n_layers)
        )
        self.norm = RMSNorm(d_model, norm_eps)
        self.head = None if tie_embeddings else nn.Linear(d_model, vocab_size, bias=False)
        self._init(init_std)

    def _init(self, std: float) -> None:
        # Residual-branch outputs are scaled down with depth (GPT-2) so the stream's variance stays O(1).
        for name, p in self.named_parameters():
            if p.dim() < 2:
                continue
            scale = (
                1 / math.sqrt(2 * self.n_layers)
                if name.endswith(("attn.o.weight", "mlp.down.weight"))
                else 1.0
            )
            nn.init.normal_(p, std=std * scale)

    def head_weight(self) -> torch.Tensor:
        return self.embed.weight if self.head is None else self.head.weight

    def forward(self, tokens: torch.Tensor, *, causal: bool = True) -> torch.Tensor:
        """tokens (B, T) -> hidden (B, T, D), final norm applied."""
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, causal=causal)
        return self.norm(x)

    def num_params(self) -> ParamCount:
        total = sum(p.numel() for p in self.parameters())
        embedding = self.embed.weight.numel() + (0 if self.head is None else self.head.weight.numel())
        return ParamCount(total=total, active=total, non_embedding=total - embedding)

    def flops_per_token(self, seq_len: int) -> int:
        forward = 2 * (matmul_params(self.blocks) + self.head_weight().numel())
        forward += sum(b.attn.flops_per_token(seq_len) for b in self.blocks)
        return 3 * forward

    def kv_cache_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        return sum(b.attn.kv_bytes_per_token(dtype_bytes) for b in self.blocks)
