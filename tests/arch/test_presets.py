"""Every arch preset trains end to end on the tiny config and its loss falls; its counts are the
parameters it has."""

import pytest

from pretrainctl.cli import options
from pretrainctl.runs import RunDir
from pretrainctl.train import run_train
from tests.helpers import tiny_config

# ~25 s each on 2 shared cores: moe_mla (MLA + MoE, the most moving parts) runs by default, the rest
# with the slow tests.
PRESETS = [p if p == "moe_mla" else pytest.param(p, marks=pytest.mark.slow) for p in options("arch")]


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_trains_and_loss_falls(preset, tmp_path, cache_dir):
    cfg = tiny_config([f"arch={preset}", "trainer.max_steps=30", "optim.lr=1e-2"], cache_dir)
    summary = run_train(cfg, tmp_path / "run")
    assert summary["status"] == "completed" and summary["step"] == 30
    losses = {
        r["step"]: r["train_loss"] for r in RunDir(tmp_path / "run").read_metrics() if "train_loss" in r
    }
    first, last = sum(losses[s] for s in range(1, 6)) / 5, sum(losses[s] for s in range(26, 31)) / 5
    assert last < first - 0.5, (first, last)
    assert summary["params_active"] <= summary["params_total"]
