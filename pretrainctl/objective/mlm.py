"""Masked language modelling for encoders: BERT (Devlin et al. 2019, arXiv:1810.04805) with
ModernBERT's 30% mask rate (Warner et al. 2024, arXiv:2412.13663).

A fraction ``mask_rate`` of the scored positions is selected per batch; of those, 80% are replaced
by MASK, 10% by a random ordinary token and 10% are left unchanged (BERT's 80/10/10, so the encoder
cannot rely on MASK marking the positions it is asked about). The model sees the corrupted sequence
with bidirectional attention and is trained with cross-entropy on the selected positions; masked-token
accuracy is logged next to the loss.

MLM has no bits per byte: the cross-entropy of a few masked tokens given all the others is not a
likelihood of the text (the pseudo-log-likelihood of Salazar et al. 2020 is not normalised either),
so ``has_bpb`` is False. Validation reports the masked-token loss (``val_loss``, nats per selected
token) on masks drawn from a local generator seeded by ``val_seed`` and the batch's contents, so it
compares between runs and checkpoints.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pretrainctl.arch.base import LanguageModel
from pretrainctl.errors import UserError
from pretrainctl.objective.base import LossOutput, NLLOutput, Objective, target_mask
from pretrainctl.objective.diffusion import batch_generator


class MaskedLMObjective(Objective):
    """Args:
    token_bytes: (V,) UTF-8 bytes per token (build.py); tokens with 0 bytes (BOS, EOS, PAD, MASK,
        unknown) are the special ones, never used as random replacements.
    mask_id: the tokenizer's MASK token (build.py).
    mask_rate: fraction of scored positions selected for prediction (ModernBERT 0.3, BERT 0.15).
    replace_mask, replace_random: of the selected positions, the fractions replaced by MASK and by a
        random ordinary token; the rest stay unchanged (BERT: 0.8 and 0.1).
    val_seed: seed of the validation masks (with the batch's contents).
    """

    causal = False
    has_bpb = False
    bpb_note = (
        "not defined for mlm: masked-token cross-entropy given the other tokens is not a likelihood of the "
        "text; see val_loss and masked_acc"
    )
    uses_mask_token = True

    def __init__(
        self,
        token_bytes: torch.Tensor,
        mask_id: int,
        mask_rate: float = 0.3,
        replace_mask: float = 0.8,
        replace_random: float = 0.1,
        val_seed: int = 0,
    ) -> None:
        super().__init__(token_bytes)
        if not 0 < mask_rate <= 1:
            raise UserError(f"objective.mask_rate={mask_rate} must be in (0, 1] (ModernBERT 0.3).")
        if replace_mask < 0 or replace_random < 0 or replace_mask + replace_random > 1:
            raise UserError(
                f"objective.replace_mask={replace_mask} and replace_random={replace_random} must be >= 0 "
                "with a sum <= 1 (BERT: 0.8 and 0.1)."
            )
        self.mask_id, self.mask_rate = int(mask_id), mask_rate
        self.replace_mask, self.replace_random, self.val_seed = replace_mask, replace_random, val_seed
        ordinary = (token_bytes > 0).nonzero()[:, 0]
        ordinary = ordinary[ordinary != self.mask_id]
        if len(ordinary) == 0:
            raise UserError("the tokenizer has no ordinary tokens to use as random replacements.")
        self.register_buffer("ordinary_ids", ordinary, persistent=False)

    def corrupt(
        self, tokens: torch.Tensor, keep: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens, keep (B, L) -> (model input (B, L), selected positions (B, L) bool)."""

        def rand(*shape: int) -> torch.Tensor:  # CPU draws from ``generator`` when given (validation)
            if generator is None:
                return torch.rand(shape, device=tokens.device)
            return torch.rand(shape, generator=generator).to(tokens.device)

        B, L = tokens.shape
        selected = (rand(B, L) < self.mask_rate) & keep
        action = rand(B, L)  # < replace_mask: MASK; then replace_random: a random token; else unchanged
        random_ids = self.ordinary_ids[(rand(B, L) * len(self.ordinary_ids)).long()]
        inputs = torch.where(selected & (action < self.replace_mask), self.mask_id, tokens)
        upper = self.replace_mask + self.replace_random
        to_random = selected & (action >= self.replace_mask) & (action < upper)
        return torch.where(to_random, random_ids, inputs), selected

    def _scores(
        self, model: LanguageModel, batch: dict[str, torch.Tensor], generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> per-selected-token NLL in nats (N,), whether the argmax was right (N,), targets (N,)."""
        tokens = batch["tokens"]
        inputs, selected = self.corrupt(tokens, target_mask(batch), generator)
        hidden = model(inputs, causal=False)  # (B, L, D)
        logits = model.logits(hidden[selected]).float()  # (N, V): the head only where there is a loss
        targets = tokens[selected]
        nll = F.cross_entropy(logits, targets, reduction="none")
        return nll, logits.argmax(-1) == targets, targets

    def loss(self, model: LanguageModel, batch: dict[str, torch.Tensor]) -> LossOutput:
        nll, correct, _ = self._scores(model, batch, None)
        n = nll.numel()
        metrics = {"masked_acc": correct.float().mean() if n else nll.new_zeros(())}
        return LossOutput(loss=nll.sum() / max(n, 1), n_targets=n, metrics=metrics)

    @torch.no_grad()
    def nll(self, model: LanguageModel, batch: dict[str, torch.Tensor]) -> NLLOutput:
        """Masked-token cross-entropy in bits over fixed validation masks; not a likelihood (no bpb)."""
        nll, _, targets = self._scores(model, batch, batch_generator(batch["tokens"], self.val_seed))
        return NLLOutput(
            bits=nll.sum() / math.log(2),
            bytes=self.token_bytes[targets].sum(),
            tokens=torch.tensor(nll.numel(), device=nll.device),
        )

    def generate(self, *args, **kwargs) -> torch.Tensor:
        raise UserError(
            "this run was trained with objective=mlm, a masked language model (an encoder), not a "
            "generator; generate from an ar, mtp or diffusion run."
        )
