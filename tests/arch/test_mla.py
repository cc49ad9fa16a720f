"""MLA: the absorbed (decoding) form equals the non-absorbed (training) form, cached decoding equals
recomputation, and the KV cache is the latent plus the shared RoPE key."""

import pytest
import torch

from pretrainctl.arch.dense import DenseTransformer
from pretrainctl.arch.mla import MLATransformer, MultiHeadLatentAttention
from pretrainctl.errors import UserError


@pytest.mark.parametrize("q_lora_rank", [None, 12])
@pytest.mark.parametrize("causal", [True, False])
def test_absorbed_equals_non_absorbed(q_lora_rank, causal):
    torch.manual_seed(0)
    mla = MultiHeadLatentAttention(
        32, 4, kv_lora_rank=10, q_lora_rank=q_lora_rank, qk_rope_head_dim=6, qk_nope_head_dim=8, v_head_dim=5
    ).double()
    for p in mla.parameters():  # away from init values so every weight matters
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 9, 32, dtype=torch.float64)
    plain = mla(x, causal=causal)
    absorbed = mla.forward_absorbed(x, causal=causal)
    torch.testing.assert_close(absorbed, plain, atol=1e-6, rtol=1e-6)  # RoPE/RMSNorm run in float32


@pytest.mark.parametrize("q_lora_rank", [None, 16])
def test_cached_decoding_equals_recomputation(q_lora_rank):
    torch.manual_seed(0)
    model = MLATransformer(
        70, d_model=32, n_layers=2, n_heads=4, kv_lora_rank=12, q_lora_rank=q_lora_rank,
        qk_rope_head_dim=4, qk_nope_head_dim=8, v_head_dim=6,
    ).double()  # fmt: skip
    tokens = torch.randint(0, 70, (2, 10))
    full = model(tokens, causal=True)
    cache = model.init_cache(batch=2, max_len=10)
    assert cache.layers[0].c_kv.shape == (2, 10, 12) and cache.layers[0].k_rope.shape == (2, 10, 4)
    pieces = [model.forward_cached(tokens[:, :4], cache)]
    pieces += [model.forward_cached(tokens[:, t : t + 1], cache) for t in range(4, 10)]
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=1e-5)


def test_kv_cache_bytes_are_exact():
    model = MLATransformer(100, d_model=64, n_layers=3, n_heads=4, kv_lora_rank=24, qk_rope_head_dim=8)
    cache = model.init_cache(batch=1, max_len=1)
    stored = sum(t.numel() for c in cache.layers for t in (c.c_kv, c.k_rope))  # per token, batch 1
    assert model.kv_cache_bytes_per_token(2) == stored * 2 == 3 * (24 + 8) * 2


def test_deepseek_v2_like_cache_is_over_90_percent_smaller_than_mha():
    # DeepSeek-V2: 128 heads, 128-dim nope and value heads, 64-dim RoPE key, latent 512, q rank 1536.
    mla = MultiHeadLatentAttention(
        5120,
        128,
        kv_lora_rank=512,
        q_lora_rank=1536,
        qk_rope_head_dim=64,
        qk_nope_head_dim=128,
        v_head_dim=128,
    )
    mha_bytes = 2 * 128 * 128 * 2  # K and V, 128 heads of 128, bf16
    mla_bytes = mla.kv_bytes_per_token(2)
    assert mla_bytes == (512 + 64) * 2
    assert 1 - mla_bytes / mha_bytes >= 0.9  # 98.2% smaller


def test_counts_match_hand_count():
    V, d, L, H, R, Rq, Er, En, Ev = 300, 48, 2, 4, 16, 20, 6, 10, 8
    model = MLATransformer(
        V, d_model=d, n_layers=L, n_heads=H, kv_lora_rank=R, q_lora_rank=Rq, qk_rope_head_dim=Er,
        qk_nope_head_dim=En, v_head_dim=Ev, mlp_hidden=96,
    )  # fmt: skip
    attn = d * Rq + Rq * H * (En + Er) + d * (R + Er) + R * H * (En + Ev) + H * Ev * d
    mlp = 3 * d * 96
    norms = 2 * d + Rq + R
    total = V * d + L * (attn + mlp + norms) + d
    count = model.num_params()
    assert (count.total, count.active, count.non_embedding) == (total, total, total - V * d)
    T = 64
    assert model.flops_per_token(T) == 3 * (2 * L * (attn + mlp) + 2 * V * d + L * 2 * T * H * (En + Er + Ev))


def test_bad_sizes_are_user_errors():
    with pytest.raises(UserError, match="qk_rope_head_dim"):
        MultiHeadLatentAttention(32, 4, qk_rope_head_dim=3)
    with pytest.raises(UserError, match="kv_lora_rank"):
        MultiHeadLatentAttention(32, 4, kv_lora_rank=0)


def test_dense_mha_reference_cache_bytes():
    # the comparison above uses the same formula as the dense model's MHA cache
    model = DenseTransformer(50, d_model=256, n_layers=1, n_heads=2)
    assert model.kv_cache_bytes_per_token(2) == 2 * 2 * 128 * 2
