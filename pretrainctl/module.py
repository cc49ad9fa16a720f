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
    guard: optional loss-spike guard (``optim/guard.py``): ``is_spike(loss)``, ``on_spike(module)``,
        ``after_step(module)``; a spiking batch gets no backward and no optimizer step.
    """

    def __init__(
        self,
        model: LanguageModel,
        objective: Objective,
        optimizer_builder,
        schedule: Callable[[int, int], float],
        total_steps: int,
        guard=None,
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
        self.guard, self.lr_scale, self._skipped = guard, 1.0, False  # lr_scale: lowered by a rewind

    # -- training -------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.objective.loss(self.model, batch)
        loss = out.loss.detach().item()  # one sync per step; the progress bar shows it anyway
        if self.guard is not None and self._guard_skips(out.loss.detach()):
            return None  # Lightning skips backward and the optimizer step for this batch
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
        if self.guard is not None:
            self.last_metrics.update({"guard/spikes": self.guard.spikes, "guard/lr_scale": self.lr_scale})
        self.log("train/loss", out.loss.detach(), on_step=True, prog_bar=False)
        return total

    def _guard_skips(self, loss: torch.Tensor) -> bool:
        if self.trainer.world_size > 1:  # every rank must take the same decision
            loss = self.trainer.strategy.reduce(loss, reduce_op="mean")
        self._skipped = self.guard.is_spike(float(loss))
        if self._skipped:
            self.guard.on_spike(self)
            self._set_lr()  # a rewind restored the optimizer's old LRs; apply the lowered scale now
        return self._skipped

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self._skipped:
            self._skipped = False
            return
        # With gradient accumulation only every k-th batch ends in an optimizer step.
        if (batch_idx + 1) % self.trainer.accumulate_grad_batches == 0:
            self.model.after_optimizer_step()
            if self.guard is not None:
                self.guard.after_step(self)

    def lr_scheduler_step(self, scheduler, metric) -> None:
        if not self._skipped:  # a skipped batch made no optimizer step: the schedule does not advance
            scheduler.step()

    def _lr_multiplier(self, step: int) -> float:
        return self.schedule(step, self.total_steps) * self.lr_scale

    def _set_lr(self) -> None:
        scheduler = self.lr_schedulers()
        for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, strict=True):
            group["lr"] = base * self._lr_multiplier(self.global_step)

    def on_train_start(self) -> None:
        # The next step's LR from this run's schedule: after decay_from the restored optimizer holds
        # the LR the source run's schedule set (a no-op for fresh and resumed runs).
        self._set_lr()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["lr_scale"] = self.lr_scale
        if self.guard is not None:
            checkpoint["guard"] = self.guard.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.lr_scale = checkpoint.get("lr_scale", 1.0)
        if self.guard is not None and "guard" in checkpoint:
            self.guard.load_state_dict(checkpoint["guard"])

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        # Clipping here (not via the Trainer flag) also gives the pre-clip norms to log. One pass over
        # the gradients: per optimizer group (hidden, head, embedding, vector / muon: which part of the
        # model spikes), the global norm from those, and one host sync for all of them.
        names, group_norms = [], []
        for i, group in enumerate(optimizer.param_groups):
            grads = [p.grad for p in group["params"] if p.grad is not None]
            if grads:
                names.append(f"grad_norm/{group.get('name', i)}")
                group_norms.append(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))
        if not group_norms:
            return
        norms = torch.stack(group_norms)
        total = torch.linalg.vector_norm(norms)
        max_norm = self.optimizer_builder.grad_clip
        if max_norm:  # the optimizer's groups hold every trainable parameter (asserted when built)
            torch.nn.utils.clip_grads_with_norm_(self.parameters(), max_norm, total)
        *values, self.last_grad_norm = torch.cat([norms, total[None]]).tolist()
        self.last_metrics.update(zip(names, values, strict=True))

    def configure_optimizers(self):
        # Over this whole module: objectives may own trainable parameters (e.g. MTP modules).
        optimizer = self.optimizer_builder.build(self)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: self._lr_multiplier(s))
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
