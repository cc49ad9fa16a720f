"""Next-token prediction: causal attention, cross-entropy on every next token (Radford et al., 2018)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pretrainctl.arch.base import LanguageModel
from pretrainctl.objective.base import LossOutput, NLLOutput, Objective
from pretrainctl.objective.sampling import sample_autoregressive


class NextTokenObjective(Objective):
    causal = True

    def _token_nll(
        self, model: LanguageModel, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> per-target NLL in nats (B, L-1), the targets (B, L-1), and which targets count (B, L-1)."""
        tokens = batch["tokens"]
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        mask = batch.get("loss_mask")
        keep = mask[:, 1:].bool() if mask is not None else torch.ones_like(targets, dtype=torch.bool)
        logits = model.logits(model(inputs, causal=True)).float()  # (B, T, V)
        nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
        return nll.view_as(targets) * keep, targets, keep

    def loss(self, model: LanguageModel, batch: dict[str, torch.Tensor]) -> LossOutput:
        nll, _, keep = self._token_nll(model, batch)
        n = int(keep.sum())
        return LossOutput(loss=nll.sum() / max(n, 1), n_targets=n)

    @torch.no_grad()
    def nll(self, model: LanguageModel, batch: dict[str, torch.Tensor]) -> NLLOutput:
        nll, targets, keep = self._token_nll(model, batch)
        return NLLOutput(
            bits=nll.sum() / math.log(2),
            bytes=(self.token_bytes[targets] * keep).sum(),
            tokens=keep.sum(),
        )

    @torch.no_grad()
    def generate(self, model: LanguageModel, prompt: torch.Tensor, **sampling) -> torch.Tensor:
        """Left-to-right sampling; see ``sampling.sample_autoregressive`` for the options."""
        return sample_autoregressive(model, prompt, **sampling)
