"""Weight averaging: an EMA of the weights during training, and a "model soup" of saved checkpoints.

EMA (Polyak & Juditsky, 1992; as used for LLMs e.g. by Sanyal et al., 2023, "Early weight averaging
meets high learning rates for LLM pre-training", arXiv:2306.03241): after every optimizer step
ema = d_t * ema + (1 - d_t) * w, with d_t = min(decay, (1 + t) / (10 + t)) so that early steps are
not dominated by the random initialization (the warmup of TensorFlow's ExponentialMovingAverage
``num_updates``). It is written to checkpoints/ema.ckpt with the same ``state_dict`` keys as
last.ckpt, so every command that reads a checkpoint takes ``ckpt=ema``.

Soup (Wortsman et al., 2022, "Model soups", arXiv:2203.05482, uniform soup; for checkpoints of
one run this is latest-weight averaging, Kaddour, 2022, arXiv:2209.14981): the uniform average of
the last k checkpoints/step-*.ckpt, written to checkpoints/soup.ckpt
(``pretrainctl checkpoint soup run=<dir> k=3``; then ``pretrainctl eval run=<dir> ckpt=soup``).
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig

from pretrainctl.errors import UserError
from pretrainctl.runs import RunDir


def _write(state: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


class EMA(L.Callback):
    """Keeps an EMA of every floating-point tensor of the module's state (model and objective) and
    saves it as checkpoints/ema.ckpt at every validation and at the end of training."""

    def __init__(self, run: RunDir, decay: float) -> None:
        if not 0 < decay < 1:
            raise UserError(f"ema.decay={decay} must be in (0, 1), e.g. 0.999 (or null to turn EMA off).")
        self.run, self.decay = run, decay
        self.shadow: dict[str, torch.Tensor] = {}
        self.updates = 0
        self._last_step = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == self._last_step:  # no optimizer step (accumulating, or a skipped batch)
            return
        self._last_step = step
        state = {k: v for k, v in pl_module.state_dict().items() if v.is_floating_point()}
        if not self.shadow:
            self.shadow = {k: v.detach().float().clone() for k, v in state.items()}
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in state.items():
            self.shadow[k].lerp_(v.detach().float(), 1 - d)
        self.updates += 1

    def save(self, trainer, pl_module) -> None:
        if not self.shadow or not trainer.is_global_zero:
            return
        state = pl_module.state_dict()
        weights = {k: (self.shadow[k].to(v.dtype) if k in self.shadow else v) for k, v in state.items()}
        _write({"state_dict": weights, "global_step": trainer.global_step, "ema_decay": self.decay},
               self.run.checkpoint("ema"))  # fmt: skip

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self.save(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self.save(trainer, pl_module)

    def state_dict(self) -> dict:
        return {"shadow": self.shadow, "updates": self.updates, "last_step": self._last_step}

    def load_state_dict(self, state: dict) -> None:
        self.shadow, self.updates, self._last_step = state["shadow"], state["updates"], state["last_step"]


def step_checkpoints(run: RunDir) -> list[Path]:
    """checkpoints/step-*.ckpt in step order."""
    return sorted(run.checkpoints.glob("step-*.ckpt"))


def soup(paths: list[Path]) -> dict:
    """Uniform average of the ``state_dict`` floating-point tensors of ``paths`` (others from the last)."""
    total: dict[str, torch.Tensor] = {}
    last: dict = {}
    for path in paths:
        last = torch.load(path, map_location="cpu", weights_only=False)
        for k, v in last["state_dict"].items():
            if v.is_floating_point():
                total[k] = total.get(k, 0) + v.double()
    state = last["state_dict"]
    weights = {k: (total[k] / len(paths)).to(v.dtype) if k in total else v for k, v in state.items()}
    return {"state_dict": weights, "global_step": last["global_step"], "soup_of": [str(p) for p in paths]}


def hydra_task(cfg: DictConfig) -> None:
    run = RunDir(cfg.run)
    if not run.is_run():
        raise UserError(f"run={cfg.run} is not a run directory (it has no config.yaml).")
    paths = step_checkpoints(run)
    if cfg.k < 1 or len(paths) < cfg.k:
        raise UserError(
            f"k={cfg.k}: {run.checkpoints} holds {len(paths)} step-*.ckpt checkpoints; train with "
            "checkpoint.every_n_steps=<n> to keep them."
        )
    chosen = paths[-cfg.k :]
    _write(soup(chosen), run.checkpoint(cfg.name))
    print(f"{run.checkpoint(cfg.name)}: uniform average of {', '.join(p.name for p in chosen)}")
