"""Every objective of this family (ar, mtp, distill) composes with every architecture option: each
pair builds through build.py on tiny sizes and runs one loss + backward with finite gradients."""

import pytest
import torch

from pretrainctl import build
from pretrainctl.cli import options
from pretrainctl.tokenizer.bytes import ByteTokenizer
from tests.helpers import tiny_config
from tests.objective.teacher import untrained_run

OBJECTIVES = ["ar", "mtp", "distill"]


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, cache_dir):
    # a teacher of another architecture and width than the students
    return untrained_run(tmp_path_factory.mktemp("teacher"), ["arch=gqa", "arch.d_model=48"], cache_dir)


@pytest.mark.parametrize("arch", options("arch"))
@pytest.mark.parametrize("objective", OBJECTIVES)
def test_objective_composes_with_arch(objective, arch, teacher_run, cache_dir):
    extra = {"distill": [f"objective.teacher={teacher_run}"], "mtp": ["objective.depth=2"]}.get(objective, [])
    cfg = tiny_config([f"arch={arch}", f"objective={objective}", "tokenizer=bytes", *extra], cache_dir)
    tokenizer = ByteTokenizer()
    torch.manual_seed(0)
    model = build.build_model(cfg, tokenizer)
    obj = build.build_objective(cfg, tokenizer)
    tokens = torch.randint(0, 256, (2, 17))
    out = obj.loss(model, {"tokens": tokens})
    assert torch.isfinite(out.loss) and out.n_targets == 2 * 16
    out.loss.backward()
    trained = [p for p in [*model.parameters(), *obj.parameters()] if p.grad is not None]
    assert model.embed.weight.grad is not None and all(torch.isfinite(p.grad).all() for p in trained)
    nll = obj.nll(model, {"tokens": tokens})
    assert torch.isfinite(nll.bits) and int(nll.tokens) == 32
