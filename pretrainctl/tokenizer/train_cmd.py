"""``pretrainctl tokenizer train tokenizer=<option> [data=<option>] out=<dir>``.

Trains the chosen tokenizer option on the data option's training split and writes a tokenizer
directory: the model file, ``tokenizer.json`` (its kind and settings; ``load_tokenizer`` reads it)
and ``report.json`` (options, wall time, vocabulary size, training bytes, compression on the
validation split). ``pretrainctl train tokenizer.path=<dir>`` then uses it for any option.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from omegaconf import DictConfig
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from pretrainctl import build
from pretrainctl.errors import UserError
from pretrainctl.runs import write_json
from pretrainctl.tokenizer.base import Tokenizer

console = Console(width=None if sys.stdout.isatty() else 150)


def _progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,} merges"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


@contextlib.contextmanager
def live_progress(kind: str) -> Iterator[Callable[[str, int, int], None]]:
    """A progress callback for merge learners (one bar per stage); SentencePiece reports nothing
    while it trains, so it gets a spinner with the elapsed time instead."""
    with _progress_bar() as bar:
        tasks: dict[str, int] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            if done % 50 == 0 or done == total:  # redrawing every merge costs more than the merge
                bar.update(tasks[stage], completed=done)

        if kind == "superbpe":
            yield report
        else:
            with console.status(f"training ({kind})"):
                yield report


def train_tokenizer(spec, texts: list[str]) -> tuple[Tokenizer, float]:
    start = time.perf_counter()
    with live_progress(spec.options()["kind"]) as report:
        tok = spec.train(texts, report)
    return tok, time.perf_counter() - start


def run_tokenizer_train(cfg: DictConfig) -> dict:
    if not cfg.get("out"):
        raise UserError("out is required: the directory to write the tokenizer to, e.g. out=tok/superbpe32k.")
    out = Path(str(cfg.out)).expanduser()
    if out.exists() and any(out.iterdir()) and not cfg.overwrite:
        raise UserError(f"out={cfg.out} exists and is not empty; choose another out= or set overwrite=true.")
    if cfg.tokenizer.get("path"):
        raise UserError("tokenizer.path loads a trained tokenizer; `tokenizer train` needs it unset (null).")
    spec = build.build_tokenizer_spec(cfg)
    datamodule = build.build_datamodule(cfg)
    texts = datamodule.train_texts()
    seen = sum(len(t.encode("utf-8")) for t in spec.training_texts(texts))
    console.print(f"training {cfg.tokenizer._target_.rsplit('.', 1)[-1]} on {seen:,} bytes of training text")
    tok, wall = train_tokenizer(spec, texts)
    if out.exists():
        shutil.rmtree(out)
    tok.save(out)
    val = datamodule.source.documents("val") if hasattr(datamodule, "source") else []
    val_bytes = sum(len(t.encode("utf-8")) for t in val)
    val_tokens = sum(len(ids) for ids in tok.encode_batch(val)) if val else 0
    report = {
        "options": spec.options(),
        "vocab_size": tok.vocab_size,
        "train_bytes_seen": seen,
        "train_wall_s": round(wall, 2),
        "val_bytes": val_bytes,
        "val_tokens": val_tokens,
        "val_bytes_per_token": val_bytes / val_tokens if val_tokens else None,
        "fingerprint": tok.fingerprint(),
    }
    write_json(out / "report.json", report)
    bpt = f", {report['val_bytes_per_token']:.3f} bytes/token on validation" if val_tokens else ""
    console.print(f"wrote {out} (vocabulary {tok.vocab_size:,}, trained in {wall:.1f} s{bpt})")
    return report


def hydra_task(cfg: DictConfig) -> None:
    run_tokenizer_train(cfg)
