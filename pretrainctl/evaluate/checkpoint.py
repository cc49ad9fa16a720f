"""Rebuild a trained model from a run directory (config.yaml + tokenizer/ + a checkpoint)."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from pretrainctl.arch.base import LanguageModel
from pretrainctl.build import build_model, build_objective, load_weights
from pretrainctl.errors import UserError
from pretrainctl.objective.base import Objective
from pretrainctl.runs import RunDir
from pretrainctl.tokenizer import Tokenizer, load_tokenizer


@dataclass
class Trained:
    run: RunDir
    cfg: DictConfig
    tokenizer: Tokenizer
    model: LanguageModel
    objective: Objective


def load_trained(run_path: str, ckpt: str = "last") -> Trained:
    run = RunDir(run_path)
    if not run.is_run():
        raise UserError(f"run={run_path} is not a run directory (it has no config.yaml).")
    checkpoint = run.checkpoint(ckpt)
    if not checkpoint.is_file():
        raise UserError(f"ckpt={ckpt}: {checkpoint} does not exist; runs keep last and best.")
    cfg = OmegaConf.load(run.config)
    tokenizer = load_tokenizer(run.tokenizer)
    model = build_model(cfg, tokenizer)
    load_weights(model, checkpoint)
    model.eval()
    return Trained(run, cfg, tokenizer, model, build_objective(cfg, tokenizer))
