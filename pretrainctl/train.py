"""``pretrainctl train``: build an experiment from a composed config, fit it, and leave a run directory."""

from __future__ import annotations

import logging
import os
import platform
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from pretrainctl.build import build_experiment, build_trainer
from pretrainctl.callbacks import CheckpointSaver, GracefulStop, MetricsWriter, RichProgress, save_checkpoint
from pretrainctl.errors import NonFiniteLossError, UserError
from pretrainctl.optim.averaging import EMA
from pretrainctl.runs import RunDir, git_commit, write_json

console = Console(stderr=True)
# Lightning's start-up banners ("GPU available", tips) drown the plan table; warnings still show.
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)")
# Validation sums are reduced across ranks by the module itself before logging.
warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed setting")


def device_name(accelerator: str) -> str:
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name()}"
    return f"cpu: {platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def resume_config(run: RunDir, overrides: list[str]) -> DictConfig:
    """The saved config of ``run``, with plain ``key=value`` overrides applied (e.g. a longer max_steps)."""
    if not run.is_run():
        raise UserError(f"resume={run.path} is not a run directory (it has no config.yaml).")
    if not run.checkpoint("last").is_file():
        raise UserError(f"resume={run.path} has no checkpoints/last.ckpt to continue from.")
    cfg = OmegaConf.load(run.config)
    extra = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != "resume"]
    if extra:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([o.lstrip("+") for o in extra]))
    cfg.resume = str(run.path)
    return cfg


def decay_config(cfg: DictConfig, overrides: list[str]) -> tuple[DictConfig, int]:
    """``decay_from=<run>/checkpoints/step-N.ckpt``: that run's saved config with plain ``key=value``
    overrides; the schedule's decay phase is set to the steps from N to ``trainer.max_steps``."""
    checkpoint = Path(cfg.decay_from)
    source = RunDir(checkpoint.parent.parent)
    if not checkpoint.is_file() or not source.is_run():
        raise UserError(f"decay_from={checkpoint} is not a checkpoint inside a run's checkpoints/ folder.")
    step = torch.load(checkpoint, map_location="cpu", weights_only=False)["global_step"]
    extra = [o.lstrip("+") for o in overrides if o.split("=", 1)[0].lstrip("+~") != "decay_from"]
    new = OmegaConf.merge(OmegaConf.load(source.config), OmegaConf.from_dotlist(extra))
    new.decay_from, new.resume = str(checkpoint), None
    max_steps = new.trainer.max_steps
    if max_steps is None or max_steps <= step:
        raise UserError(f"decay_from: set trainer.max_steps to {step} + the number of decay steps.")
    if "decay_steps" not in new.schedule:
        raise UserError("decay_from needs a schedule with a decay phase (decay_steps): schedule=wsd.")
    new.schedule.decay_steps = int(max_steps) - step
    return new, step


def print_plan(exp, cfg: DictConfig, run: RunDir) -> None:
    p = exp.plan
    table = Table(title=f"plan: {p.rule}", show_header=False, title_justify="left")
    rows = [
        ("run directory", str(run.path)),
        (
            "parameters total / active / non-embedding",
            f"{p.params_total:,} / {p.params_active:,} / {p.params_non_embedding:,}",
        ),
        ("vocabulary", f"{exp.tokenizer.vocab_size:,}"),
        ("FLOPs per token (train)", f"{p.flops_per_token:,}"),
        ("batch", f"{cfg.data.batch_size} x {cfg.data.seq_len} tokens = {p.tokens_per_step:,} tokens/step"),
        ("steps / tokens / FLOPs", f"{p.steps:,} / {p.tokens:,} / {p.train_flops:.3g}"),
        ("tokens per parameter", f"{p.tokens / p.params_active:.2f}"),
        ("train / validation rows", f"{len(exp.datamodule.train_rows):,} / {len(exp.datamodule.val_rows):,}"),
    ]
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)


def run_train(
    cfg: DictConfig, run_dir: str | Path, overrides: list[str] = (), callbacks: list | None = None
) -> dict:
    """Train and return the summary. User mistakes raise UserError before anything is written."""
    t0 = time.perf_counter()
    resuming = bool(cfg.get("resume"))
    run = RunDir(cfg.resume if resuming else run_dir)
    # Ranks > 0 of a DDP run (relaunched by Lightning or torchrun) share rank 0's run directory.
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))
    if resuming:
        cfg = resume_config(run, list(overrides))
    elif run.is_run() and rank == 0:
        raise UserError(f"{run.path} already holds a run; pass resume={run.path} to continue it.")
    if cfg.get("decay_from"):
        cfg, _ = decay_config(cfg, list(overrides))
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    L.seed_everything(cfg.seed, verbose=False)

    with console.status("reading data, training or loading the tokenizer, tokenizing, building the model"):
        exp = build_experiment(cfg)
        exp.datamodule.setup("fit")
    if cfg.get("compile"):
        exp.model.compile()

    # Nothing was written before this point.
    run.path.mkdir(parents=True, exist_ok=True)
    if not resuming and rank == 0:
        run.config.write_text(OmegaConf.to_yaml(cfg, resolve=True))
        run.overrides.write_text("\n".join(overrides) + ("\n" if overrides else ""))
        write_json(run.plan, exp.plan.as_dict())
        exp.tokenizer.save(run.tokenizer)
    previous = run.read_summary() or {}
    if rank == 0:
        print_plan(exp, cfg, run)

    tokens_per_step = exp.plan.tokens_per_step
    metrics = MetricsWriter(run, tokens_per_step, cfg.log_every)
    stopper = GracefulStop(run)
    trainer = build_trainer(
        cfg, run, exp.plan.steps,
        [metrics, *([EMA(run, cfg.ema.decay)] if cfg.get("ema") and cfg.ema.decay else []),
         CheckpointSaver(run, every_n_steps=cfg.get("checkpoint", {}).get("every_n_steps")), stopper,
         RichProgress(tokens_per_step, console), *(callbacks or [])],
    )  # fmt: skip
    ckpt_path = cfg.get("decay_from")  # weights, optimizer, data position: only the decay runs
    if resuming:
        ckpt_path = str(run.checkpoint("last"))
        step = torch.load(ckpt_path, map_location="cpu", weights_only=False)["global_step"]
        if rank == 0:
            run.truncate_metrics(after_step=step)

    status = "completed"
    try:
        trainer.fit(exp.module, datamodule=exp.datamodule, ckpt_path=ckpt_path)
    except NonFiniteLossError as exc:
        status = "diverged"
        console.print(f"[red]stopped: {exc}; the last good checkpoint is {run.checkpoint('last')}[/red]")
    if stopper.requested:
        status = "interrupted"
        console.print(
            f"[yellow]{stopper.requested}: saved {run.checkpoint('last')} at step {trainer.global_step}; "
            f"continue with: pretrainctl train resume={run.path}[/yellow]"
        )
    elif status == "completed":
        if exp.module.val_step != trainer.global_step:
            trainer.validate(exp.module, datamodule=exp.datamodule, verbose=False)
            run.append_metrics({"step": trainer.global_step, "tokens": trainer.global_step * tokens_per_step,
                                **exp.module.val_results})  # fmt: skip
        run.checkpoints.mkdir(parents=True, exist_ok=True)
        save_checkpoint(trainer, run.checkpoint("last"))
    wall = time.perf_counter() - t0 + previous.get("wall_s", 0.0)
    train_seconds = metrics.train_seconds + previous.get("train_s", 0.0)
    steps = trainer.global_step
    # Throughput of this process's training steps (validation excluded); a resumed run's own segment.
    segment_steps = steps - (previous.get("step") or 0)
    tokens_per_s = segment_steps * tokens_per_step / metrics.train_seconds if metrics.train_seconds else None
    summary = {
        "status": status,
        "step": steps,
        "tokens": steps * tokens_per_step,
        "train_flops": float(steps * tokens_per_step * exp.plan.flops_per_token),
        "val_loss": exp.module.val_results.get("val_loss"),
        "val_bpb": exp.module.val_results.get("val_bpb"),
        "params_total": exp.plan.params_total,
        "params_active": exp.plan.params_active,
        "params_non_embedding": exp.plan.params_non_embedding,
        "flops_per_token": exp.plan.flops_per_token,
        "tokens_per_s": tokens_per_s or previous.get("tokens_per_s"),
        "train_s": train_seconds,
        "wall_s": wall,
        "device": device_name(cfg.trainer.accelerator),
        "git_commit": git_commit(),
        "objective_has_bpb": exp.objective.has_bpb,
        # what the data stream served (mixture per phase, MeCo switch), from the batches consumed
        **exp.datamodule.data_summary(steps * trainer.accumulate_grad_batches * trainer.world_size),
    }
    if not exp.objective.has_bpb:  # say so rather than leave a bare null (or print a fake number)
        summary["bpb_note"] = exp.objective.bpb_note or "bits per byte is not defined for this objective"
    if trainer.is_global_zero:
        write_json(run.summary, summary)
        print_summary(summary, run)
    return summary


def print_summary(summary: dict, run: RunDir) -> None:
    table = Table(title=f"{summary['status']}: {run.path}", show_header=False, title_justify="left")
    fmt = {
        "step": "{:,}", "tokens": "{:,}", "train_flops": "{:.3g}", "val_loss": "{:.4f}", "val_bpb": "{:.4f}",
        "params_total": "{:,}", "tokens_per_s": "{:,.0f}", "wall_s": "{:.1f}",
    }  # fmt: skip
    for key, pattern in fmt.items():
        value = summary.get(key)
        if value is None and key == "val_bpb" and summary.get("bpb_note"):
            table.add_row(key, summary["bpb_note"])
            continue
        table.add_row(key, "n/a" if value is None else pattern.format(value))
    console.print(table)
    print(f"run directory: {run.path}")


def hydra_task(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    try:
        run_train(cfg, run_dir, list(hc.overrides.task))
    except UserError:
        if run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()  # Hydra made it before we could refuse; leave no empty run behind
        raise
