"""Muon under DDP: two CPU processes (gloo) with 4 rows each train exactly like one process with the
same 8 rows per step. Every rank holds the all-reduced gradient and computes the same orthogonalized
update, so the weights after a few steps must match the single-process run's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.helpers import TINY

STEPS = ["trainer.max_steps=3", "trainer.val_check_interval=3", "optim=muon"]


def train(tmp_path, cache_dir, stamp: str, *overrides: str) -> dict[str, torch.Tensor]:
    env = {**os.environ, "PRETRAINCTL_RUNS": str(tmp_path), "PRETRAINCTL_CACHE": str(cache_dir),
           "PRETRAINCTL_STAMP": stamp}  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "pretrainctl.cli", "train", *TINY, *STEPS, *overrides],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / stamp / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["step"] == 3
    assert summary["tokens"] == 3 * 8 * 32  # 8 rows of 32 tokens per optimizer step in both runs
    return load(tmp_path / stamp / "checkpoints" / "last.ckpt")


def load(path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.slow
def test_muon_ddp_two_ranks_match_one_process_with_the_same_global_batch(tmp_path, cache_dir):
    single = train(tmp_path, cache_dir, "single", "data.batch_size=8", "checkpoint.every_n_steps=1")
    ddp = train(tmp_path, cache_dir, "ddp", "trainer=ddp", "data.batch_size=4")
    assert single.keys() == ddp.keys()
    first = load(tmp_path / "single" / "checkpoints" / "step-000001.ckpt")
    hidden = [n for n, w in single.items() if w.ndim == 2 and "embed" not in n]
    assert hidden, list(single)
    for name in hidden:  # the Muon matrices moved well beyond the tolerance between steps 1 and 3
        assert (single[name] - first[name]).abs().max() > 1e-3, name
    for name, w in single.items():
        torch.testing.assert_close(ddp[name], w, rtol=1e-4, atol=1e-5, msg=name)
