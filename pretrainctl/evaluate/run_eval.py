"""``pretrainctl eval run=<dir> [ckpt=last|best|file]``: validation loss and bits per byte of a
checkpoint on its run's validation split; prints them and writes ``<run>/eval/<ckpt>.json``."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.progress import track

from pretrainctl.build import build_datamodule
from pretrainctl.evaluate.checkpoint import load_trained
from pretrainctl.runs import write_json


@torch.no_grad()
def evaluate(
    run: str, ckpt: str = "last", eval_batch_size: int | None = None, limit_batches: int | None = None
) -> dict:
    trained = load_trained(run, ckpt)
    dm = build_datamodule(trained.cfg, trained.tokenizer)
    if eval_batch_size:
        dm.eval_batch_size = eval_batch_size
    dm.setup("validate")
    sums = torch.zeros(3, dtype=torch.float64)
    loader = dm.val_dataloader()
    total = min(len(loader), limit_batches) if limit_batches else len(loader)
    for i, batch in enumerate(track(loader, total=total, description="eval", console=Console(stderr=True))):
        if i == total:
            break
        nll = trained.objective.nll(trained.model, batch)
        sums += torch.stack([nll.bits.double(), nll.bytes.double(), nll.tokens.double()])
    bits, n_bytes, tokens = (float(x) for x in sums)
    result = {"run": str(trained.run.path), "ckpt": ckpt, "val_loss": bits * 0.6931471805599453 / tokens,
              "val_tokens": tokens, "val_bytes": n_bytes}  # fmt: skip
    result["val_bpb"] = bits / n_bytes if trained.objective.has_bpb else None
    write_json(trained.run.path / "eval" / f"{Path(ckpt).stem}.json", result)
    return result


def hydra_task(cfg: DictConfig) -> None:
    result = evaluate(cfg.run, cfg.ckpt, cfg.eval_batch_size, cfg.limit_batches)
    bpb = (
        "n/a (this objective has no bits per byte)"
        if result["val_bpb"] is None
        else f"{result['val_bpb']:.4f}"
    )
    print(f"{result['run']} [{result['ckpt']}]: val_loss {result['val_loss']:.4f}  val_bpb {bpb}  "
          f"({result['val_tokens']:,.0f} tokens)")  # fmt: skip
