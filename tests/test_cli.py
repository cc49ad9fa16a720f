"""The CLI as a user types it (subprocesses): errors, +group, Hydra flags, a sweep, eval, generate."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import TINY


def cli(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pretrainctl.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def env(tmp_path, cache_dir):
    return {"PRETRAINCTL_RUNS": str(tmp_path / "runs"), "PRETRAINCTL_CACHE": str(cache_dir)}


def test_help_lists_commands_and_groups():
    out = cli("--help")
    assert out.returncode == 0
    for word in ("train", "eval", "generate", "scaling plan", "llama_124m", "moe_mla", "cosine", "wsd"):
        assert word in out.stdout


@pytest.mark.parametrize(
    "args,expected",
    [
        (["train", "arch=nope"], "unknown arch option 'nope'; choose one of: dense"),
        (["train", "+optim=sgd"], "unknown optim option 'sgd'"),
        (["train", "optim.lrr=1"], "unknown setting 'optim.lrr': optim has lr"),
        (["frobnicate"], "unknown command 'frobnicate'"),
        (["eval", "run=/no/such/run"], "not a run directory"),
        (["train", "data=files", "data.source.paths=[/no/such.jsonl]"], "/no/such.jsonl does not exist"),
    ],
)
def test_user_errors_are_one_sentence_exit_2(args, expected, env):
    out = cli(*args, env=env)
    assert out.returncode == 2, out.stderr
    assert expected in out.stderr
    assert "Traceback" not in out.stderr
    assert not (Path(env["PRETRAINCTL_RUNS"]).exists() and any(Path(env["PRETRAINCTL_RUNS"]).iterdir()))


def test_hydra_flags_still_work(env):
    out = cli("train", "--cfg", "job", "+arch=llama_124m", env=env)
    assert out.returncode == 0 and "d_model: 768" in out.stdout
    assert cli("train", "--info", env=env).returncode == 0


def test_sweep_eval_generate(env, tmp_path):
    out = cli(
        "train", "--multirun", "optim.lr=1e-3,3e-3", "+arch=dense", *TINY, "trainer.max_steps=6", env=env
    )
    assert out.returncode == 0, out.stderr[-2000:]
    sweeps = list((tmp_path / "runs").glob("sweep-*"))
    assert len(sweeps) == 1
    rows = json.loads((sweeps[0] / "sweep.json").read_text())
    assert sorted(r["overrides"].split()[0] for r in rows) == ["optim.lr=0.001", "optim.lr=0.003"]
    assert all(r["status"] == "completed" and r["val_bpb"] > 0 for r in rows)
    assert "optim.lr=0.003" in out.stdout and "val_bpb" in out.stdout  # the results table
    run = rows[0]["run"]
    ev = cli("eval", f"run={run}", "ckpt=last", env=env)
    assert ev.returncode == 0, ev.stderr[-2000:]
    result = json.loads((Path(run) / "eval" / "last.json").read_text())
    # eval reads the whole validation split; training validated a 4-batch slice of it
    lines = (Path(run) / "metrics.jsonl").read_text().splitlines()
    trained_val = [r for r in map(json.loads, lines) if "val_tokens" in r][-1]
    assert result["val_tokens"] > trained_val["val_tokens"] and result["val_bpb"] > 0
    gen = cli("generate", f"run={run}", "prompt='def '", "max_new_tokens=12", "top_k=5", env=env)
    assert gen.returncode == 0, gen.stderr[-2000:]
    assert gen.stdout.startswith("def ")
    assert len(gen.stdout) > len("def ")


def test_ddp_on_cpu_with_two_processes(env, tmp_path):
    out = cli("train", "trainer=ddp", *TINY, "trainer.max_steps=4", "trainer.val_check_interval=2", env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    (run,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["step"] == 4
    assert summary["tokens"] == 4 * 2 * 4 * 32  # two ranks, each a batch of 4 rows x 32 tokens per step
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_shell_completion_completes_groups_after_the_command():
    out = subprocess.run(
        [sys.executable, "-m", "pretrainctl.cli", "-sc", "query=bash"],
        capture_output=True,
        text=True,
        env={**os.environ, "COMP_LINE": "pretrainctl train arch="},
        timeout=120,
    )
    assert "arch=dense" in out.stdout and "arch=llama_124m" in out.stdout
