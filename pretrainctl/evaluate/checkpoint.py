"""Rebuild a trained model from a run directory (config.yaml + tokenizer/ + a checkpoint)."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from pretrainctl.arch.base import LanguageModel
from pretrainctl.build import build_model, build_objective, load_weights, open_run
from pretrainctl.objective.base import Objective
from pretrainctl.runs import RunDir
from pretrainctl.tokenizer import Tokenizer


@dataclass
class Trained:
    run: RunDir
    cfg: DictConfig
    tokenizer: Tokenizer
    model: LanguageModel
    objective: Objective


def load_trained(run_path: str, ckpt: str = "last") -> Trained:
    """The run's model and objective with their trained weights (an objective's own modules, e.g.
    MTP's, load too; a distillation objective comes without its teacher, which inference never uses)."""
    run, checkpoint, cfg, tokenizer = open_run(run_path, ckpt)
    model = build_model(cfg, tokenizer)
    objective = build_objective(cfg, tokenizer, with_teacher=False)
    load_weights(model, checkpoint, objective)
    model.eval()
    objective.eval()
    return Trained(run, cfg, tokenizer, model, objective)
