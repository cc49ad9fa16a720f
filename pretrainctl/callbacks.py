"""Lightning callbacks that keep the run-directory contract: metrics.jsonl, last/best checkpoints,
a checkpoint on Ctrl-C / SIGTERM, and the rich progress bar."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time

import lightning as L
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from pretrainctl.runs import RunDir


def save_checkpoint(trainer: L.Trainer, path) -> None:
    """Atomic: write a temporary file on rank 0, then rename (all ranks must call this)."""
    tmp = path.with_name(f".{path.name}.tmp")
    trainer.save_checkpoint(tmp)
    if trainer.is_global_zero:
        os.replace(tmp, path)


class MetricsWriter(L.Callback):
    """Appends one record per ``every`` steps (mean train loss since the last record, LR, grad norm,
    throughput) and one per validation to metrics.jsonl."""

    def __init__(self, run: RunDir, tokens_per_step: int, every: int) -> None:
        self.run, self.tokens_per_step, self.every = run, tokens_per_step, max(1, every)
        self._losses: list[float] = []
        self._segment_start = time.perf_counter()
        self._interval = 0.0  # training seconds since the last record (validation excluded)
        self._step0 = 0
        self.train_seconds = 0.0  # training seconds of this process, validation excluded

    def on_train_start(self, trainer, pl_module) -> None:
        self._segment_start, self._step0 = time.perf_counter(), trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if outputs is None and getattr(pl_module, "_skipped", False):
            return  # a batch the spike guard skipped: no step, no loss to average
        self._losses.append(pl_module.last_loss)
        if step % self.every and step != trainer.max_steps:
            return
        now = time.perf_counter()
        self._interval += now - self._segment_start
        record = {
            "step": step,
            "tokens": step * self.tokens_per_step,
            "train_loss": sum(self._losses) / len(self._losses),
            "lr": pl_module.current_lr(),
            "grad_norm": pl_module.last_grad_norm,
            "tokens_per_s": (step - self._step0) * self.tokens_per_step / max(self._interval, 1e-9),
            **pl_module.last_metrics,
        }
        if trainer.is_global_zero:
            self.run.append_metrics(record)
        self.train_seconds += self._interval
        self._losses.clear()
        self._interval, self._segment_start, self._step0 = 0.0, now, step

    def on_validation_start(self, trainer, pl_module) -> None:
        self._interval += time.perf_counter() - self._segment_start

    def on_validation_end(self, trainer, pl_module) -> None:
        self._segment_start = time.perf_counter()
        if trainer.sanity_checking or not trainer.is_global_zero or trainer.state.fn != "fit":
            return
        step = trainer.global_step
        self.run.append_metrics(
            {"step": step, "tokens": step * self.tokens_per_step, **pl_module.val_results}
        )


class CheckpointSaver(L.Callback):
    """last.ckpt after every validation, best.ckpt when the validation metric improves, and with
    ``every_n_steps`` also checkpoints/step-XXXXXX.ckpt every n optimizer steps (kept: WSD decay
    branches start from them with ``decay_from=``, soups average them)."""

    def __init__(self, run: RunDir, monitor: str = "val_bpb", every_n_steps: int | None = None) -> None:
        self.run, self.monitor, self.every_n_steps = run, monitor, every_n_steps
        self.best = math.inf

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        path = self.run.checkpoints / f"step-{step:06d}.ckpt"
        if self.every_n_steps and step and step % self.every_n_steps == 0 and not path.exists():
            self.run.checkpoints.mkdir(parents=True, exist_ok=True)
            save_checkpoint(trainer, path)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        self.run.checkpoints.mkdir(parents=True, exist_ok=True)
        save_checkpoint(trainer, self.run.checkpoint("last"))
        value = pl_module.val_results.get(self.monitor, pl_module.val_results.get("val_loss", math.inf))
        if value < self.best:
            self.best = value
            save_checkpoint(trainer, self.run.checkpoint("best"))

    def state_dict(self) -> dict:
        return {"best": self.best}

    def load_state_dict(self, state: dict) -> None:
        self.best = state["best"]


class GracefulStop(L.Callback):
    """First Ctrl-C or SIGTERM: finish the current step, save last.ckpt, stop. A second Ctrl-C aborts."""

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.requested: str | None = None
        self._previous: dict[int, object] = {}

    def _handler(self, signum, frame) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def on_train_start(self, trainer, pl_module) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            # Outside the main thread (some launchers) signals cannot be caught: leave them alone.
            with contextlib.suppress(ValueError):
                self._previous[sig] = signal.signal(sig, self._handler)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.requested is None:
            return
        self.run.checkpoints.mkdir(parents=True, exist_ok=True)
        save_checkpoint(trainer, self.run.checkpoint("last"))
        trainer.should_stop = True

    def on_train_end(self, trainer, pl_module) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


class RichProgress(L.Callback):
    """One bar over optimizer steps with loss, tokens/s and ETA; a status line while validating."""

    def __init__(self, tokens_per_step: int, console: Console | None = None) -> None:
        self.tokens_per_step = tokens_per_step
        self.console = console or Console(stderr=True)
        self.progress: Progress | None = None
        self._t0 = 0.0
        self._step0 = 0

    def on_train_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  {task.fields[tps]:,.0f} tok/s  {task.fields[val]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.task = self.progress.add_task(
            "train", total=trainer.max_steps, completed=trainer.global_step, loss=math.nan, tps=0.0, val=""
        )
        self.progress.start()
        self._t0, self._step0 = time.perf_counter(), trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.progress is None:
            return
        tps = (
            (trainer.global_step - self._step0)
            * self.tokens_per_step
            / max(time.perf_counter() - self._t0, 1e-9)
        )
        self.progress.update(self.task, completed=trainer.global_step, loss=pl_module.last_loss, tps=tps)

    def on_validation_start(self, trainer, pl_module) -> None:
        if self.progress is not None and not trainer.sanity_checking:
            self.progress.update(self.task, description="validate")

    def on_validation_end(self, trainer, pl_module) -> None:
        if self.progress is None:
            return
        bpb = pl_module.val_results.get("val_bpb")
        val = f"val_bpb {bpb:.4f}" if bpb is not None else f"val_loss {pl_module.val_results['val_loss']:.4f}"
        self.progress.update(self.task, description="train", val=val)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
