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

    def _token_nll(self, model: LanguageModel, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, L) -> per-target NLL in nats (B, L-1), and the targets (B, L-1)."""
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        logits = model.logits(model(inputs, causal=True)).float()  # (B, T, V)
        nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
        return nll.view_as(targets), targets

    def loss(self, model: LanguageModel, batch: dict[str, torch.Tensor]) -> LossOutput:
        nll, targets = self._token_nll(model, batch["tokens"])
        return LossOutput(loss=nll.mean(), n_targets=targets.numel())

    @torch.no_grad()
    def nll(self, model: LanguageModel, batch: dict[str, torch.Tensor]) -> NLLOutput:
        nll, targets = self._token_nll(model, batch["tokens"])
        return NLLOutput(
            bits=nll.sum() / math.log(2),
            bytes=self.token_bytes[targets].sum(),
            tokens=torch.tensor(targets.numel()),
        )

    @torch.no_grad()
    def generate(self, model: LanguageModel, prompt: torch.Tensor, **sampling) -> torch.Tensor:
        """Left-to-right sampling; see ``sampling.sample_autoregressive`` for the options."""
        return sample_autoregressive(model, prompt, **sampling)
