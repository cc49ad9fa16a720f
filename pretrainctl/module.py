"""PretrainModule: wires a model, an objective, an optimizer and a schedule into Lightning.

It knows nothing about configs: build.py hands it constructed objects and run-time numbers.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch

from pretrainctl.arch.base import LanguageModel
from pretrainctl.errors import NonFiniteLossError
from pretrainctl.objective.base import Objective


class PretrainModule(L.LightningModule):
    """Args:
    model, objective: the network and what it is trained to do.
    optimizer_builder: has ``build(module) -> Optimizer`` (over every trainable parameter of model and
        objective) and ``grad_clip`` (max norm or None).
    schedule: ``(step, total_steps) -> LR multiplier``.
    total_steps: the plan's optimizer steps (the schedule's horizon).
    """

    def __init__(
        self,
        model: LanguageModel,
        objective: Objective,
        optimizer_builder,
        schedule: Callable[[int, int], float],
        total_steps: int,
    ) -> None:
        super().__init__()
        self.model, self.objective = model, objective
        self.optimizer_builder, self.schedule, self.total_steps = optimizer_builder, schedule, total_steps
        self.last_loss: float = float("nan")
        self.last_grad_norm: float = float("nan")
        self.last_metrics: dict[str, float] = {}
        self.val_results: dict[str, float] = {}
        self.val_step = -1  # global step of the last validation
        self._val_sums: torch.Tensor | None = None

    # -- training -------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.objective.loss(self.model, batch)
        loss = out.loss.detach().item()  # one sync per step; the progress bar shows it anyway
        if not torch.isfinite(out.loss):
            raise NonFiniteLossError(self.global_step, loss)
        self.last_loss = loss
        self.last_metrics = {k: float(v) for k, v in out.metrics.items()}
        total = out.loss
        aux = self.model.aux_loss()
        if aux is not None:
            total = total + aux
            self.last_metrics["aux_loss"] = float(aux)
        self.last_metrics.update(self.model.diagnostics())
        self.log("train/loss", out.loss.detach(), on_step=True, prog_bar=False)
        return total

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        # With gradient accumulation only every k-th batch ends in an optimizer step.
        if (batch_idx + 1) % self.trainer.accumulate_grad_batches == 0:
            self.model.after_optimizer_step()

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        # Clipping here (not via the Trainer flag) also gives the pre-clip norm to log for free.
        max_norm = self.optimizer_builder.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(self.parameters(), max_norm if max_norm else float("inf"))
        self.last_grad_norm = float(norm)

    def configure_optimizers(self):
        # Over this whole module: objectives may own trainable parameters (e.g. MTP modules).
        optimizer = self.optimizer_builder.build(self)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: self.schedule(s, self.total_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def current_lr(self) -> float:
        return self.trainer.optimizers[0].param_groups[0]["lr"]

    # -- validation: sums of bits, bytes, tokens over the whole split --------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_sums = torch.zeros(3, dtype=torch.float64, device=self.device)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        nll = self.objective.nll(self.model, batch)
        self._val_sums += torch.stack(
            [nll.bits.double(), nll.bytes.double(), nll.tokens.double().to(self.device)]
        )

    def on_validation_epoch_end(self) -> None:
        sums = self.trainer.strategy.reduce(self._val_sums, reduce_op="sum")
        bits, n_bytes, tokens = (float(x) for x in sums)
        self.val_results = {"val_loss": bits * 0.6931471805599453 / tokens, "val_tokens": tokens}
        if self.objective.has_bpb:
            self.val_results["val_bpb"] = bits / n_bytes
        self.val_step = self.global_step
        self.log_dict({k: v for k, v in self.val_results.items() if k != "val_tokens"}, sync_dist=False)
