"""Hybrid attention + state-space decoders: layers chosen by a pattern string, cycled over the depth.

    A  attention layer (GQA, optional QK-norm / window)
    S  Mamba-2 layer (``ssm.Mamba2``)
    P  parallel heads in one layer (Hymba, Dong et al. 2024, arXiv:2411.13676): attention and SSM
       read the same input, each output is RMS-normalized with its own learned gain, and the two are
       averaged.

``layer_pattern="SSA"`` with 6 layers gives S S A S S A (interleaving as in Jamba, arXiv:2403.19887);
``"P"`` makes every layer a Hymba layer. Every layer keeps its SwiGLU FFN. Only attention adds to
``kv_cache_bytes_per_token``; SSM states are reported by ``state_bytes``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from pretrainctl.arch.backends import check_backend
from pretrainctl.arch.decoder import Block, Decoder
from pretrainctl.arch.dense import check_attention, layer_window
from pretrainctl.arch.layers import Attention, RMSNorm, SwiGLU, swiglu_hidden
from pretrainctl.arch.ssm import Mamba2
from pretrainctl.errors import UserError

LAYER_KINDS = ("A", "S", "P")


class ParallelMixer(nn.Module):
    """Hymba-style layer: mean of normalized attention and SSM outputs on the same input."""

    def __init__(self, dim: int, attn: Attention, ssm: Mamba2, gain: float, eps: float) -> None:
        super().__init__()
        self.attn, self.ssm = attn, ssm
        self.attn_out_norm, self.ssm_out_norm = RMSNorm(dim, eps), RMSNorm(dim, eps)
        with torch.no_grad():  # normalized outputs are O(1): start the branch small, like a scaled init
            self.attn_out_norm.weight.fill_(gain)
            self.ssm_out_norm.weight.fill_(gain)

    def forward(self, x: torch.Tensor, *, causal: bool, cache: Any = None, pos: int = 0) -> torch.Tensor:
        a_cache, s_cache = (None, None) if cache is None else cache
        a = self.attn_out_norm(self.attn(x, causal=causal, cache=a_cache, pos=pos))
        s = self.ssm_out_norm(self.ssm(x, causal=causal, cache=s_cache, pos=pos))
        return 0.5 * (a + s)

    def init_cache(self, batch: int, max_len: int, device: torch.device, dtype: torch.dtype) -> tuple:
        return (
            self.attn.init_cache(batch, max_len, device, dtype),
            self.ssm.init_cache(batch, max_len, device, dtype),
        )

    def flops_per_token(self, seq_len: int) -> int:
        return self.attn.flops_per_token(seq_len) + self.ssm.flops_per_token(seq_len)

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        return self.attn.kv_bytes_per_token(dtype_bytes)

    def state_bytes(self, dtype_bytes: int) -> int:
        return self.ssm.state_bytes(dtype_bytes)


class HybridTransformer(Decoder):
    """Args (beyond DenseTransformer's): layer_pattern (module docstring), and the Mamba-2 sizes
    d_state (N), expand (d_inner = expand * d_model), ssm_head_dim (P), d_conv, chunk_size (Q of the
    chunked scan; any value gives the same result)."""

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 256,
        n_layers: int = 4,
        n_heads: int = 4,
        layer_pattern: str = "SSA",
        d_state: int = 16,
        expand: int = 2,
        ssm_head_dim: int = 32,
        d_conv: int = 4,
        chunk_size: int = 32,
        n_kv_heads: int | None = None,
        qk_norm: bool = False,
        window: int | None = None,
        global_every: int | None = None,
        mlp_hidden: int | None = None,
        tie_embeddings: bool = True,
        rope_theta: float = 10_000.0,
        norm_eps: float = 1e-6,
        init_std: float = 0.02,
        backend: str = "torch",
    ) -> None:
        check_backend(backend)
        n_kv_heads = n_kv_heads or n_heads
        check_attention(d_model, n_heads, n_kv_heads, None, window, global_every)
        if not layer_pattern or set(layer_pattern) - set(LAYER_KINDS):
            raise UserError(
                f"arch.layer_pattern={layer_pattern!r} must be a non-empty string of "
                f"{', '.join(LAYER_KINDS)} (attention, SSM, parallel attention + SSM)."
            )
        hidden = mlp_hidden or swiglu_hidden(d_model)
        kinds = [layer_pattern[i % len(layer_pattern)] for i in range(n_layers)]

        def attention(i: int) -> Attention:
            return Attention(
                d_model, n_heads, n_kv_heads, rope_theta, qk_norm=qk_norm,
                window=layer_window(i, window, global_every), eps=norm_eps,
            )  # fmt: skip

        def ssm() -> Mamba2:
            return Mamba2(d_model, d_state, expand, ssm_head_dim, d_conv, chunk_size, norm_eps)

        def make_block(i: int) -> Block:
            mixer = {
                "A": lambda: attention(i),
                "S": ssm,
                "P": lambda: ParallelMixer(
                    d_model, attention(i), ssm(), 1 / math.sqrt(2 * n_layers), norm_eps
                ),
            }[kinds[i]]()
            return Block(d_model, mixer, SwiGLU(d_model, hidden), norm_eps)

        super().__init__(
            vocab_size, d_model, n_layers, make_block, tie_embeddings, norm_eps, init_std, backend
        )
        self.layer_kinds = kinds
