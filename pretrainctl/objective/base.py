"""The objective contract: a training loss and a likelihood in bits, for any architecture.

``loss(model, batch)`` returns what training optimizes; ``nll(model, batch)`` returns the negative
log-likelihood of the batch's text in bits (exact for autoregressive models, an upper bound for
diffusion) together with the UTF-8 bytes it covers, so every objective reports validation bits per
byte: total bits / total bytes, comparable across tokenizers and objectives.

A batch is a dict: ``tokens`` (B, L) int64 always; optionally ``loss_mask`` (B, L) bool, True where a
token may be a prediction target (False e.g. on metadata-conditioning prefixes, MeCo). Objectives
score only target positions whose mask is True, in the loss and in ``nll``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from pretrainctl.arch.base import LanguageModel


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar the optimizer minimizes
    n_targets: int  # predicted tokens behind the loss
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class NLLOutput:
    bits: torch.Tensor  # summed negative log-likelihood, in bits
    bytes: torch.Tensor  # UTF-8 bytes of the text those tokens decode to
    tokens: torch.Tensor  # number of target tokens scored


def target_mask(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, L) bool: the batch's ``loss_mask``, or all True without one."""
    mask = batch.get("loss_mask")
    return mask.bool() if mask is not None else torch.ones_like(batch["tokens"], dtype=torch.bool)


class Objective(nn.Module):
    """Subclasses implement ``loss`` and ``nll``. ``token_bytes`` (V,) comes from the tokenizer."""

    causal: bool = True
    has_bpb: bool = True
    # Why ``nll`` is not a likelihood of the text when ``has_bpb`` is False (written to summary.json).
    bpb_note: str | None = None
    # True: the constructor takes ``mask_id`` (the tokenizer's MASK token), passed by build.py.
    uses_mask_token: bool = False
    # True: the constructor takes ``teacher`` (a trained model, or None for inference), which build.py
    # loads from the run directory in ``objective.teacher`` (knowledge distillation).
    uses_teacher: bool = False
    # The conf/generate.yaml node whose keys ``generate`` also takes (e.g. "diffusion"); None: none.
    sampling_options: str | None = None

    def __init__(self, token_bytes: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("token_bytes", token_bytes.clone(), persistent=False)

    def loss(self, model: LanguageModel, batch: dict[str, torch.Tensor]) -> LossOutput:
        raise NotImplementedError

    def nll(self, model: LanguageModel, batch: dict[str, torch.Tensor]) -> NLLOutput:
        raise NotImplementedError
