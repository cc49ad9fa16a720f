"""MoE: grouped dispatch against a per-expert reference (values and gradients), routing rules,
capacity dropping, balancing (auxiliary loss and the aux-loss-free bias), accounting."""

import pytest
import torch
import torch.nn.functional as F

from pretrainctl.arch.moe import MoE, MoETransformer, moe_ffn
from pretrainctl.errors import UserError


def reference(x, idx, weight, w_gate, w_up, w_down, keep=None):
    """Per-token, per-assignment loop: the plain definition of the routed FFN."""
    rows = []
    for t in range(x.shape[0]):
        acc = torch.zeros_like(x[t])
        for j in range(idx.shape[1]):
            if keep is not None and not keep[t, j]:
                continue
            e = idx[t, j]
            acc = acc + weight[t, j] * ((F.silu(x[t] @ w_gate[e]) * (x[t] @ w_up[e])) @ w_down[e])
        rows.append(acc)
    return torch.stack(rows)


@pytest.mark.parametrize("use_grouped", [False, True])  # True: torch._grouped_mm (CPU float32 works)
@pytest.mark.parametrize("drop", [False, True])
def test_dispatch_matches_reference_values_and_gradients(use_grouped, drop):
    torch.manual_seed(0)
    N, D, H, E, k = 13, 8, 12, 6, 2
    x = torch.randn(N, D, requires_grad=True)
    w_gate, w_up = (torch.randn(E, D, H, requires_grad=True) for _ in range(2))
    w_down = torch.randn(E, H, D, requires_grad=True)
    idx = torch.stack([torch.randperm(4)[:k] for _ in range(N)])  # experts 4 and 5 get no tokens
    weight = torch.rand(N, k, requires_grad=True)
    keep = torch.rand(N, k) > 0.3 if drop else None
    leaves = (x, weight, w_gate, w_up, w_down)
    grad_out = torch.randn(N, D)
    got = moe_ffn(x, idx, weight, w_gate, w_up, w_down, keep=keep, use_grouped=use_grouped)
    got_grads = torch.autograd.grad((got * grad_out).sum(), leaves)
    want = reference(x, idx, weight, w_gate, w_up, w_down, keep)
    want_grads = torch.autograd.grad((want * grad_out).sum(), leaves)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)
    assert got_grads[2][4:].abs().max() == 0  # zero-token experts get zero gradient


def test_sigmoid_routing_normalizes_and_group_limit_holds():
    torch.manual_seed(0)
    moe = MoE(16, n_experts=8, expert_hidden=8, top_k=2, score_func="sigmoid", n_groups=4, topk_groups=1)
    x = torch.randn(50, 16)
    idx, weight, scores = moe.route(x)
    torch.testing.assert_close(weight.sum(-1), torch.ones(50))
    assert ((idx // 2)[:, 0] == (idx // 2)[:, 1]).all()  # both experts from the single chosen group
    soft = MoE(16, n_experts=8, expert_hidden=8, top_k=2, score_func="softmax")
    idx, weight, scores = soft.route(x)
    torch.testing.assert_close(weight, scores.gather(1, idx))  # DeepSeek-V2: softmax gates as they are
    assert torch.equal(idx.sort(-1).values, scores.topk(2).indices.sort(-1).values)


def test_capacity_drops_overflow_in_token_order():
    moe = MoE(8, n_experts=4, expert_hidden=8, top_k=1, capacity_factor=1.0, n_shared_experts=0)
    idx = torch.tensor([[0], [0], [0], [1], [0], [2], [3], [0]])  # capacity = 8 * 1 / 4 = 2
    keep = moe._capacity_keep(idx)
    assert keep.flatten().tolist() == [True, True, False, True, False, True, True, False]
    moe.train()
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[0] = 1.0  # everyone prefers expert 0
    moe(torch.rand(2, 8, 8) + 0.1)
    stats = moe.diagnostics("")
    assert stats["dropped"] == pytest.approx(1 - 4 / 16)  # capacity 4 of 16 assignments kept
    assert stats["max_load"] == 1.0 and stats["max_violation"] == pytest.approx(3.0)


def test_aux_loss_is_switch_style():
    moe = MoE(8, n_experts=4, expert_hidden=8, top_k=2, balance="aux_loss", aux_loss_weight=0.1)
    moe.train()
    torch.nn.init.zeros_(moe.router.weight)  # uniform probabilities: E * sum f_i / E = 1
    moe(torch.randn(3, 5, 8))
    assert moe.aux_loss().item() == pytest.approx(0.1)
    torch.nn.init.normal_(moe.router.weight)
    moe(torch.randn(3, 5, 8))
    (grad,) = torch.autograd.grad(moe.aux_loss(), moe.router.weight)
    assert grad.abs().sum() > 0


def test_aux_free_bias_moves_toward_balance():
    torch.manual_seed(0)
    moe = MoE(16, n_experts=8, expert_hidden=8, top_k=2, balance="aux_free", bias_update_speed=0.01)
    moe.train()
    with torch.no_grad():
        moe.router.weight.normal_(std=0.1)
        moe.router.weight[3] += 0.5  # expert 3 is overloaded from the start
    x = torch.randn(256, 16).abs()
    moe(x)
    first = moe.diagnostics("")["max_violation"]
    for _ in range(200):
        moe.after_optimizer_step()
        moe(x)
    last = moe.diagnostics("")
    assert moe.expert_bias[3] < 0 and moe.expert_bias.argmin() == 3
    assert last["max_violation"] < 0.5 * first, (first, last["max_violation"])
    assert last["bias_min"] == pytest.approx(float(moe.expert_bias.min()))
    none = MoE(16, n_experts=8, expert_hidden=8, top_k=2, balance="none")
    none.train()
    none(x)
    none.after_optimizer_step()
    assert none.expert_bias.abs().sum() == 0 and none.aux_loss() is None


def hand_count(V, d, L, H, E, He, k, S, first_dense, hidden):
    attn = 4 * d * d
    dense_mlp = 3 * d * hidden
    expert = 3 * d * He
    moe_total = d * E + E * expert + S * expert  # router, routed, shared
    moe_active = d * E + k * expert + S * expert
    n_moe = L - first_dense
    blocks = L * attn + first_dense * dense_mlp + n_moe * moe_total
    total = V * d + blocks + L * 2 * d + d
    active_blocks = L * attn + first_dense * dense_mlp + n_moe * moe_active
    return total, total - (blocks - active_blocks), total - V * d, active_blocks


def test_counts_match_hand_count():
    V, d, L, H, E, He, k, S = 500, 32, 3, 4, 8, 16, 2, 1
    model = MoETransformer(
        V, d_model=d, n_layers=L, n_heads=H, n_experts=E, expert_hidden=He, top_k=k, mlp_hidden=64
    )
    total, active, non_embedding, active_matmul = hand_count(V, d, L, H, E, He, k, S, 1, 64)
    count = model.num_params()
    assert (count.total, count.active, count.non_embedding) == (total, active, non_embedding)
    T = 32
    assert model.flops_per_token(T) == 3 * (2 * active_matmul + 2 * V * d + L * 4 * T * d)


def test_model_hooks_and_state():
    torch.manual_seed(0)
    model = MoETransformer(
        60, d_model=16, n_layers=3, n_heads=2, n_experts=4, expert_hidden=8, balance="aux_loss"
    )
    model.train()
    model(torch.randint(0, 60, (2, 7)))
    assert model.aux_loss() is not None and model.aux_loss().requires_grad
    diag = model.diagnostics()
    assert {"moe/L1/max_violation", "moe/L2/entropy", "moe/max_violation"} <= diag.keys()
    assert "moe/L0/max_violation" not in diag  # first_k_dense=1
    assert "blocks.1.mlp.expert_bias" in model.state_dict()  # routing bias is checkpointed


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="score_func"):
        MoE(8, 4, 8, 2, score_func="relu")
    with pytest.raises(UserError, match="balance"):
        MoE(8, 4, 8, 2, balance="loss")
    with pytest.raises(UserError, match="top_k"):
        MoE(8, 4, 8, 5)
    with pytest.raises(UserError, match="n_groups"):
        MoE(8, 6, 8, 2, n_groups=4, topk_groups=1)
