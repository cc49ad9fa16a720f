"""arch.backend=triton (Triton's interpreter on CPU here) against arch.backend=torch on the same
weights: outputs and gradients agree, and parameters are identical so checkpoints move freely."""

import pytest
import torch

from pretrainctl.arch.dense import DenseTransformer
from pretrainctl.arch.moe import MoETransformer
from pretrainctl.errors import UserError


def forward_backward(model, tokens):
    model.zero_grad()
    hidden = model(tokens[:, :-1], causal=True)
    loss = torch.nn.functional.cross_entropy(model.logits(hidden).flatten(0, 1), tokens[:, 1:].flatten())
    loss.backward()
    return hidden.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(
    "make",
    [
        # One layer each: Triton's interpreter costs seconds per kernel launch, whatever the shape.
        lambda: DenseTransformer(50, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, window=4),
        pytest.param(
            lambda: MoETransformer(
                50, d_model=32, n_layers=1, n_heads=2, n_experts=5, expert_hidden=16, top_k=2, first_k_dense=0
            ),
            marks=pytest.mark.slow,  # the MoE kernels themselves are checked in tests/kernels/test_moe.py
        ),
    ],
    ids=["dense_gqa_window", "moe"],
)
def test_triton_backend_matches_torch(make):
    torch.manual_seed(0)
    model = make()
    tokens = torch.randint(0, 50, (1, 12))
    ref_hidden, ref_grads = forward_backward(model, tokens)
    model.set_backend("triton")
    hidden, grads = forward_backward(model, tokens)
    torch.testing.assert_close(hidden, ref_hidden, atol=2e-5, rtol=2e-4)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], atol=2e-5, rtol=2e-4, msg=name)


def test_backend_changes_no_parameter():
    torch.manual_seed(0)
    a = DenseTransformer(50, d_model=32, n_layers=1, n_heads=2, backend="torch")
    torch.manual_seed(0)
    b = DenseTransformer(50, d_model=32, n_layers=1, n_heads=2, backend="triton")
    assert a.state_dict().keys() == b.state_dict().keys()
    b.load_state_dict(a.state_dict())
    tokens = torch.randint(0, 50, (1, 7))
    torch.testing.assert_close(a(tokens), b(tokens), atol=2e-5, rtol=2e-4)


def test_unknown_backend_is_a_user_error():
    with pytest.raises(UserError, match="arch.backend='cuda'"):
        DenseTransformer(50, d_model=32, n_layers=1, n_heads=2, backend="cuda")
