"""Muon: Newton–Schulz orthogonalizes, the partition covers every parameter once, the AdamW part
matches torch's AdamW, the variants do what their papers define, and training loss falls."""

import pytest
import torch
from torch import nn

from pretrainctl.arch.dense import DenseTransformer
from pretrainctl.optim.groups import param_roles
from pretrainctl.optim.muon import KroneckerWhitened, MuonBuilder, NewtonSchulz, SpectralPower, newton_schulz


@pytest.mark.parametrize("shape", [(64, 64), (256, 64), (64, 256), (100, 37), (192, 192)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_newton_schulz_is_near_orthogonal(shape, dtype):
    torch.manual_seed(0)
    k = min(shape)
    Q1, _ = torch.linalg.qr(torch.randn(shape[0], k))
    Q2, _ = torch.linalg.qr(torch.randn(shape[1], k))
    # singular values spread over a decade: 5 quintic steps lift sigma/||G||_F down to ~1e-3 into the
    # band (each step multiplies a small sigma by 3.4445); smaller directions stay unorthogonalized
    G = Q1 @ torch.diag(torch.logspace(0, -1, k)) @ Q2.T
    X = newton_schulz(G, steps=5, dtype=dtype).float()
    assert X.shape == G.shape
    s = torch.linalg.svdvals(X)
    # Jordan's quintic lands singular values in a band around 1, not exactly on it
    assert s.min() > 0.55 and s.max() < 1.25, (s.min(), s.max())
    plain = torch.linalg.svdvals(G)
    assert plain.max() / plain.min() > 9  # the input really was far from orthogonal
    # and it is the polar factor: same singular vectors as U V^T of the exact SVD
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    cos = (X * (U @ Vh)).sum() / (X.norm() * (U @ Vh).norm())
    assert cos > 0.97


def test_roles_cover_every_parameter_once():
    model = DenseTransformer(vocab_size=50, d_model=32, n_layers=2, n_heads=4, tie_embeddings=False)
    roles = param_roles(model)
    assert roles["embedding"] == [model.embed.weight] and roles["head"] == [model.head.weight]
    assert all(p.dim() == 2 for p in roles["hidden"]) and all(p.dim() == 1 for p in roles["vector"])
    assert sum(len(v) for v in roles.values()) == len(list(model.parameters()))
    opt = MuonBuilder(NewtonSchulz()).build(model)
    muon = [g for g in opt.param_groups if g.get("muon")][0]
    assert len(muon["params"]) == 2 * (4 + 3)  # q k v o gate up down per layer


def test_adamw_part_matches_torch_adamw():
    torch.manual_seed(0)
    a = nn.Sequential(nn.Embedding(10, 8), nn.LayerNorm(8))
    b = nn.Sequential(nn.Embedding(10, 8), nn.LayerNorm(8))
    b.load_state_dict(a.state_dict())
    ours = MuonBuilder(NewtonSchulz(), adamw_lr=1e-2).build(a)
    ref = torch.optim.AdamW(b.parameters(), lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    for _ in range(5):
        x = torch.randint(0, 10, (4, 3))
        for m, opt in ((a, ours), (b, ref)):
            opt.zero_grad()
            m(x).pow(2).sum().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_muon_step_is_orthogonal_and_shape_scaled():
    p = nn.Parameter(torch.zeros(96, 32))  # fan_out / fan_in = 3
    opt = MuonBuilder(NewtonSchulz(), lr=0.1, momentum=0.0).build(nn.ParameterList([p]))
    p.grad = torch.randn(96, 32)
    opt.step()
    s = torch.linalg.svdvals(p.detach())
    assert s.max() == pytest.approx(0.1 * 3**0.5, rel=0.25) and s.min() > 0.5 * 0.1 * 3**0.5


def test_spectral_power_interpolates_between_muon_and_sgd():
    torch.manual_seed(0)
    M = torch.randn(20, 12)
    U, S, Vh = torch.linalg.svd(M, full_matrices=False)
    torch.testing.assert_close(SpectralPower(0.0)(M, M, {}), U @ Vh, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(SpectralPower(1.0)(M, M, {}), M / S[0], atol=1e-5, rtol=1e-5)
    s = torch.linalg.svdvals(SpectralPower(0.5)(M, M, {}))
    torch.testing.assert_close(s, (S / S[0]).sqrt(), atol=1e-5, rtol=1e-5)


def test_kronecker_whitening_reduces_to_muon_for_isotropic_factors():
    """With identity-like gradient statistics the whitening is a no-op: Mousse = Muon."""
    torch.manual_seed(0)
    M = torch.randn(16, 16)
    iso = torch.eye(16) * 3.0  # L = R = G G^T = 9 I
    out = KroneckerWhitened(alpha=0.125)(M, iso, {})
    torch.testing.assert_close(out, newton_schulz(M), atol=1e-4, rtol=1e-4)
    # anisotropic gradients: the update differs from Muon's but is grafted to the Frobenius norm of an
    # orthogonalized matrix (singular values in Newton-Schulz's band around 1)
    g = torch.randn(16, 16) @ torch.diag(torch.logspace(0, -3, 16))
    out = KroneckerWhitened(alpha=0.25)(M, g, {})
    assert 0.6 * 16**0.5 < float(out.norm()) < 1.25 * 16**0.5
    assert (out - newton_schulz(M)).norm() > 0.1 * out.norm()


@pytest.mark.parametrize("direction", [NewtonSchulz(), SpectralPower(0.125), KroneckerWhitened(every=2)])
def test_training_loss_falls(direction):
    torch.manual_seed(0)
    model = DenseTransformer(vocab_size=40, d_model=32, n_layers=2, n_heads=4)
    opt = MuonBuilder(direction, lr=0.02, adamw_lr=1e-2).build(model)
    data = torch.arange(40).repeat(4, 2)[:, :33]  # a learnable cyclic sequence
    losses = []
    for _ in range(20):
        h = model(data[:, :-1])
        loss = nn.functional.cross_entropy(model.logits(h).flatten(0, 1), data[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::5]
    state = opt.state_dict()  # checkpointable
    assert len(state["state"]) == len(list(model.parameters()))
