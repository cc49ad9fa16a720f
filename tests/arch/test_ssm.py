"""SSM: the chunked scan equals the sequential recurrence (float64), cached decoding equals
recomputation, bidirectional use sees both directions, and the hybrid accounting."""

import pytest
import torch

from pretrainctl.arch.hybrid import HybridTransformer
from pretrainctl.arch.ssm import Mamba2, ssd_scan, ssd_sequential
from pretrainctl.errors import UserError


@pytest.mark.parametrize("T,chunk", [(16, 4), (13, 4), (7, 16), (9, 1)])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunked_scan_equals_recurrence(T, chunk, with_state):
    torch.manual_seed(0)
    B, H, P, N = 2, 3, 4, 5
    x = torch.randn(B, T, H, P, dtype=torch.float64)
    dt = torch.rand(B, T, H, dtype=torch.float64) * 0.5
    A = -torch.rand(H, dtype=torch.float64) * 4
    Bm, Cm = torch.randn(B, T, N, dtype=torch.float64), torch.randn(B, T, N, dtype=torch.float64)
    state = torch.randn(B, H, P, N, dtype=torch.float64) if with_state else None
    y, h = ssd_scan(x, dt, A, Bm, Cm, chunk, state)
    y_ref, h_ref = ssd_sequential(x, dt, A, Bm, Cm, state)
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(h, h_ref, atol=1e-12, rtol=1e-10)


def test_layer_is_causal_or_bidirectional_as_asked():
    torch.manual_seed(0)
    ssm = Mamba2(16, d_state=4, head_dim=8, chunk_size=4).double()
    x = torch.randn(1, 10, 16, dtype=torch.float64)
    y = x.clone()
    y[:, 6] += 1.0
    torch.testing.assert_close(ssm(x, causal=True)[:, :6], ssm(y, causal=True)[:, :6])
    assert not torch.allclose(ssm(x, causal=False)[:, :6], ssm(y, causal=False)[:, :6])
    # the backward direction is the forward pass of the reversed sequence
    both = ssm(x, causal=False)
    torch.testing.assert_close(both, 0.5 * (ssm(x, causal=True) + ssm(x.flip(1), causal=True).flip(1)))


@pytest.mark.parametrize("pattern", ["SSA", "P", "SAP"])
def test_hybrid_cached_decoding_equals_recomputation(pattern):
    torch.manual_seed(0)
    model = HybridTransformer(
        50, d_model=32, n_layers=3, n_heads=4, layer_pattern=pattern, d_state=4, ssm_head_dim=16, chunk_size=4
    ).double()
    tokens = torch.randint(0, 50, (2, 11))
    full = model(tokens, causal=True)
    cache = model.init_cache(batch=2, max_len=11)
    pieces = [model.forward_cached(tokens[:, :6], cache)]
    pieces += [model.forward_cached(tokens[:, t : t + 1], cache) for t in range(6, 11)]
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=1e-5)


def test_hybrid_counts_and_cache_accounting():
    V, d, L, H, N, P, K = 300, 32, 3, 4, 4, 16, 4
    model = HybridTransformer(
        V,
        d_model=d,
        n_layers=L,
        n_heads=H,
        layer_pattern="SAP",
        d_state=N,
        ssm_head_dim=P,
        d_conv=K,
        mlp_hidden=64,
    )
    assert model.layer_kinds == ["S", "A", "P"]
    d_in = 2 * d
    nh = d_in // P
    conv_dim = d_in + 2 * N
    ssm_mat = d * (2 * d_in + 2 * N + nh) + conv_dim * K + d_in * d  # in_proj, conv taps, out_proj
    ssm_vec = conv_dim + 3 * nh + d_in  # conv bias, dt_bias, A_log, D, gated norm
    attn_mat = 4 * d * d
    mlp = 3 * d * 64
    matmul = 3 * mlp + 2 * ssm_mat + 2 * attn_mat
    total = V * d + matmul + 2 * ssm_vec + 2 * d + L * 2 * d + d  # + Hymba's two output norms
    count = model.num_params()
    assert (count.total, count.active, count.non_embedding) == (total, total, total - V * d)
    T = 40
    scan = 5 * nh * P * N
    assert model.flops_per_token(T) == 3 * (2 * matmul + 2 * V * d + 2 * 4 * T * d + 2 * scan)
    assert model.kv_cache_bytes_per_token(2) == 2 * (2 * d * 2)  # the A and P layers only
    state = ((K - 1) * conv_dim + nh * P * N) * 2
    assert model.state_bytes(2) == 2 * state
    cache = model.init_cache(batch=1, max_len=1)
    assert cache.layers[0].ssm.numel() + cache.layers[0].conv.numel() == state // 2


def test_bad_pattern_is_a_user_error():
    with pytest.raises(UserError, match="layer_pattern"):
        HybridTransformer(50, d_model=32, n_heads=4, layer_pattern="SAX")
    with pytest.raises(UserError, match="ssm_head_dim"):
        HybridTransformer(50, d_model=32, n_heads=4, ssm_head_dim=24)
