"""Framework overhead: training tokens/s under ``pretrainctl train`` vs a bare PyTorch loop.

Same model, batch, data, optimizer, schedule and clipping, in one process; the bare loop runs
before and after the framework run and their mean is the reference. Prints the ratio (target >= 0.9).

    python bench/overhead.py [--steps 30] [overrides ...]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from pretrainctl.build import build_experiment
from pretrainctl.train import run_train
from tests.helpers import compose_config


def bare_loop(cfg, steps: int, warmup: int = 3) -> float:
    """tokens/s of a plain loop: forward, cross-entropy, backward, clip, AdamW step, LR schedule."""
    torch.manual_seed(cfg.seed)
    exp = build_experiment(cfg)
    exp.datamodule.setup()
    model, objective = exp.model, exp.objective
    optimizer = exp.module.optimizer_builder.build(model)
    lr0 = [g["lr"] for g in optimizer.param_groups]
    stream = iter(exp.datamodule.train_dataloader())
    tokens = cfg.data.batch_size * cfg.data.seq_len
    for step in range(warmup + steps):
        if step == warmup:
            t0 = time.perf_counter()
        for g, lr in zip(optimizer.param_groups, lr0):
            g["lr"] = lr * exp.module.schedule(step, exp.plan.steps)
        loss = objective.loss(model, next(stream)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), exp.module.optimizer_builder.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # the framework syncs once per step to show the loss; so does the reference
    return steps * tokens / (time.perf_counter() - t0)


def framework(cfg, steps: int, warmup: int = 3) -> float:
    """tokens/s that ``pretrainctl train`` reports (training steps only, validation excluded)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg.trainer.max_steps = steps + warmup
        cfg.trainer.val_check_interval = 10**9  # no validation inside the timed window
        cfg.log_every = warmup
        summary = run_train(cfg, Path(tmp) / "run")
        lines = (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
    # metrics.jsonl records tokens/s per interval; skip the first (warm-up) interval
    timed = [r for r in records if "tokens_per_s" in r and r["step"] > warmup]
    return timed[-1]["tokens_per_s"] if timed else summary["tokens_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    cfg = compose_config("train", args.overrides)
    before = bare_loop(cfg.copy(), args.steps)
    ours = framework(cfg.copy(), args.steps)
    after = bare_loop(cfg.copy(), args.steps)
    ref = (before + after) / 2
    print(f"bare loop: {before:,.0f} and {after:,.0f} tokens/s (mean {ref:,.0f})")
    print(f"pretrainctl train: {ours:,.0f} tokens/s")
    print(f"ratio: {ours / ref:.3f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
