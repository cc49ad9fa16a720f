"""Next-token prediction: causal attention, cross-entropy on every next token (Radford et al., 2018).

Knobs (all off by default): ``z_loss`` adds ``z_loss * logsumexp(logits)**2`` per target token
(PaLM, Chowdhery et al. 2022, arXiv:2204.02311; OLMo 2 uses 1e-5), ``label_smoothing`` mixes the
uniform distribution into the targets (Szegedy et al. 2016), and ``chunk_size`` computes the head
and the loss over that many tokens at a time so the full float32 logits never exist at once
(``head.py``). With ``arch.backend=triton`` on a GPU, and no label smoothing, the head and loss run
in the fused Triton linear cross-entropy instead (``pretrainctl_kernels.losses``). Validation
``nll`` is always the plain likelihood, whatever the knobs.
"""

from __future__ import annotations

import math

import torch

from pretrainctl.arch.base import LanguageModel
from pretrainctl.errors import UserError
from pretrainctl.objective.base import LossOutput, NLLOutput, Objective, target_mask
from pretrainctl.objective.head import fused_head_loss, head_losses, token_loss
from pretrainctl.objective.sampling import sample_autoregressive


def check_head_options(z_loss: float, label_smoothing: float, chunk_size: int | None) -> None:
    if z_loss < 0:
        raise UserError(f"objective.z_loss={z_loss} must be >= 0 (0 turns it off; OLMo 2 uses 1e-5).")
    if not 0 <= label_smoothing < 1:
        raise UserError(f"objective.label_smoothing={label_smoothing} must be in [0, 1) (0 turns it off).")
    if chunk_size is not None and chunk_size < 1:
        raise UserError(f"objective.chunk_size={chunk_size} must be a positive number of tokens, or null.")


def shifted(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> inputs (B, T), next-token targets (B, T) and which targets count (B, T), T = L - 1."""
    tokens = batch["tokens"]
    return tokens[:, :-1], tokens[:, 1:], target_mask(batch)[:, 1:]


class NextTokenObjective(Objective):
    """Args:
    token_bytes: (V,) UTF-8 bytes per token, from the tokenizer (build.py).
    z_loss: weight of the squared log-partition per target token (0 = off).
    label_smoothing: probability mass spread uniformly over the vocabulary (0 = off).
    chunk_size: tokens per head + loss chunk (None = all at once).
    """

    causal = True

    def __init__(
        self,
        token_bytes: torch.Tensor,
        z_loss: float = 0.0,
        label_smoothing: float = 0.0,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(token_bytes)
        check_head_options(z_loss, label_smoothing, chunk_size)
        self.z_loss, self.label_smoothing, self.chunk_size = z_loss, label_smoothing, chunk_size

    def head_loss(
        self, model: LanguageModel, hidden: torch.Tensor, targets: torch.Tensor, keep: torch.Tensor
    ) -> tuple[torch.Tensor, int, dict[str, torch.Tensor]]:
        """hidden (B, T, D), targets and keep (B, T) -> (mean training loss over kept targets, their
        number, metrics: mean plain cross-entropy ``ce`` and mean log-partition ``log_z``)."""
        n = int(keep.sum())
        h, t, k = hidden.flatten(0, 1), targets.flatten(), keep.flatten()
        if not self.label_smoothing:
            fused = fused_head_loss(model, h, t, k, self.z_loss, self.chunk_size)
            if fused is not None:
                return fused / max(n, 1), n, {}
        losses = head_losses(model.logits, h, t, self.chunk_size)
        loss = (token_loss(losses, self.z_loss, self.label_smoothing) * k).sum() / max(n, 1)
        with torch.no_grad():
            metrics = {
                "ce": (losses.nll * k).sum() / max(n, 1),
                "log_z": (losses.lse * k).sum() / max(n, 1),
            }
        return loss, n, metrics

    def loss(self, model: LanguageModel, batch: dict[str, torch.Tensor]) -> LossOutput:
        inputs, targets, keep = shifted(batch)
        loss, n, metrics = self.head_loss(model, model(inputs, causal=True), targets, keep)
        return LossOutput(loss=loss, n_targets=n, metrics=metrics)

    @torch.no_grad()
    def nll(self, model: LanguageModel, batch: dict[str, torch.Tensor]) -> NLLOutput:
        """The plain next-token likelihood of the main model (no z-loss, no smoothing)."""
        inputs, targets, keep = shifted(batch)
        hidden = model(inputs, causal=True)
        nll = head_losses(model.logits, hidden.flatten(0, 1), targets.flatten(), self.chunk_size).nll
        return NLLOutput(
            bits=(nll.view_as(targets) * keep).sum() / math.log(2),
            bytes=(self.token_bytes[targets] * keep).sum(),
            tokens=keep.sum(),
        )

    @torch.no_grad()
    def generate(self, model: LanguageModel, prompt: torch.Tensor, **sampling) -> torch.Tensor:
        """Left-to-right sampling; see ``sampling.sample_autoregressive`` for the options."""
        return sample_autoregressive(model, prompt, **sampling)
