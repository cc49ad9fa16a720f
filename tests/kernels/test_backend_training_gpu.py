"""GPU: a short training run with arch.backend=triton follows the torch backend's per-step losses
(bf16 autocast, same init, same batches). Needs only torch + triton + pretrainctl.arch."""

import pytest
import torch

from tests.kernels._tol import need_gpu

pytestmark = pytest.mark.gpu


def losses(backend: str, make, steps: int = 8, objective: bool = False) -> list[float]:
    """``objective``: the loss through the ar objective's head, which arch.backend=triton routes to the
    fused linear cross-entropy (bf16 hidden, float32 head weight under autocast, as trainer=gpu runs it)."""
    from pretrainctl.objective.ar import NextTokenObjective

    torch.manual_seed(0)
    model = make().cuda()
    model.set_backend(backend)
    obj = NextTokenObjective(torch.ones(model.vocab_size, dtype=torch.long), chunk_size=1024)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator(device="cpu").manual_seed(1)
    out = []
    for _ in range(steps):
        tokens = torch.randint(0, model.vocab_size, (8, 257), generator=gen).cuda()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            hidden = model(tokens[:, :-1], causal=True)
            if objective:
                keep = torch.ones_like(tokens[:, 1:], dtype=torch.bool)
                loss = obj.head_loss(model, hidden, tokens[:, 1:], keep)[0]
            else:
                logits = model.logits(hidden).float()
        if not objective:
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        out.append(loss.item())
    return out


@pytest.mark.parametrize("family,objective", [("dense", False), ("moe", False), ("dense", True)])
def test_triton_backend_training_matches_torch(family, objective):
    need_gpu()
    from pretrainctl.arch.dense import DenseTransformer
    from pretrainctl.arch.moe import MoETransformer

    make = {
        "dense": lambda: DenseTransformer(512, d_model=256, n_layers=4, n_heads=4, n_kv_heads=2),
        "moe": lambda: MoETransformer(
            512, d_model=256, n_layers=4, n_heads=4, n_experts=8, expert_hidden=128
        ),
    }[family]
    ref, ours = losses("torch", make, objective=objective), losses("triton", make, objective=objective)
    # bf16 noise between two correct implementations grows over steps; the first steps must agree closely
    for step, (a, b) in enumerate(zip(ref, ours)):
        assert abs(a - b) <= 0.02 * (step + 1) * abs(a) / 4 + 0.01, (step, ref, ours)
