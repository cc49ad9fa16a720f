import pytest
import torch

from pretrainctl.arch.dense import DenseTransformer
from pretrainctl.arch.layers import swiglu_hidden
from pretrainctl.errors import UserError


def hand_count(V, d, L, H, K, hidden, tied):
    head_dim = d // H
    attn = d * H * head_dim + 2 * d * K * head_dim + H * head_dim * d
    mlp = 3 * d * hidden
    norms = 2 * d
    total = V * d + L * (attn + mlp + norms) + d + (0 if tied else V * d)
    return total, total - V * d - (0 if tied else V * d), L * (attn + mlp)


@pytest.mark.parametrize(
    "V,d,L,H,K,tied", [(4096, 256, 4, 4, 4, True), (1000, 96, 3, 6, 2, False), (500, 64, 2, 4, 1, True)]
)
def test_param_and_flop_counts_match_hand_count(V, d, L, H, K, tied):
    model = DenseTransformer(V, d_model=d, n_layers=L, n_heads=H, n_kv_heads=K, tie_embeddings=tied)
    total, non_embedding, matmul = hand_count(V, d, L, H, K, swiglu_hidden(d), tied)
    count = model.num_params()
    assert count.total == total
    assert count.active == total
    assert count.non_embedding == non_embedding
    T = 128
    # forward: 2 FLOPs per matmul weight and token, head included, + QK^T and AV at 2*T*d each; x3 to train
    expected = 3 * (2 * matmul + 2 * V * d + L * 4 * T * d)
    assert model.flops_per_token(T) == expected
    assert model.kv_cache_bytes_per_token(2) == L * 2 * K * (d // H) * 2


def test_llama_124m_size():
    model = DenseTransformer(
        32000, d_model=768, n_layers=12, n_heads=12, mlp_hidden=2048, tie_embeddings=False
    )
    assert 120e6 < model.num_params().total < 140e6


def test_causal_mask_is_the_callers_choice():
    torch.manual_seed(0)
    model = DenseTransformer(50, d_model=32, n_layers=2, n_heads=4)
    x = torch.randint(0, 50, (2, 10))
    y = x.clone()
    y[:, 7] = (y[:, 7] + 1) % 50
    causal_a, causal_b = model(x, causal=True), model(y, causal=True)
    assert torch.allclose(causal_a[:, :7], causal_b[:, :7], atol=1e-6)  # the future does not leak
    assert not torch.allclose(causal_a[:, 7:], causal_b[:, 7:])
    bidir_a, bidir_b = model(x, causal=False), model(y, causal=False)
    assert not torch.allclose(bidir_a[:, :7], bidir_b[:, :7], atol=1e-6)


def test_gqa_matches_mha_with_repeated_kv_heads():
    torch.manual_seed(0)
    gqa = DenseTransformer(40, d_model=32, n_layers=1, n_heads=4, n_kv_heads=2)
    mha = DenseTransformer(40, d_model=32, n_layers=1, n_heads=4, n_kv_heads=4)
    state = gqa.state_dict()
    for name in ("k", "v"):
        w = state[f"blocks.0.attn.{name}.weight"].view(2, 8, 32)  # (K, E, D)
        state[f"blocks.0.attn.{name}.weight"] = w.repeat_interleave(2, dim=0).reshape(32, 32)
    mha.load_state_dict(state)
    x = torch.randint(0, 40, (2, 9))
    torch.testing.assert_close(gqa(x), mha(x), atol=1e-5, rtol=1e-5)


def test_bad_head_counts_are_user_errors():
    with pytest.raises(UserError, match="n_kv_heads"):
        DenseTransformer(40, d_model=32, n_heads=4, n_kv_heads=3)
    with pytest.raises(UserError, match="divisible"):
        DenseTransformer(40, d_model=30, n_heads=4)


def test_cached_sampling_equals_recomputation():
    from pretrainctl.objective.sampling import sample_autoregressive

    torch.manual_seed(0)
    model = DenseTransformer(60, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2).eval()
    prompt = torch.randint(0, 60, (1, 5))
    with torch.no_grad():
        fast = sample_autoregressive(model, prompt, 12, 0.0, None, torch.Generator(), max_context=64)
        slow = sample_autoregressive(model, prompt, 12, 0.0, None, torch.Generator(), max_context=17)
    assert fast.shape == slow.shape == (1, 17)  # max_context=17 is too short for the cache path
    assert torch.equal(fast, slow)
