"""Muon and its variants: orthogonalized momentum for 2-D hidden matrices, AdamW for the rest.

Muon (K. Jordan et al., 2024, "Muon: An optimizer for hidden layers in neural networks",
kellerjordan.github.io/posts/muon; at scale: Liu et al., 2025, arXiv:2502.16982): Nesterov
momentum, then the update direction replaced by (an approximation of) its polar factor U V^T,
computed by a quintic Newton–Schulz iteration on the Frobenius-normalized matrix. Embeddings, an
untied output head, norm gains, biases and every non-2-D parameter are updated by AdamW in the same
optimizer (groups.py assigns the roles and asserts the partition).

Per-shape LR: the update of a (fan_out, fan_in) matrix is scaled by sqrt(max(1, fan_out/fan_in)),
Jordan's rule, which makes its spectral norm lr * sqrt(max(1, fan_out/fan_in)) — the spectral
condition for feature learning of Yang, Simon & Bernstein (2023, arXiv:2310.17813), which keeps one
LR right across widths (µP in spectral form). We did not use Moonshot's 0.2*sqrt(max dim) rule: it
matches AdamW's update RMS, which grows the spectral norm with width.

Direction variants (``direction``, chosen by ``_target_`` in conf/optim/*.yaml):
- ``NewtonSchulz``: Muon's msign(M) approximation.
- ``SpectralPower``: HTMuon (Pang et al., 2026, "HTMuon: Improving Muon via Heavy-Tailed Spectral
  Correction", arXiv:2603.10067): U Σ^p V^T instead of U V^T (p=0 is Muon, p=1 momentum SGD), for
  heavier-tailed updates. We compute it by exact SVD in float32 on the momentum divided by its
  largest singular value, so the top direction moves exactly as in Muon; the normalization is our
  choice (the summaries of the paper we could read do not fix it) and the paper's accelerated
  approximation is not implemented.
- ``KroneckerWhitened``: Mousse (Zhang et al., 2026, "Mousse: Rectifying the Geometry of Muon with
  Curvature-Aware Preconditioning", arXiv:2603.09697): Shampoo-style factors L = EMA(G G^T),
  R = EMA(G^T G), trace-normalized; the momentum is whitened L^-a M R^-a, orthogonalized,
  unwhitened L^a O R^a, and rescaled to the Frobenius norm of O. a=0.125; the factor roots are
  recomputed every ``every`` steps (eigendecomposition). Beta2 and the refresh interval defaults
  are ours.

Distributed: under DDP every rank holds the full all-reduced gradient, so each rank computes the
same update (redundantly); that is supported. FSDP shards parameters, and an orthogonalization of a
shard is not the shard of the orthogonalization, so sharded (DTensor) parameters are refused.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pretrainctl.errors import UserError
from pretrainctl.optim.groups import param_roles

# Quintic coefficients (a, b, c) of Jordan's Newton–Schulz: they push singular values in (0, 1]
# into roughly [0.7, 1.2] in 5 steps rather than converging exactly (faster, and enough for Muon).
NS_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz(G: torch.Tensor, steps: int = 5, dtype: torch.dtype | None = None) -> torch.Tensor:
    """G (m, n) -> approximately U V^T of G's SVD, same shape and dtype as G. Runs in ``dtype``
    (bf16 is stable here because X is normalized first: its singular values start in (0, 1])."""
    a, b, c = NS_COEFFS
    X = G.to(dtype or G.dtype)
    tall = X.shape[0] > X.shape[1]
    if tall:  # iterate on the smaller Gram matrix X X^T
        X = X.T
    X = X / (X.norm() + 1e-7)  # Frobenius norm >= spectral norm, so every singular value <= 1
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return (X.T if tall else X).to(G.dtype)


class NewtonSchulz:
    """Muon's direction. ``dtype="auto"``: bfloat16 on CUDA, float32 elsewhere — on this repo's CPU
    (AMD EPYC, no AVX512-BF16) a bf16 (256x704) NS step took 86 ms vs 3 ms in float32."""

    def __init__(self, steps: int = 5, dtype: str = "auto") -> None:
        if steps < 1:
            raise UserError(f"optim.direction.steps={steps} must be at least 1.")
        if dtype not in ("auto", "bfloat16", "float32"):
            raise UserError(f"optim.direction.dtype={dtype!r}: choose auto, bfloat16 or float32.")
        self.steps, self.dtype = steps, dtype

    def _dtype(self, device: torch.device) -> torch.dtype:
        if self.dtype == "auto":
            return torch.bfloat16 if device.type == "cuda" else torch.float32
        return getattr(torch, self.dtype)

    def __call__(self, M: torch.Tensor, grad: torch.Tensor, state: dict) -> torch.Tensor:
        return newton_schulz(M, self.steps, self._dtype(M.device))


class SpectralPower:
    """HTMuon's direction U Σ^p V^T of M / σ_max(M) (module docstring)."""

    def __init__(self, power: float = 0.125) -> None:
        if not 0 <= power <= 1:
            raise UserError(f"optim.direction.power={power} must be in [0, 1] (0 = Muon, 1 = SGD).")
        self.power = power

    def __call__(self, M: torch.Tensor, grad: torch.Tensor, state: dict) -> torch.Tensor:
        U, S, Vh = torch.linalg.svd(M.float(), full_matrices=False)
        S = (S / S[0].clamp_min(1e-30)).pow(self.power)  # σ_max -> 1, like Muon's top direction
        return ((U * S) @ Vh).to(M.dtype)


class KroneckerWhitened:
    """Mousse's direction (module docstring). ``state`` keeps the factors and their roots."""

    def __init__(
        self, alpha: float = 0.125, beta2: float = 0.95, every: int = 10, steps: int = 5, eps: float = 1e-8
    ) -> None:
        if not 0 <= alpha <= 0.5:
            raise UserError(f"optim.direction.alpha={alpha} must be in [0, 0.5] (Shampoo uses 0.25).")
        self.alpha, self.beta2, self.every, self.eps = alpha, beta2, max(1, every), eps
        self.ns = NewtonSchulz(steps)

    def _roots(self, F: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        F = F * (F.shape[0] / (F.trace() + self.eps))  # trace-normalized: mean eigenvalue 1
        evals, Q = torch.linalg.eigh(F.double())
        evals = evals.clamp_min(self.eps)
        pos = (Q * evals.pow(self.alpha)) @ Q.T
        neg = (Q * evals.pow(-self.alpha)) @ Q.T
        return pos.to(F.dtype), neg.to(F.dtype)

    def __call__(self, M: torch.Tensor, grad: torch.Tensor, state: dict) -> torch.Tensor:
        g = grad.float()
        if "L" not in state:
            state["L"], state["R"], state["k"] = g @ g.T * 0, g.T @ g * 0, 0
        state["L"].mul_(self.beta2).add_(g @ g.T, alpha=1 - self.beta2)
        state["R"].mul_(self.beta2).add_(g.T @ g, alpha=1 - self.beta2)
        if state["k"] % self.every == 0:  # bias correction cancels in the trace normalization
            state["L+"], state["L-"] = self._roots(state["L"])
            state["R+"], state["R-"] = self._roots(state["R"])
        state["k"] += 1
        O = self.ns(state["L-"] @ M.float() @ state["R-"], grad, state)
        U = state["L+"] @ O @ state["R+"]
        return (U * (O.norm() / (U.norm() + 1e-30))).to(M.dtype)


class Muon(torch.optim.Optimizer):
    """One optimizer over every parameter: groups with ``muon=True`` (2-D matrices) get momentum +
    ``direction``; the others get AdamW. Group keys: lr, weight_decay, and momentum, nesterov (Muon)
    or betas, eps (AdamW)."""

    def __init__(self, groups: list[dict], direction) -> None:
        defaults = dict(lr=0.02, weight_decay=0.0, momentum=0.95, nesterov=True, betas=(0.9, 0.95), eps=1e-8)
        super().__init__(groups, defaults)
        self.direction = direction
        for g in self.param_groups:
            for p in g["params"]:
                if type(p.data).__name__ == "DTensor":
                    raise UserError("optim=muon does not support FSDP-sharded parameters; use DDP.")
                if g.get("muon") and p.dim() != 2:
                    raise ValueError(f"Muon group {g.get('name')} holds a {p.dim()}-D parameter")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for g in self.param_groups:
            (self._muon if g.get("muon") else self._adamw)(g)
        return loss

    def _muon(self, g: dict) -> None:
        lr, wd, beta = g["lr"], g["weight_decay"], g["momentum"]
        for p in g["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            buf = state.setdefault("momentum_buffer", torch.zeros_like(p))
            buf.mul_(beta).add_(p.grad)
            M = p.grad.add(buf, alpha=beta) if g["nesterov"] else buf
            update = self.direction(M, p.grad, state)
            fan_out, fan_in = p.shape
            p.mul_(1 - lr * wd)
            p.add_(update, alpha=-lr * math.sqrt(max(1.0, fan_out / fan_in)))

    def _adamw(self, g: dict) -> None:
        lr, wd, (b1, b2), eps = g["lr"], g["weight_decay"], g["betas"], g["eps"]
        for p in g["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
            state["step"] += 1
            t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
            p.mul_(1 - lr * wd)
            m.lerp_(p.grad, 1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            denom = (v.sqrt() / math.sqrt(1 - b2**t)).add_(eps)
            p.addcdiv_(m, denom, value=-lr / (1 - b1**t))


class MuonBuilder:
    """Builds Muon over a module once it exists. ``lr``: the Muon LR of hidden matrices (spectral
    units, see the module docstring); ``adamw_*``: the AdamW settings of everything else;
    ``grad_clip``: max global gradient norm (None disables clipping)."""

    def __init__(
        self,
        direction,
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        adamw_lr: float = 3e-3,
        adamw_betas: tuple[float, float] = (0.9, 0.95),
        adamw_weight_decay: float = 0.1,
        adamw_eps: float = 1e-8,
        grad_clip: float | None = 1.0,
    ) -> None:
        if lr <= 0 or adamw_lr <= 0:
            raise UserError(f"optim.lr={lr} and optim.adamw_lr={adamw_lr} must be positive.")
        if not 0 <= momentum < 1:
            raise UserError(f"optim.momentum={momentum} must be in [0, 1).")
        self.direction, self.lr, self.momentum, self.nesterov = direction, lr, momentum, nesterov
        self.weight_decay, self.adamw_lr, self.adamw_betas = weight_decay, adamw_lr, tuple(adamw_betas)
        self.adamw_weight_decay, self.adamw_eps, self.grad_clip = adamw_weight_decay, adamw_eps, grad_clip

    def build(self, model: nn.Module) -> Muon:
        roles = param_roles(model)
        stacked = [p for p in roles["vector"] if p.dim() >= 2]
        vectors = [p for p in roles["vector"] if p.dim() < 2]
        adam = dict(lr=self.adamw_lr, betas=self.adamw_betas, eps=self.adamw_eps)
        groups = [
            dict(params=roles["hidden"], name="muon", muon=True, lr=self.lr, weight_decay=self.weight_decay,
                 momentum=self.momentum, nesterov=self.nesterov),
            dict(params=roles["head"] + stacked, name="head", weight_decay=self.adamw_weight_decay, **adam),
            dict(params=roles["embedding"], name="embedding", weight_decay=0.0, **adam),
            dict(params=vectors, name="vector", weight_decay=0.0, **adam),
        ]  # fmt: skip
        return Muon([g for g in groups if g["params"]], self.direction)
