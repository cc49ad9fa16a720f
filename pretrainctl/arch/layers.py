"""Shared transformer blocks: RMSNorm, rotary embeddings, SwiGLU, and the attention front-end.

Every architecture family builds from these, so family files stay short. Shapes are written as
comments: B batch, T time, D model width, H heads, K kv heads, E head dim.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich, 2019) with a learned gain, computed in float32."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)


class Rotary(nn.Module):
    """Rotary position embedding (Su et al., 2021), half-split layout; tables cached per length."""

    def __init__(self, head_dim: int, theta: float = 10_000.0) -> None:
        super().__init__()
        inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self._cache: tuple[int, torch.device, torch.Tensor, torch.Tensor] | None = None

    def tables(self, T: int, device: torch.device, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        n = T + offset
        if self._cache is None or self._cache[0] < n or self._cache[1] != device:
            t = torch.arange(max(n, 64), device=device, dtype=torch.float32)
            freqs = torch.outer(t, self.inv_freq.to(device))  # (T, E/2)
            self._cache = (max(n, 64), device, freqs.cos(), freqs.sin())
        _, _, cos, sin = self._cache
        return cos[offset:n], sin[offset:n]

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """x: (B, T, H, E) -> same shape, rotated by position offset..offset+T."""
        cos, sin = self.tables(x.shape[1], x.device, offset)
        cos, sin = cos[None, :, None, :], sin[None, :, None, :]  # (1, T, 1, E/2)
        x1, x2 = x.float().chunk(2, dim=-1)
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)


class SwiGLU(nn.Module):
    """Gated MLP (Shazeer, 2020): down(silu(gate(x)) * up(x))."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


def swiglu_hidden(dim: int, multiple_of: int = 64) -> int:
    """Llama's rule: 8/3 of the width, rounded up to a multiple (keeps params ~ a 4x GELU MLP)."""
    return multiple_of * math.ceil(8 * dim / 3 / multiple_of)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool) -> torch.Tensor:
    """The one attention call: q (B, T, H, E), k/v (B, S, K, E) with H a multiple of K -> (B, T, H, E).

    The objective decides ``causal``; the kernels package can replace this function one-for-one.
    """
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal, enable_gqa=True
    )
    return out.transpose(1, 2)


class Attention(nn.Module):
    """Multi-head attention with grouped K/V heads (GQA, Ainslie et al. 2023; MQA when n_kv_heads=1)."""

    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, rope_theta: float) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"d_model={dim} is not divisible by n_heads={n_heads}")
        if n_heads % n_kv_heads:
            raise ValueError(f"n_heads={n_heads} is not a multiple of n_kv_heads={n_kv_heads}")
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, dim // n_heads
        self.q = nn.Linear(dim, n_heads * self.head_dim, bias=False)
        self.k = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.v = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.o = nn.Linear(n_heads * self.head_dim, dim, bias=False)
        self.rotary = Rotary(self.head_dim, rope_theta)

    def forward(self, x: torch.Tensor, *, causal: bool) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.rotary(self.q(x).view(B, T, self.n_heads, self.head_dim))  # (B, T, H, E)
        k = self.rotary(self.k(x).view(B, T, self.n_kv_heads, self.head_dim))  # (B, T, K, E)
        v = self.v(x).view(B, T, self.n_kv_heads, self.head_dim)
        return self.o(attend(q, k, v, causal=causal).reshape(B, T, -1))

    def flops_per_token(self, seq_len: int) -> int:
        """Forward FLOPs of the score and value products for one token attending to seq_len keys
        (Chinchilla convention: no discount for causal masking)."""
        return 2 * seq_len * self.n_heads * self.head_dim * 2

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        return 2 * self.n_kv_heads * self.head_dim * dtype_bytes


def matmul_params(module: nn.Module) -> int:
    """Parameters that are weights of matrix products (excludes norm gains)."""
    return sum(p.numel() for p in module.parameters() if p.dim() >= 2)
