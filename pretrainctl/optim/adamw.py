"""AdamW (Loshchilov & Hutter, 2019) with decoupled weight decay on matrix weights only, and µP's
1/width_mult LR for hidden matrices when the model has a width multiplier (see ``groups.py``)."""

from __future__ import annotations

import torch
from torch import nn

from pretrainctl.errors import UserError
from pretrainctl.optim.groups import decay_groups


class AdamWBuilder:
    """Builds the optimizer once the model exists. ``grad_clip`` is the max global gradient norm
    (None disables clipping)."""

    def __init__(
        self,
        lr: float = 3e-3,
        betas: tuple[float, float] = (0.9, 0.95),
        weight_decay: float = 0.1,
        eps: float = 1e-8,
        grad_clip: float | None = 1.0,
        fused: bool | None = None,
    ) -> None:
        if lr <= 0:
            raise UserError(f"optim.lr must be positive, not {lr}.")
        self.lr, self.betas, self.weight_decay, self.eps = lr, tuple(betas), weight_decay, eps
        self.grad_clip, self.fused = grad_clip, fused

    def build(self, model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            decay_groups(model, self.weight_decay, self.lr),
            lr=self.lr,
            betas=self.betas,
            eps=self.eps,
            fused=self.fused,
        )
