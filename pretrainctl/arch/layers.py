"""Shared transformer blocks: RMSNorm, rotary embeddings, SwiGLU, and the attention front-end.

Every architecture family builds from these, so family files stay short. Shapes are written as
comments: B batch, T time, D model width, H heads, K kv heads, E head dim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


def _keep_mask(T: int, S: int, causal: bool, window: int | None, device: torch.device) -> torch.Tensor:
    """(T, S) bool, True where query i may read key j. Queries are the last T of the S positions
    (bottom-right alignment), which is what cached decoding needs: query i sits at S - T + i."""
    q_pos = torch.arange(S - T, S, device=device)[:, None]  # (T, 1)
    k_pos = torch.arange(S, device=device)[None, :]  # (1, S)
    keep = k_pos <= q_pos if causal else torch.ones(T, S, dtype=torch.bool, device=device)
    if window is not None:
        # causal: (i - window, i] as in the Triton kernel; bidirectional: a symmetric band |i - j| < window
        keep = keep & ((k_pos > q_pos - window) if causal else ((k_pos - q_pos).abs() < window))
    return keep


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    window: int | None = None,
    softcap: float | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """The one attention call: q (B, T, H, Eqk), k (B, S, K, Eqk), v (B, S, K, Ev), H a multiple of K
    -> (B, T, H, Ev). S > T only in cached decoding (queries are the last T positions).

    The objective decides ``causal``; ``window`` limits each query to the last ``window`` keys
    (causal) or to |i - j| < window (bidirectional); ``softcap`` maps logits s to
    softcap * tanh(s / softcap) (Gemma 2); ``scale`` defaults to 1/sqrt(Eqk). Same signature and
    meaning as ``pretrainctl_kernels.attention.attention``, which can replace it one-for-one.
    """
    if window is not None and window < 1:
        raise ValueError(f"attend: window={window} must be >= 1")
    B, T, H, _ = q.shape
    S, K = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H|K, T|S, E)
    plain = window is None and (not causal or S == T)
    keep = None if plain else _keep_mask(T, S, causal, window, q.device)  # (T, S)
    if softcap is None:
        out = F.scaled_dot_product_attention(
            qh, kh, vh, attn_mask=keep, is_causal=causal and plain, scale=scale, enable_gqa=True
        )
        return out.transpose(1, 2)
    # The cap acts on the logits before the softmax, which SDPA cannot express: math path.
    kh, vh = kh.repeat_interleave(H // K, 1), vh.repeat_interleave(H // K, 1)  # (B, H, S, E)
    s = (qh @ kh.transpose(-1, -2)).float() * scale  # (B, H, T, S)
    s = softcap * torch.tanh(s / softcap)
    if causal and plain:
        keep = _keep_mask(T, S, True, None, q.device)
    if keep is not None:
        s = s.masked_fill(~keep, float("-inf"))
    return (s.softmax(-1).to(q.dtype) @ vh).transpose(1, 2)  # (B, T, H, Ev)


@dataclass
class KVCache:
    """Preallocated keys and values of one attention layer for incremental decoding."""

    k: torch.Tensor  # (B, S_max, K, E)
    v: torch.Tensor  # (B, S_max, K, E)


class Attention(nn.Module):
    """Multi-head attention with grouped K/V heads (GQA, Ainslie et al. 2023; MQA when n_kv_heads=1).

    Options: ``qk_norm`` RMS-normalizes each query and key head before RoPE (OLMo 2, arXiv:2501.00656;
    bounds the logits so they cannot blow up); ``softcap`` tanh-caps the logits (Gemma 2,
    arXiv:2408.00118); ``window`` makes this a local (sliding-window) layer (Beltagy et al. 2020).
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        n_kv_heads: int,
        rope_theta: float,
        *,
        qk_norm: bool = False,
        softcap: float | None = None,
        window: int | None = None,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.attend_fn = attend  # swapped by Decoder.set_backend
        if dim % n_heads:
            raise ValueError(f"d_model={dim} is not divisible by n_heads={n_heads}")
        if n_heads % n_kv_heads:
            raise ValueError(f"n_heads={n_heads} is not a multiple of n_kv_heads={n_kv_heads}")
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, dim // n_heads
        self.softcap, self.window = softcap, window
        self.scale: float | None = None  # None: 1/sqrt(head_dim); µP sets 1/head_dim-like (decoder.py)
        self.q = nn.Linear(dim, n_heads * self.head_dim, bias=False)
        self.k = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.v = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.o = nn.Linear(n_heads * self.head_dim, dim, bias=False)
        # Only created when used, so dense checkpoints keep exactly their parameter names.
        self.q_norm = RMSNorm(self.head_dim, eps) if qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, eps) if qk_norm else None
        self.rotary = Rotary(self.head_dim, rope_theta)

    def forward(
        self, x: torch.Tensor, *, causal: bool, cache: KVCache | None = None, pos: int = 0
    ) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D). With ``cache``: x holds positions pos..pos+T-1, whose keys and
        values are written into the cache and attend to everything cached before them."""
        B, T, _ = x.shape
        q = self.q(x).view(B, T, self.n_heads, self.head_dim)  # (B, T, H, E)
        k = self.k(x).view(B, T, self.n_kv_heads, self.head_dim)  # (B, T, K, E)
        v = self.v(x).view(B, T, self.n_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = self.rotary(q, offset=pos), self.rotary(k, offset=pos)
        if cache is not None:
            cache.k[:, pos : pos + T], cache.v[:, pos : pos + T] = k, v
            k, v = cache.k[:, : pos + T], cache.v[:, : pos + T]  # (B, S, K, E)
        out = self.attend_fn(
            q, k, v, causal=causal, window=self.window, softcap=self.softcap, scale=self.scale
        )
        return self.o(out.reshape(B, T, -1))

    def init_cache(self, batch: int, max_len: int, device: torch.device, dtype: torch.dtype) -> KVCache:
        shape = (batch, max_len, self.n_kv_heads, self.head_dim)
        return KVCache(
            torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype)
        )

    def flops_per_token(self, seq_len: int) -> int:
        """Forward FLOPs of the score and value products for one token attending to seq_len keys
        (Chinchilla convention: no discount for causal masking or for a sliding window)."""
        return 2 * seq_len * self.n_heads * self.head_dim * 2

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """What ``KVCache`` stores per token (a sliding-window layer keeps all positions too)."""
        return 2 * self.n_kv_heads * self.head_dim * dtype_bytes

    def state_bytes(self, dtype_bytes: int) -> int:
        """Per-sequence state that does not grow with context: none for attention."""
        return 0


def matmul_params(module: nn.Module) -> int:
    """Parameters that are weights of matrix products (excludes norm gains)."""
    return sum(p.numel() for p in module.parameters() if p.dim() >= 2)
