"""The attention front-end against a naive softmax(QK^T)V reference, and the dense model's options."""

import math

import pytest
import torch

from pretrainctl.arch.dense import DenseTransformer, layer_window
from pretrainctl.arch.layers import attend
from pretrainctl.errors import UserError


def naive(q, k, v, causal, window=None, softcap=None, scale=None):
    """Loops over heads and query rows: an independent statement of the documented semantics."""
    B, T, H, E = q.shape
    S, K = k.shape[1], k.shape[2]
    scale = 1 / math.sqrt(E) if scale is None else scale
    out = torch.zeros(B, T, H, v.shape[-1], dtype=q.dtype)
    for h in range(H):
        kv = h // (H // K)
        for i in range(T):
            qi = S - T + i  # absolute position of query i
            in_band = [
                window is None or (qi - window < j if causal else abs(qi - j) < window) for j in range(S)
            ]
            keys = [j for j in range(S) if (not causal or j <= qi) and in_band[j]]
            s = torch.einsum("be,bse->bs", q[:, i, h], k[:, keys, kv]) * scale
            if softcap is not None:
                s = softcap * torch.tanh(s / softcap)
            out[:, i, h] = torch.einsum("bs,bse->be", s.softmax(-1), v[:, keys, kv])
    return out


# More keys than queries (S > T) only happens in cached decoding, which is causal.
@pytest.mark.parametrize("causal,T,S", [(True, 7, 7), (False, 7, 7), (True, 2, 9)])
@pytest.mark.parametrize(
    "window,softcap,scale", [(None, None, None), (3, None, None), (None, 2.0, 0.3), (4, 5.0, None)]
)
def test_attend_matches_naive(causal, window, softcap, scale, T, S):
    torch.manual_seed(0)
    q = torch.randn(2, T, 4, 6, dtype=torch.float64)
    k = torch.randn(2, S, 2, 6, dtype=torch.float64)  # GQA, 2 query heads per K/V head
    v = torch.randn(2, S, 2, 5, dtype=torch.float64)  # value head dim differs from the QK dim
    got = attend(q, k, v, causal=causal, window=window, softcap=softcap, scale=scale)
    torch.testing.assert_close(got, naive(q, k, v, causal, window, softcap, scale))


def test_local_global_pattern():
    assert [layer_window(i, 64, 3) for i in range(6)] == [64, 64, None, 64, 64, None]
    assert [layer_window(i, 64, None) for i in range(2)] == [64, 64]
    assert [layer_window(i, None, 3) for i in range(3)] == [None, None, None]
    model = DenseTransformer(50, d_model=32, n_layers=4, n_heads=4, window=2, global_every=2)
    assert [b.attn.window for b in model.blocks] == [2, None, 2, None]


def test_window_limits_what_a_position_sees():
    torch.manual_seed(0)
    model = DenseTransformer(50, d_model=32, n_layers=1, n_heads=4, window=3)
    x = torch.randint(0, 50, (1, 10))
    y = x.clone()
    y[0, 2] = (y[0, 2] + 1) % 50
    a, b = model(x), model(y)
    assert not torch.allclose(a[:, 4], b[:, 4])  # position 4 sees 2..4
    torch.testing.assert_close(a[:, 5:], b[:, 5:])  # position 5 sees 3..5 only (one layer)


def test_options_keep_dense_parameter_names():
    plain = set(DenseTransformer(50, d_model=32, n_layers=2, n_heads=4).state_dict())
    knobs = DenseTransformer(50, d_model=32, n_layers=2, n_heads=4, softcap=30.0, window=8, global_every=2)
    assert set(knobs.state_dict()) == plain
    normed = set(DenseTransformer(50, d_model=32, n_layers=2, n_heads=4, qk_norm=True).state_dict())
    assert normed - plain == {f"blocks.{i}.attn.{n}_norm.weight" for i in range(2) for n in "qk"}


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"n_kv_heads": 1},
        {"qk_norm": True, "softcap": 3.0},
        {"window": 3, "global_every": 2, "n_kv_heads": 2},
    ],
)
def test_cached_decoding_equals_recomputation(options):
    torch.manual_seed(0)
    model = DenseTransformer(60, d_model=32, n_layers=2, n_heads=4, **options).double()
    tokens = torch.randint(0, 60, (2, 11))
    full = model(tokens, causal=True)
    cache = model.init_cache(batch=2, max_len=16)
    pieces = [model.forward_cached(tokens[:, :5], cache)]  # prefill, then one token at a time
    pieces += [model.forward_cached(tokens[:, t : t + 1], cache) for t in range(5, 11)]
    # float64 model, but RMSNorm and RoPE compute in float32 by design: float32-level tolerance
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=1e-5)
    assert cache.pos == 11
    with pytest.raises(ValueError, match="cache holds"):
        model.forward_cached(tokens, cache)


def test_bad_attention_options_are_user_errors():
    with pytest.raises(UserError, match="softcap"):
        DenseTransformer(40, d_model=32, n_heads=4, softcap=0.0)
    with pytest.raises(UserError, match="window"):
        DenseTransformer(40, d_model=32, n_heads=4, window=0)
    with pytest.raises(UserError, match="global_every"):
        DenseTransformer(40, d_model=32, n_heads=4, window=4, global_every=0)
