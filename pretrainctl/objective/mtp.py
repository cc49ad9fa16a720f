"""Multi-token prediction as in DeepSeek-V3 (DeepSeek-AI 2024, arXiv:2412.19437, section 2.2).

``depth`` sequential MTP modules extend the main model. Module k (1..depth) at position i combines
the previous depth's representation h^{k-1}_i (h^0 = the main model's hidden state) with the
embedding of token t_{i+k}:

    h'^k_i = W_k [RMSNorm(h^{k-1}_i); RMSNorm(Emb(t_{i+k}))]      (2D -> D linear projection)
    h^k    = TRM_k(h'^k)                                          (one causal transformer block)
    p(t_{i+k+1}) = softmax(OutHead(RMSNorm(h^k_i)))

sharing the embedding and the output head with the main model, so each depth keeps the complete
causal chain of predictions. The loss is ``ntp + weight / depth * sum_k mtp_k`` (V3 uses weight
0.3, then 0.1). The blocks are plain dense attention + SwiGLU blocks built from ``arch.layers``
whatever the main architecture is; they live in this objective (an ``nn.Module``), so they train
with the model, are saved under ``objective.`` in checkpoints, and are simply not used for
inference: validation ``nll`` and ``generate`` use the main model alone (the plain AR likelihood),
and the main-head loss is logged as ``ntp_loss`` to compare with ``objective=ar``.

Optionally (``pretrainctl generate ... mtp.speculative=true temperature=0``) the MTP modules draft
``depth`` tokens beyond the main model's next one, and one forward of the main model verifies them
all (self-speculative decoding, as DeepSeek-V3 suggests in section 2.2): the longest prefix of
drafts the main model agrees with is kept, plus the main model's own next token, so the output is
exactly greedy decoding with the main model, in fewer main-model forwards.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pretrainctl.arch.backends import attention_fn
from pretrainctl.arch.base import LanguageModel
from pretrainctl.arch.decoder import Block
from pretrainctl.arch.layers import Attention, RMSNorm, SwiGLU, swiglu_hidden
from pretrainctl.errors import UserError
from pretrainctl.objective.ar import NextTokenObjective, shifted
from pretrainctl.objective.base import LossOutput
from pretrainctl.objective.sampling import sample_autoregressive


class MTPModule(nn.Module):
    """One prediction depth: combine (previous representation, next token's embedding), one block."""

    def __init__(self, d_model: int, n_heads: int, mlp_hidden: int, rope_theta: float, eps: float) -> None:
        super().__init__()
        self.hidden_norm = RMSNorm(d_model, eps)
        self.embed_norm = RMSNorm(d_model, eps)
        self.proj = nn.Linear(2 * d_model, d_model, bias=False)
        attn = Attention(d_model, n_heads, n_heads, rope_theta, eps=eps)
        self.block = Block(d_model, attn, SwiGLU(d_model, mlp_hidden), eps)
        self.norm = RMSNorm(d_model, eps)  # before the shared head, as the main model's final norm

    def forward(self, prev: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """prev, emb (B, t, D) -> h^k (B, t, D), un-normalized (the next depth's input)."""
        x = self.proj(torch.cat([self.hidden_norm(prev), self.embed_norm(emb)], dim=-1))  # (B, t, D)
        return self.block(x, causal=True)


def head_input(model: LanguageModel, module: MTPModule, h: torch.Tensor) -> torch.Tensor:
    """What the shared head reads: the module's final norm, and µP's output multiplier when the
    architecture uses one (the main model applies it to its own final hidden state)."""
    return module.norm(h) * getattr(model, "output_mult", 1.0)


class MultiTokenObjective(NextTokenObjective):
    """Args (beyond NextTokenObjective's, whose head knobs apply to every depth):
    d_model, n_heads: width and heads of the MTP blocks (conf: the architecture's).
    depth: number of sequential MTP modules (D in the paper).
    weight: lambda, the weight of the mean MTP loss over the depths.
    mlp_hidden: SwiGLU width of the MTP blocks (None = 8/3 d_model rounded up to 64).
    rope_theta, norm_eps, init_std: as the architecture's.
    """

    sampling_options = "mtp"  # conf/generate.yaml: mtp.speculative

    def __init__(
        self,
        token_bytes: torch.Tensor,
        d_model: int,
        n_heads: int,
        depth: int = 1,
        weight: float = 0.3,
        mlp_hidden: int | None = None,
        rope_theta: float = 10_000.0,
        norm_eps: float = 1e-6,
        init_std: float = 0.02,
        z_loss: float = 0.0,
        label_smoothing: float = 0.0,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(token_bytes, z_loss, label_smoothing, chunk_size)
        if depth < 1:
            raise UserError(f"objective.depth={depth} must be at least 1 (use objective=ar for none).")
        if weight < 0:
            raise UserError(f"objective.weight={weight} must be >= 0.")
        if d_model % n_heads:
            raise UserError(f"objective.d_model={d_model} must be divisible by objective.n_heads={n_heads}.")
        self.depth, self.weight = depth, weight
        hidden = mlp_hidden or swiglu_hidden(d_model)
        self.mtp = nn.ModuleList(
            MTPModule(d_model, n_heads, hidden, rope_theta, norm_eps) for _ in range(depth)
        )
        for name, p in self.mtp.named_parameters():
            if p.dim() >= 2:  # residual outputs smaller, as in the decoder (one block per module)
                residual = name.endswith(("attn.o.weight", "mlp.down.weight"))
                nn.init.normal_(p, std=init_std / math.sqrt(2) if residual else init_std)
        self._backend: str | None = None

    def _follow_backend(self, model: LanguageModel) -> None:
        """Route the MTP blocks' attention like the main model's (arch.backend)."""
        backend = getattr(model, "backend", "torch")
        if backend != self._backend:
            for module in self.mtp.modules():
                if hasattr(module, "attend_fn"):
                    module.attend_fn = attention_fn(backend)
            self._backend = backend

    def loss(self, model: LanguageModel, batch: dict[str, torch.Tensor]) -> LossOutput:
        tokens = batch["tokens"]
        inputs, targets, keep = shifted(batch)
        T = inputs.shape[1]
        if self.depth >= T:
            raise UserError(f"objective.depth={self.depth} needs rows of more than {self.depth + 1} tokens.")
        self._follow_backend(model)
        hidden = model(inputs, causal=True)  # (B, T, D)
        main, n, metrics = self.head_loss(model, hidden, targets, keep)
        total, h = main, hidden
        for k, module in enumerate(self.mtp, start=1):
            t = T - k  # positions i whose target t_{i+k+1} is still inside the row
            h = module(h[:, :t], model.embed(tokens[:, k : k + t]))  # (B, t, D)
            loss_k, _, _ = self.head_loss(
                model, head_input(model, module, h), tokens[:, k + 1 :], keep[:, k:]
            )
            total = total + self.weight / self.depth * loss_k
            metrics[f"mtp_loss_{k}"] = loss_k.detach()
        metrics["ntp_loss"] = main.detach()
        return LossOutput(loss=total, n_targets=n, metrics=metrics)

    @torch.no_grad()
    def generate(
        self, model: LanguageModel, prompt: torch.Tensor, speculative: bool = False, **sampling
    ) -> torch.Tensor:
        """Plain sampling with the main model; with ``speculative`` greedy self-speculative decoding
        (module docstring), which gives the same tokens. ``last_decode`` then holds the number of
        main-model forwards and of drafted and accepted tokens."""
        if not speculative:
            return sample_autoregressive(model, prompt, **sampling)
        if sampling["temperature"] > 0:
            raise UserError("mtp.speculative=true decodes greedily; pass temperature=0 with it.")
        if prompt.shape[1] + sampling["max_new_tokens"] + self.depth > sampling["max_context"]:
            # Verification re-reads the whole sequence, which must fit the model's context.
            return sample_autoregressive(model, prompt, **sampling)
        return self._speculative_greedy(model, prompt, sampling["max_new_tokens"], sampling.get("stop_id"))

    def _draft(self, model: LanguageModel, hidden: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
        """hidden (B, T, D) of ``seq[:, :T]``; seq (B, T + 1) ends with the main model's next token ->
        seq extended by ``depth`` greedy MTP drafts (B, T + 1 + depth)."""
        T, h = hidden.shape[1], hidden
        for k, module in enumerate(self.mtp, start=1):
            h = module(h, model.embed(seq[:, k : k + T]))  # (B, T, D): position i reads t_{i+k}
            nxt = model.logits(head_input(model, module, h[:, -1])).argmax(-1, keepdim=True)  # t_{T+k}
            seq = torch.cat([seq, nxt], dim=1)
        return seq

    def _speculative_greedy(
        self, model: LanguageModel, prompt: torch.Tensor, max_new_tokens: int, stop_id: int | None
    ) -> torch.Tensor:
        if prompt.shape[0] != 1:
            raise ValueError("speculative decoding runs one sequence at a time")
        self._follow_backend(model)
        limit = prompt.shape[1] + max_new_tokens
        ids, hidden = prompt, model(prompt, causal=True)  # hidden (1, T, D) of ids
        forwards, drafted, accepted = 1, 0, 0
        start = prompt.shape[1]
        while ids.shape[1] < limit and not (stop_id is not None and bool((ids[0, start:] == stop_id).any())):
            T = ids.shape[1]
            nxt = model.logits(hidden[:, -1]).argmax(-1, keepdim=True)  # (1, 1), certain
            seq = self._draft(model, hidden, torch.cat([ids, nxt], dim=1))  # (1, T + 1 + depth)
            verify = model(seq, causal=True)  # (1, T + 1 + depth, D)
            forwards += 1
            says = model.logits(verify[:, T:-1]).argmax(-1)  # (1, depth): the main model's t_{T+1..}
            agree = (says == seq[:, T + 1 :]).int().cumprod(-1).sum()
            drafted, accepted = drafted + self.depth, accepted + int(agree)
            keep = T + 1 + int(agree)
            ids, hidden = seq[:, :keep], verify[:, :keep]  # causal: the prefix's states are final
        if stop_id is not None:  # cut after the first stop token among the new ones
            new = ids[0, start:].tolist()
            if stop_id in new:
                ids = ids[:, : start + new.index(stop_id) + 1]
        self.last_decode = {"forwards": forwards, "drafted": drafted, "accepted": accepted}
        return ids[:, :limit]
