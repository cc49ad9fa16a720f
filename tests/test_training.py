"""End-to-end training on tiny configs: loss falls, the run directory keeps its contract, resume is
exact, init_from warm-starts, and a NaN stops the run with its last good checkpoint."""

import math
import os
import signal

import lightning as L
import pytest
import torch

from pretrainctl.errors import UserError
from pretrainctl.runs import SUMMARY_KEYS, RunDir
from pretrainctl.train import run_train
from tests.helpers import tiny_config


def train_losses(run: RunDir) -> dict[int, float]:
    return {r["step"]: r["train_loss"] for r in run.read_metrics() if "train_loss" in r}


def test_short_run_loss_falls_and_run_dir_contract(tmp_path, cache_dir):
    cfg = tiny_config(["trainer.max_steps=40", "optim.lr=1e-2"], cache_dir)
    summary = run_train(cfg, tmp_path / "run", ["trainer.max_steps=40"])
    run = RunDir(tmp_path / "run")
    losses = train_losses(run)
    assert sorted(losses) == list(range(1, 41))
    first, last = sum(losses[s] for s in range(1, 6)) / 5, sum(losses[s] for s in range(36, 41)) / 5
    assert last < first - 0.5, (first, last)
    for key in SUMMARY_KEYS:
        assert summary[key] is not None, key
    assert summary["status"] == "completed" and summary["step"] == 40
    assert summary["tokens"] == 40 * 4 * 32
    assert summary["train_flops"] == summary["tokens"] * summary["flops_per_token"]
    assert 0 < summary["val_bpb"] < 8 and summary["val_loss"] > 0
    assert run.read_summary() == pytest.approx(summary)
    assert run.overrides.read_text() == "trainer.max_steps=40\n"
    assert run.config.is_file() and run.plan.is_file() and (run.tokenizer / "tokenizer.json").is_file()
    assert run.checkpoint("last").is_file() and run.checkpoint("best").is_file()
    vals = [r for r in run.read_metrics() if "val_bpb" in r]
    assert [r["step"] for r in vals] == [10, 20, 30, 40]
    assert vals[-1]["val_bpb"] == pytest.approx(summary["val_bpb"])


def test_bits_per_byte_counts_every_validation_byte(cache_dir, tmp_path):
    """Over the whole validation split the byte denominator equals the packed text's UTF-8 bytes."""
    from pretrainctl.build import build_experiment

    cfg = tiny_config(["trainer.limit_val_batches=null"], cache_dir)
    exp = build_experiment(cfg)
    exp.datamodule.setup()
    rows = exp.datamodule.val_rows
    nll = exp.objective.nll(exp.model, {"tokens": rows})
    assert int(nll.bytes) == int(exp.tokenizer.token_bytes()[rows[:, 1:]].sum())
    text_bytes = exp.datamodule.text_bytes("val")
    packed = int(exp.tokenizer.token_bytes()[rows].sum())
    assert packed <= text_bytes and packed > 0.9 * text_bytes  # only the ragged tail is dropped


class KillAt(L.Callback):
    """Sends this process SIGTERM after step ``n`` — the real signal path."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.n:
            os.kill(os.getpid(), signal.SIGTERM)


def test_interrupted_and_resumed_run_matches_uninterrupted(tmp_path, cache_dir):
    overrides = ["trainer.max_steps=24", "trainer.val_check_interval=10"]
    full = run_train(tiny_config(overrides, cache_dir), tmp_path / "full")
    assert full["status"] == "completed"
    part = run_train(tiny_config(overrides, cache_dir), tmp_path / "part", callbacks=[KillAt(7)])
    # the signal lands after step 7's callbacks ran; the run stops cleanly after the next step
    assert part["status"] == "interrupted" and part["step"] == 8
    resumed = run_train(tiny_config([*overrides, f"resume={tmp_path / 'part'}"], cache_dir), None)
    assert resumed["status"] == "completed" and resumed["step"] == 24
    a, b = train_losses(RunDir(tmp_path / "full")), train_losses(RunDir(tmp_path / "part"))
    assert sorted(a) == sorted(b) == list(range(1, 25))
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-5, abs=1e-6), step
    assert resumed["val_bpb"] == pytest.approx(full["val_bpb"], rel=1e-5)


def test_resume_errors_write_nothing(tmp_path, cache_dir):
    with pytest.raises(UserError, match="not a run directory"):
        run_train(tiny_config([f"resume={tmp_path / 'nothing'}"], cache_dir), None)
    run_train(tiny_config(["trainer.max_steps=2"], cache_dir), tmp_path / "done")
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "done").rglob("*")}
    with pytest.raises(UserError, match="already holds a run"):
        run_train(tiny_config(["trainer.max_steps=2"], cache_dir), tmp_path / "done")
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "done").rglob("*")} == before


def test_init_from_starts_from_trained_weights(tmp_path, cache_dir):
    run_train(tiny_config(["trainer.max_steps=30", "optim.lr=1e-2"], cache_dir), tmp_path / "base")
    warm = run_train(
        tiny_config([f"init_from={tmp_path / 'base'}", "trainer.max_steps=2"], cache_dir), tmp_path / "warm"
    )
    cold = run_train(tiny_config(["trainer.max_steps=2"], cache_dir), tmp_path / "cold")
    warm_loss, cold_loss = (
        train_losses(RunDir(tmp_path / "warm"))[1],
        train_losses(RunDir(tmp_path / "cold"))[1],
    )
    assert warm_loss < cold_loss - 0.5
    assert warm["val_bpb"] < cold["val_bpb"]
    assert train_losses(RunDir(tmp_path / "warm")).keys() == {1, 2}  # a new run: fresh step count


class PoisonAt(L.Callback):
    def __init__(self, n: int) -> None:
        self.n = n

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        if trainer.global_step == self.n:
            with torch.no_grad():
                pl_module.model.norm.weight.fill_(float("nan"))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, cache_dir):
    cfg = tiny_config(["trainer.max_steps=20", "trainer.val_check_interval=4"], cache_dir)
    summary = run_train(cfg, tmp_path / "run", callbacks=[PoisonAt(6)])
    assert summary["status"] == "diverged" and summary["step"] == 6
    ckpt = torch.load(RunDir(tmp_path / "run").checkpoint("last"), weights_only=False)
    assert ckpt["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert not math.isnan(summary["val_bpb"])


def test_after_optimizer_step_runs_once_per_optimizer_step(tmp_path, cache_dir):
    """With accumulate_grad_batches=2, per-step model updates (MoE bias) follow optimizer steps."""
    calls = []

    class Count(L.Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            model = pl_module.model
            original = model.after_optimizer_step

            def counted() -> None:
                calls.append(trainer.global_step)
                original()

            model.after_optimizer_step = counted

    cfg = tiny_config(["trainer.max_steps=3", "trainer.accumulate_grad_batches=2"], cache_dir)
    run_train(cfg, tmp_path / "run", callbacks=[Count()])
    assert calls == [1, 2, 3]
