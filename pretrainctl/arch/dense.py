"""Dense decoder in the Llama style (Touvron et al., 2023): pre-norm RMSNorm, RoPE, SwiGLU, grouped
K/V heads, tied or untied embeddings. Masking (causal or not) is chosen per call by the objective.

Attention options (all off by default, so the plain dense model is unchanged): QK-norm (OLMo 2),
logit soft-capping (Gemma 2) and sliding-window attention with local-global interleaving: with
``window`` set, every layer is local except every ``global_every``-th one (layers
global_every-1, 2*global_every-1, ... counting from 0), e.g. window=64, global_every=3 gives
local, local, global, local, local, global (ModernBERT, arXiv:2412.13663, uses a global layer every
third; Gemma 2 alternates, global_every=2). ``global_every=null`` makes every layer local.
"""

from __future__ import annotations

from pretrainctl.arch.backends import check_backend
from pretrainctl.arch.decoder import Block, Decoder
from pretrainctl.arch.layers import Attention, SwiGLU, swiglu_hidden
from pretrainctl.errors import UserError


def layer_window(layer: int, window: int | None, global_every: int | None) -> int | None:
    """The attention window of layer ``layer`` (None = global) under the local-global pattern."""
    if window is None or (global_every is not None and (layer + 1) % global_every == 0):
        return None
    return window


def check_attention(
    d_model: int, n_heads: int, n_kv_heads: int, softcap: float | None, window: int | None,
    global_every: int | None,
) -> None:  # fmt: skip
    """The user-facing checks of the attention knobs, shared by every family that uses them."""
    if d_model % n_heads:
        raise UserError(f"arch.d_model={d_model} must be divisible by arch.n_heads={n_heads}.")
    if n_heads % n_kv_heads:
        raise UserError(f"arch.n_heads={n_heads} must be a multiple of arch.n_kv_heads={n_kv_heads}.")
    if softcap is not None and softcap <= 0:
        raise UserError(f"arch.softcap={softcap} must be positive (or null to disable it).")
    if window is not None and window < 1:
        raise UserError(f"arch.window={window} must be at least 1 (or null for global attention).")
    if global_every is not None and global_every < 1:
        raise UserError(f"arch.global_every={global_every} must be at least 1 (or null: all local).")


class DenseTransformer(Decoder):
    """Args:
    vocab_size: set by build.py from the tokenizer.
    d_model, n_layers, n_heads: width, depth and query heads.
    n_kv_heads: K/V heads (None = n_heads; 1 = multi-query attention).
    mlp_hidden: SwiGLU width (None = 8/3 d_model rounded up to 64).
    tie_embeddings: share the input embedding with the output head.
    qk_norm: RMSNorm on each query and key head (OLMo 2).
    softcap: tanh cap on attention logits (None = off).
    window, global_every: sliding-window size and local-global interleaving (module docstring).
    backend: "torch" or "triton" (pretrainctl_kernels; falls back to torch where Triton cannot run).
    mup_base_width: µP's base width (decoder.py; µP wants tie_embeddings=False); None = standard
        parametrization.
    mup_output_mult: µP's 1/width_mult multiplier on the logits (decoder.py).
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
        qk_norm: bool = False,
        softcap: float | None = None,
        window: int | None = None,
        global_every: int | None = None,
        backend: str = "torch",
        mup_base_width: int | None = None,
        mup_output_mult: bool = True,
    ) -> None:
        n_kv_heads = n_kv_heads or n_heads
        if mup_base_width is not None and mup_base_width < 1:
            raise UserError(f"arch.mup_base_width={mup_base_width} must be a positive width (or null).")
        check_attention(d_model, n_heads, n_kv_heads, softcap, window, global_every)
        check_backend(backend)
        hidden = mlp_hidden or swiglu_hidden(d_model)

        def make_block(i: int) -> Block:
            attn = Attention(
                d_model, n_heads, n_kv_heads, rope_theta, qk_norm=qk_norm, softcap=softcap,
                window=layer_window(i, window, global_every), eps=norm_eps,
            )  # fmt: skip
            return Block(d_model, attn, SwiGLU(d_model, hidden), norm_eps)

        super().__init__(
            vocab_size, d_model, n_layers, make_block, tie_embeddings, norm_eps, init_std, backend,
            mup_base_width, mup_output_mult,
        )  # fmt: skip
