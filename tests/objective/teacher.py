"""An untrained run directory (config.yaml, tokenizer/, checkpoints/last.ckpt) built without training,
so tests can instantiate objectives that read one (distillation teachers) in milliseconds."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from pretrainctl import build
from pretrainctl.runs import RunDir
from pretrainctl.tokenizer.bytes import ByteTokenizer
from tests.helpers import tiny_config


def untrained_run(path: Path, overrides: list[str] = (), cache_dir: Path | None = None) -> Path:
    """A byte-tokenizer run directory whose checkpoint holds freshly initialized weights."""
    cfg = tiny_config(["tokenizer=bytes", *overrides], cache_dir)
    run = RunDir(path)
    run.path.mkdir(parents=True, exist_ok=True)
    run.config.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    tokenizer = ByteTokenizer()
    tokenizer.save(run.tokenizer)
    torch.manual_seed(0)
    model = build.build_model(cfg, tokenizer)
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state}, run.checkpoint("last"))
    return run.path
