"""Loss-spike guards: detect a training-loss spike by its z-score over a window of recent losses and
either skip that batch's optimizer step or rewind to the last good state with a lower LR.

A step's loss is a spike when it is not finite, or when (loss - mean) / std > ``z_threshold`` over
the last ``window`` accepted losses (once ``min_history`` are known; std floored at ``min_std`` so a
flat plateau does not make noise look like a spike). Spiking losses do not enter the window.

- ``SkipSpikes``: the batch's backward and optimizer step are skipped (the data moves on). PaLM
  (Chowdhery et al., 2022, arXiv:2204.02311, sec. 5.1) handled spikes by skipping the offending
  batches.
- ``RewindOnSpike``: PaLM's full recipe: restore the weights and optimizer state of an in-memory
  snapshot taken every ``snapshot_every`` steps (the last good state), multiply the LR by
  ``lr_factor`` for the rest of the run, and continue with the following batches. The step
  counter (and so the schedule position) does not go back; the weights do.

The training module calls ``is_spike(loss)`` before backward, ``on_spike(module)`` when it is one,
and ``after_step(module)`` after every optimizer step. Under DDP the module passes the loss averaged
over ranks, so every rank makes the same decision.
"""

from __future__ import annotations

import copy
import math
from collections import deque

import torch

from pretrainctl.errors import UserError


class SkipSpikes:
    def __init__(
        self, window: int = 50, z_threshold: float = 6.0, min_history: int = 20, min_std: float = 0.02
    ) -> None:
        if window < 2 or min_history < 2 or min_history > window:
            raise UserError(f"guard: need 2 <= min_history ({min_history}) <= window ({window}).")
        if z_threshold <= 0:
            raise UserError(f"guard.z_threshold={z_threshold} must be positive.")
        self.window, self.z_threshold = window, z_threshold
        self.min_history, self.min_std = min_history, min_std
        self.history: deque[float] = deque(maxlen=window)
        self.spikes = 0
        self.last_z = 0.0

    def is_spike(self, loss: float) -> bool:
        if not math.isfinite(loss):
            self.spikes += 1
            return True
        if len(self.history) >= self.min_history:
            h = torch.tensor(list(self.history), dtype=torch.float64)
            self.last_z = (loss - float(h.mean())) / max(float(h.std()), self.min_std)
            if self.last_z > self.z_threshold:
                self.spikes += 1
                return True
        self.history.append(loss)
        return False

    def on_spike(self, module) -> None:
        """Nothing to undo: the module skips this batch's backward and optimizer step."""

    def after_step(self, module) -> None:
        pass

    def state_dict(self) -> dict:
        return {"history": list(self.history), "spikes": self.spikes}

    def load_state_dict(self, state: dict) -> None:
        self.history = deque(state["history"], maxlen=self.window)
        self.spikes = state["spikes"]


class RewindOnSpike(SkipSpikes):
    def __init__(
        self,
        window: int = 50,
        z_threshold: float = 6.0,
        min_history: int = 20,
        min_std: float = 0.02,
        snapshot_every: int = 50,
        lr_factor: float = 0.5,
    ) -> None:
        super().__init__(window, z_threshold, min_history, min_std)
        if not 0 < lr_factor <= 1:
            raise UserError(f"guard.lr_factor={lr_factor} must be in (0, 1].")
        self.snapshot_every, self.lr_factor = max(1, snapshot_every), lr_factor
        self.snapshot: tuple[int, dict, dict] | None = None
        self.rewinds = 0

    def after_step(self, module) -> None:
        """Every ``snapshot_every`` steps (and after the first), keep a copy of the good state."""
        step = module.global_step
        if self.snapshot is None or step % self.snapshot_every == 0:
            optimizer = module.trainer.optimizers[0]
            weights = {k: v.detach().clone() for k, v in module.state_dict().items()}
            self.snapshot = (step, weights, copy.deepcopy(optimizer.state_dict()))

    def on_spike(self, module) -> None:
        if self.snapshot is None:  # nothing good to go back to yet: behave like skip
            return
        _, weights, opt_state = self.snapshot
        module.load_state_dict(weights)
        module.trainer.optimizers[0].load_state_dict(copy.deepcopy(opt_state))
        module.lr_scale *= self.lr_factor
        self.rewinds += 1

    def state_dict(self) -> dict:
        return {**super().state_dict(), "rewinds": self.rewinds}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.rewinds = state.get("rewinds", 0)
