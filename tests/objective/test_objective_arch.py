"""Every objective option composes with every architecture option (through build.py, as
tests/test_configs.py does for each group), and the bidirectional objectives learn on dense and MoE-MLA."""

from __future__ import annotations

import math

import pytest
import torch

from pretrainctl import build
from pretrainctl.cli import options
from pretrainctl.tokenizer.bytes import ByteTokenizer
from tests.helpers import tiny_config
from tests.objective.test_compose import OBJECTIVES as COMPOSE_TESTED

TOK = ByteTokenizer()


# tests/objective/test_compose.py covers ar, mtp and distill; every other objective option (and each
# noise schedule of diffusion) is covered here, so a new option is tested by default.
OTHERS = [o for o in options("objective") if o not in COMPOSE_TESTED] + [
    f"diffusion/{noise}" for noise in options("objective/noise")
]


@pytest.mark.parametrize("arch", options("arch"))
@pytest.mark.parametrize("objective", OTHERS)
def test_objective_composes_with_arch(objective, arch, cache_dir):
    name, _, noise = objective.partition("/")
    overrides = [f"objective={name}", f"arch={arch}", "tokenizer=bytes"]
    cfg = tiny_config(overrides + ([f"objective/noise={noise}"] if noise else []), cache_dir)
    torch.manual_seed(0)
    model = build.build_model(cfg, TOK)
    obj = build.build_objective(cfg, TOK)
    batch = {"tokens": torch.randint(0, 256, (2, cfg.data.seq_len + 1))}
    out = obj.loss(model, batch)
    out.loss.backward()
    assert math.isfinite(float(out.loss)) and out.n_targets > 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.embed.weight.grad is not None and model.embed.weight.grad.abs().sum() > 0
    nll = obj.nll(model, batch)
    assert math.isfinite(float(nll.bits)) and float(nll.bits) > 0 and int(nll.tokens) > 0


@pytest.mark.parametrize("objective", ["diffusion", "mlm", "diffusion/cosine"])
@pytest.mark.parametrize("arch", ["dense", "moe_mla"])
def test_bidirectional_objectives_learn(objective, arch, cache_dir):
    """40 AdamW steps on the tiny config: the mean loss of the last 5 steps is well below the first 5."""
    name, _, noise = objective.partition("/")
    overrides = [f"objective={name}", f"arch={arch}", "tokenizer=bytes", "optim.lr=1e-2"]
    cfg = tiny_config(overrides + ([f"objective/noise={noise}"] if noise else []), cache_dir)
    torch.manual_seed(0)
    exp = build.build_experiment(cfg)
    exp.datamodule.setup("fit")
    optimizer = exp.module.optimizer_builder.build(exp.module)
    losses = []
    for step, batch in enumerate(exp.datamodule.train_dataloader()):
        if step == 40:
            break
        out = exp.objective.loss(exp.model, batch)
        aux = exp.model.aux_loss()
        optimizer.zero_grad()
        (out.loss + (aux if aux is not None else 0)).backward()
        optimizer.step()
        exp.model.after_optimizer_step()
        losses.append(float(out.loss))
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 1.0, (first, last)
