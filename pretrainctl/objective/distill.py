"""Knowledge distillation from a trained teacher (Hinton et al. 2015, arXiv:1503.02531; reverse KL
as in MiniLLM, Gu et al. 2024, arXiv:2306.08543).

Per target token, with temperature tau, student distribution q = softmax(z_s / tau) and teacher
distribution p = softmax(z_t / tau):

    forward KL  KL(p || q) = sum_v p_v (log p_v - log q_v)    (mean-seeking: cover the teacher)
    reverse KL  KL(q || p) = sum_v q_v (log q_v - log p_v)    (mode-seeking)

scaled by tau^2 so its gradients keep their size as tau changes (Hinton et al.), and mixed with the
hard-label next-token loss: ``loss = alpha * ce + (1 - alpha) * tau^2 * KL``.

The teacher is any run directory of this tool: build.py loads it (``objective.teacher``,
``objective.teacher_ckpt``) and checks that it shares the student's tokenizer. It is held outside
this module's registered children, so its parameters are not trained, not in the optimizer and not
in the student's checkpoints; it runs in eval mode without gradients. It may have a different
architecture. Validation ``nll`` and ``generate`` are the student's plain AR ones.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from pretrainctl.arch.base import LanguageModel
from pretrainctl.errors import UserError
from pretrainctl.objective.ar import NextTokenObjective, shifted
from pretrainctl.objective.base import LossOutput
from pretrainctl.objective.head import HeadLosses, chunked, logits_losses, token_loss

KL_KINDS = ("forward", "reverse")


def _rows(
    student_head, teacher_head, temperature: float, reverse: bool,
    h: torch.Tensor, teacher_h: torch.Tensor, targets: torch.Tensor,
) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """One chunk of tokens: student hidden (n, D), teacher hidden (n, D_t), targets (n,) ->
    nll, lse, uniform (the hard-label terms) and KL (n,), float32."""
    logits = student_head(h).float()  # (n, V)
    log_q = F.log_softmax(logits / temperature, dim=-1)
    with torch.no_grad():
        log_p = F.log_softmax(teacher_head(teacher_h).float() / temperature, dim=-1)  # (n, V)
    if reverse:
        kl = (log_q.exp() * (log_q - log_p)).sum(-1)
    else:
        kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    return (*logits_losses(logits, targets), kl)


class DistillObjective(NextTokenObjective):
    """Args (beyond NextTokenObjective's head knobs, which apply to the hard-label part):
    teacher: the trained teacher model (build.py); None builds an inference-only objective
        (eval, generate), whose ``loss`` refuses to run.
    kl: "forward" (KL(teacher || student)) or "reverse" (KL(student || teacher)).
    temperature: tau, softening both distributions; the KL term is scaled by tau^2.
    alpha: weight of the hard-label next-token loss; 1 - alpha goes to the KL term.
    """

    uses_teacher = True

    def __init__(
        self,
        token_bytes: torch.Tensor,
        teacher: LanguageModel | None = None,
        kl: str = "forward",
        temperature: float = 1.0,
        alpha: float = 0.5,
        z_loss: float = 0.0,
        label_smoothing: float = 0.0,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(token_bytes, z_loss, label_smoothing, chunk_size)
        if kl not in KL_KINDS:
            raise UserError(
                f"objective.kl={kl!r} is not a divergence; the choices are: {', '.join(KL_KINDS)}."
            )
        if temperature <= 0:
            raise UserError(f"objective.temperature={temperature} must be positive.")
        if not 0 <= alpha <= 1:
            raise UserError(f"objective.alpha={alpha} must be in [0, 1] (the weight of the hard-label loss).")
        self.kl, self.temperature, self.alpha = kl, temperature, alpha
        if teacher is not None:
            if teacher.vocab_size != token_bytes.numel():
                raise UserError(
                    f"the teacher's vocabulary ({teacher.vocab_size}) differs from the student's "
                    f"({token_bytes.numel()}); both must use the same tokenizer."
                )
            teacher.eval().requires_grad_(False)
        # Not a registered child: no training, no optimizer, no checkpoint entries (see module docstring).
        object.__setattr__(self, "teacher", teacher)

    def _teacher_on(self, device: torch.device) -> LanguageModel:
        if self.teacher is None:
            raise UserError(
                "this distillation objective was built without a teacher (for evaluation); "
                "train with objective.teacher=<run directory of the teacher>."
            )
        if self.teacher.head_weight().device != device:  # Lightning moves only registered modules
            self.teacher.to(device)
        return self.teacher

    def loss(self, model: LanguageModel, batch: dict[str, torch.Tensor]) -> LossOutput:
        inputs, targets, keep = shifted(batch)
        teacher = self._teacher_on(inputs.device)
        hidden = model(inputs, causal=True)  # (B, T, D)
        with torch.no_grad():
            teacher_hidden = teacher(inputs, causal=True)  # (B, T, D_teacher)
        fn = partial(_rows, model.logits, teacher.logits, self.temperature, self.kl == "reverse")
        nll, lse, uniform, kl = chunked(
            fn,
            hidden.flatten(0, 1),
            teacher_hidden.flatten(0, 1),
            targets.flatten(),
            chunk_size=self.chunk_size,
        )
        k, n = keep.flatten(), int(keep.sum())
        hard = (token_loss(HeadLosses(nll, lse, uniform), self.z_loss, self.label_smoothing) * k).sum() / max(
            n, 1
        )
        soft = self.temperature**2 * (kl * k).sum() / max(n, 1)
        loss = self.alpha * hard + (1 - self.alpha) * soft
        metrics = {"hard_loss": hard.detach(), "kl": soft.detach() / self.temperature**2}
        return LossOutput(loss=loss, n_targets=n, metrics=metrics)
