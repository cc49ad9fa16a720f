"""The run directory: the one interface between commands.

    <run>/config.yaml     resolved config         <run>/overrides.txt   the command-line overrides
    <run>/plan.json       the derived plan        <run>/metrics.jsonl   one JSON object per log step
    <run>/summary.json    final numbers            <run>/checkpoints/    last.ckpt, best.ckpt
    <run>/tokenizer/      the tokenizer used

Whole-file writes are atomic (temporary file + rename); metrics are appended a line at a time.
Sweeps and scaling fits read ``summary.json`` files through ``collect``; nothing imports training code.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

SUMMARY_KEYS = (
    "status", "step", "tokens", "train_flops", "val_loss", "val_bpb", "params_total", "params_active",
    "params_non_embedding", "flops_per_token", "tokens_per_s", "wall_s", "device", "git_commit",
)  # fmt: skip


def atomic_write(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    config = property(lambda self: self.path / "config.yaml")
    overrides = property(lambda self: self.path / "overrides.txt")
    plan = property(lambda self: self.path / "plan.json")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    summary = property(lambda self: self.path / "summary.json")
    checkpoints = property(lambda self: self.path / "checkpoints")
    tokenizer = property(lambda self: self.path / "tokenizer")

    def checkpoint(self, which: str = "last") -> Path:
        """``which`` is "last", "best" or a path to a .ckpt file."""
        candidate = Path(which)
        return candidate if candidate.suffix == ".ckpt" else self.checkpoints / f"{which}.ckpt"

    def is_run(self) -> bool:
        return self.config.is_file()

    def append_metrics(self, record: dict) -> None:
        with open(self.metrics, "a") as f:
            f.write(json.dumps(record, default=float) + "\n")

    def read_metrics(self) -> list[dict]:
        if not self.metrics.is_file():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]

    def truncate_metrics(self, after_step: int) -> None:
        """Drop records logged after ``after_step`` (a resumed run re-logs them)."""
        kept = [r for r in self.read_metrics() if r["step"] <= after_step]
        atomic_write(self.metrics, "".join(json.dumps(r) + "\n" for r in kept))

    def read_summary(self) -> dict | None:
        return read_json(self.summary) if self.summary.is_file() else None


def git_commit() -> str | None:
    """The commit of the pretrainctl checkout, with "-dirty" when it has uncommitted changes."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        if sha.returncode:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True, timeout=5
        )
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


def collect(paths: list[str | Path]) -> list[dict]:
    """Summaries of every run directory under ``paths`` (recursively), with "run" and "overrides"."""
    rows = []
    for root in paths:
        for summary in sorted(Path(root).rglob("summary.json")):
            run = RunDir(summary.parent)
            row = read_json(summary)
            row["run"] = str(run.path)
            row["overrides"] = run.overrides.read_text().strip() if run.overrides.is_file() else ""
            rows.append(row)
    return rows
