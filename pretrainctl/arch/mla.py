"""Multi-head Latent Attention (DeepSeek-V2, arXiv:2405.04434, section 2.1).

Keys and values of all heads are reconstructed from one low-rank latent c_kv = W_DKV x
(``kv_lora_rank`` wide, RMS-normalized), and positions enter through a separate RoPE key k_rope of
``qk_rope_head_dim`` shared by every head ("decoupled RoPE"); the query may be low-rank too
(``q_lora_rank``). Per head h:

    q_h = [q_nope_h, rope(q_rope_h)]            k_h = [W_UK_h c_kv, rope(k_rope)]      v_h = W_UV_h c_kv

Training uses this non-absorbed form (one ``attend`` call with d_qk = nope + rope != d_v). Decoding
caches only c_kv and rope(k_rope) per token and uses the absorbed form: W_UK_h moves into the query
(q_nope_h^T W_UK_h c_kv = (W_UK_h^T q_nope_h)^T c_kv), so every head attends over the shared latent
as one multi-query head of width kv_lora_rank + rope; W_UV_h is applied to the attention output
afterwards (before W_O), instead of to every cached key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from pretrainctl.arch.backends import check_backend
from pretrainctl.arch.decoder import Block, Decoder
from pretrainctl.arch.layers import RMSNorm, Rotary, SwiGLU, attend, swiglu_hidden
from pretrainctl.errors import UserError


@dataclass
class LatentCache:
    """What MLA keeps per token: the normalized latent and the rotated shared RoPE key."""

    c_kv: torch.Tensor  # (B, S_max, R)
    k_rope: torch.Tensor  # (B, S_max, Er)


class MultiHeadLatentAttention(nn.Module):
    """MLA token mixer; ``dim`` and ``n_heads`` come from the model, the rest from the config."""

    def __init__(
        self,
        dim: int,
        n_heads: int,
        kv_lora_rank: int = 64,
        q_lora_rank: int | None = None,
        qk_rope_head_dim: int = 16,
        qk_nope_head_dim: int = 32,
        v_head_dim: int = 32,
        rope_theta: float = 10_000.0,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.attend_fn = attend  # swapped by Decoder.set_backend
        sizes = {"kv_lora_rank": kv_lora_rank, "qk_nope_head_dim": qk_nope_head_dim, "v_head_dim": v_head_dim}
        for name, value in sizes.items():
            if value < 1:
                raise UserError(f"arch.{name}={value} must be at least 1.")
        if qk_rope_head_dim < 2 or qk_rope_head_dim % 2:
            raise UserError(f"arch.qk_rope_head_dim={qk_rope_head_dim} must be even and at least 2.")
        if q_lora_rank is not None and q_lora_rank < 1:
            raise UserError(f"arch.q_lora_rank={q_lora_rank} must be at least 1 (or null: full rank).")
        self.n_heads, self.rank = n_heads, kv_lora_rank
        self.nope, self.rope, self.v_dim = qk_nope_head_dim, qk_rope_head_dim, v_head_dim
        self.scale = 1.0 / math.sqrt(qk_nope_head_dim + qk_rope_head_dim)
        q_out = n_heads * (qk_nope_head_dim + qk_rope_head_dim)
        if q_lora_rank is None:
            self.wq = nn.Linear(dim, q_out, bias=False)
        else:
            self.wq_a = nn.Linear(dim, q_lora_rank, bias=False)  # W_DQ
            self.q_norm = RMSNorm(q_lora_rank, eps)
            self.wq_b = nn.Linear(q_lora_rank, q_out, bias=False)  # W_UQ (and W_QR)
        self.q_lora_rank = q_lora_rank
        self.wkv_a = nn.Linear(dim, kv_lora_rank + qk_rope_head_dim, bias=False)  # W_DKV and W_KR
        self.kv_norm = RMSNorm(kv_lora_rank, eps)
        self.wkv_b = nn.Linear(
            kv_lora_rank, n_heads * (qk_nope_head_dim + v_head_dim), bias=False
        )  # W_UK, W_UV
        self.o = nn.Linear(n_heads * v_head_dim, dim, bias=False)
        self.rotary = Rotary(qk_rope_head_dim, rope_theta)

    def _query(self, x: torch.Tensor, pos: int) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, _ = x.shape
        q = self.wq(x) if self.q_lora_rank is None else self.wq_b(self.q_norm(self.wq_a(x)))
        q = q.view(B, T, self.n_heads, self.nope + self.rope)  # (B, T, H, En + Er)
        q_nope, q_rope = q.split([self.nope, self.rope], dim=-1)
        return q_nope, self.rotary(q_rope, offset=pos)

    def _latent(self, x: torch.Tensor, pos: int) -> tuple[torch.Tensor, torch.Tensor]:
        c_kv, k_rope = self.wkv_a(x).split([self.rank, self.rope], dim=-1)  # (B, T, R), (B, T, Er)
        k_rope = self.rotary(k_rope.unsqueeze(2), offset=pos).squeeze(2)  # one head, shared
        return self.kv_norm(c_kv), k_rope

    def _up_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.wkv_b.weight.view(self.n_heads, self.nope + self.v_dim, self.rank)
        return w[:, : self.nope], w[:, self.nope :]  # W_UK (H, En, R), W_UV (H, Ev, R)

    def forward(
        self, x: torch.Tensor, *, causal: bool, cache: LatentCache | None = None, pos: int = 0
    ) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D); non-absorbed without a cache, absorbed with one."""
        if cache is not None:
            return self.forward_absorbed(x, causal=causal, cache=cache, pos=pos)
        B, T, _ = x.shape
        q_nope, q_rope = self._query(x, 0)
        c_kv, k_rope = self._latent(x, 0)
        kv = self.wkv_b(c_kv).view(B, T, self.n_heads, self.nope + self.v_dim)
        k_nope, v = kv.split([self.nope, self.v_dim], dim=-1)  # (B, T, H, En), (B, T, H, Ev)
        q = torch.cat([q_nope, q_rope], dim=-1)  # (B, T, H, En + Er)
        k = torch.cat([k_nope, k_rope.unsqueeze(2).expand(B, T, self.n_heads, self.rope)], dim=-1)
        out = self.attend_fn(q, k, v, causal=causal, scale=self.scale)  # (B, T, H, Ev)
        return self.o(out.reshape(B, T, -1))

    def forward_absorbed(
        self, x: torch.Tensor, *, causal: bool, cache: LatentCache | None = None, pos: int = 0
    ) -> torch.Tensor:
        """The decoding form: attention over the latent, W_UK folded into q, W_UV applied after."""
        B, T, _ = x.shape
        q_nope, q_rope = self._query(x, pos)
        c_kv, k_rope = self._latent(x, pos)
        if cache is not None:
            cache.c_kv[:, pos : pos + T], cache.k_rope[:, pos : pos + T] = c_kv, k_rope
            c_kv, k_rope = cache.c_kv[:, : pos + T], cache.k_rope[:, : pos + T]  # (B, S, R), (B, S, Er)
        w_uk, w_uv = self._up_weights()
        q_lat = torch.einsum("bthn,hnr->bthr", q_nope, w_uk)  # (B, T, H, R)
        q = torch.cat([q_lat, q_rope], dim=-1)  # (B, T, H, R + Er)
        k = torch.cat([c_kv, k_rope], dim=-1).unsqueeze(2)  # (B, S, 1, R + Er): one shared head
        out_lat = attend(q, k, c_kv.unsqueeze(2), causal=causal, scale=self.scale)  # (B, T, H, R)
        out = torch.einsum("bthr,hvr->bthv", out_lat, w_uv)  # (B, T, H, Ev)
        return self.o(out.reshape(B, T, -1))

    def init_cache(self, batch: int, max_len: int, device: torch.device, dtype: torch.dtype) -> LatentCache:
        return LatentCache(
            torch.zeros(batch, max_len, self.rank, device=device, dtype=dtype),
            torch.zeros(batch, max_len, self.rope, device=device, dtype=dtype),
        )

    def flops_per_token(self, seq_len: int) -> int:
        """Score and value products of the training (non-absorbed) form, no causal discount."""
        return 2 * seq_len * self.n_heads * (self.nope + self.rope + self.v_dim)

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        return (self.rank + self.rope) * dtype_bytes

    def state_bytes(self, dtype_bytes: int) -> int:
        return 0


class MLATransformer(Decoder):
    """Dense SwiGLU decoder whose attention is MLA. Args as DenseTransformer, plus the MLA sizes:
    kv_lora_rank, q_lora_rank (None = full-rank query), qk_rope_head_dim, qk_nope_head_dim,
    v_head_dim (per-head sizes are independent of d_model / n_heads)."""

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 256,
        n_layers: int = 4,
        n_heads: int = 4,
        kv_lora_rank: int = 64,
        q_lora_rank: int | None = None,
        qk_rope_head_dim: int = 16,
        qk_nope_head_dim: int = 32,
        v_head_dim: int = 32,
        mlp_hidden: int | None = None,
        tie_embeddings: bool = True,
        rope_theta: float = 10_000.0,
        norm_eps: float = 1e-6,
        init_std: float = 0.02,
        backend: str = "torch",
    ) -> None:
        check_backend(backend)
        hidden = mlp_hidden or swiglu_hidden(d_model)

        def make_block(i: int) -> Block:
            attn = MultiHeadLatentAttention(
                d_model, n_heads, kv_lora_rank, q_lora_rank, qk_rope_head_dim, qk_nope_head_dim,
                v_head_dim, rope_theta, norm_eps,
            )  # fmt: skip
            return Block(d_model, attn, SwiGLU(d_model, hidden), norm_eps)

        super().__init__(
            vocab_size, d_model, n_layers, make_block, tie_embeddings, norm_eps, init_std, backend
        )
