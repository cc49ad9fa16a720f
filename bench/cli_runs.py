"""Shared driver of the evidence scripts: `pretrainctl train` runs by name under $PRETRAINCTL_RUNS,
reused when their summary.json exists, and readers of their metrics.jsonl / summary.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def train(name: str, overrides: list[str]) -> Path:
    run = Path(os.environ["PRETRAINCTL_RUNS"]) / name
    if not (run / "summary.json").is_file():
        cmd = [str(Path(sys.executable).with_name("pretrainctl")), "train", *overrides]
        print(f"$ PRETRAINCTL_STAMP={name} pretrainctl train {' '.join(overrides)}", flush=True)
        env = {**os.environ, "PRETRAINCTL_STAMP": name}
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    else:
        print(f"(reusing {run})", flush=True)
    return run


def train_all(jobs: dict[str, list[str]], n_jobs: int) -> dict[str, Path]:
    # threads=1 per run: two runs side by side use the 2 cores without oversubscribing them
    with ThreadPoolExecutor(n_jobs) as pool:
        futures = {name: pool.submit(train, name, [*ov, "threads=1"]) for name, ov in jobs.items()}
        return {name: f.result() for name, f in futures.items()}


def metrics(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())
