"""Scaling laws as pure functions with dataclass coefficients.

Laws implemented here (fitting lives in ``fit.py``):

- ``ChinchillaLaw``: L(N, D) = E + A / N^alpha + B / D^beta, the parametric loss of Hoffmann et al.
  (2022), "Training Compute-Optimal Large Language Models" (Approach 3), with the closed-form
  compute-optimal allocation under C = k N D (k = 6 in the Chinchilla convention).
  Two published coefficient sets ship as defaults: Hoffmann et al.'s own fit and the
  Besiroglu et al. (2024) replication, "Chinchilla Scaling: A replication attempt".
- ``DataConstrainedLaw``: the repetition-aware law of Muennighoff et al. (2023), "Scaling
  Data-Constrained Language Models". Repeated tokens are worth less than fresh ones; the law replaces
  D and N by effective values D' and N' that saturate with repetition:
      D' = U_D + U_D R*_D (1 - exp(-R_D / R*_D)),  R_D = epochs - 1 = D / U_D - 1
      N' = U_N + U_N R*_N (1 - exp(-R_N / R*_N)),  R_N = N / U_N - 1,
  where U_D is the number of unique tokens, and U_N = min(N, N_opt(U_D)) is the compute-optimal size
  for U_D tokens under the base Chinchilla law (parameters beyond it count as "repeated").
  Inputs per run: parameters N, total training tokens D and unique tokens U_D (epochs = D / U_D).
- ``MixtureLaw``: a mixture-ratio law for continued pretraining, L(r) = E + A / (r + eps)^alpha, where r
  in [0, 1] is the share of domain data in the continued-pretraining mixture and L the validation loss
  on that domain at a fixed model size and token budget. This is the r-dependent term of the D-CPT law
  (Que et al., 2024, "D-CPT Law: Domain-specific Continual Pre-Training Scaling Law for Large Language
  Models"); eps > 0 keeps L finite at r = 0 (no domain data). A power law is chosen over the
  exponential form of Ye et al. (2024), "Data Mixing Laws", because it stays finite and monotone on the
  whole of [0, 1] with one fewer degenerate direction (E vs. the exponential's offset).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatOrArray = float | NDArray[np.float64]


def _as_out(x: NDArray[np.float64]) -> FloatOrArray:
    """Return a Python float for 0-d results, the array otherwise."""
    return float(x) if np.ndim(x) == 0 else x


@dataclass(frozen=True)
class ChinchillaLaw:
    """L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al., 2022, eq. 2).

    N is the parameter count (non-embedding where available), D the number of training tokens,
    L the loss in nats per token.
    """

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def loss(self, N: ArrayLike, D: ArrayLike) -> FloatOrArray:
        n = np.asarray(N, dtype=np.float64)
        d = np.asarray(D, dtype=np.float64)
        return _as_out(self.E + self.A / n**self.alpha + self.B / d**self.beta)

    @property
    def a(self) -> float:
        """Exponent of N_opt proportional to C^a: beta / (alpha + beta)."""
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        """Exponent of D_opt proportional to C^b: alpha / (alpha + beta)."""
        return self.alpha / (self.alpha + self.beta)

    @property
    def G(self) -> float:
        """G = (alpha A / (beta B))^(1 / (alpha + beta)) from Hoffmann et al., eq. 4."""
        return (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))

    def optimal_allocation(
        self, C: ArrayLike, flops_per_param_token: float = 6.0
    ) -> tuple[FloatOrArray, FloatOrArray]:
        """(N_opt, D_opt) minimizing L subject to C = flops_per_param_token * N * D.

        Closed form: N_opt = G (C/k)^a, D_opt = G^-1 (C/k)^b, with a + b = 1 so N_opt D_opt = C/k.
        """
        k = np.asarray(C, dtype=np.float64) / flops_per_param_token
        g = self.G
        return _as_out(g * k**self.a), _as_out(k**self.b / g)

    def tokens_per_param(self, C: ArrayLike, flops_per_param_token: float = 6.0) -> FloatOrArray:
        """D_opt / N_opt at compute C; constant in C only when alpha == beta."""
        n, d = self.optimal_allocation(C, flops_per_param_token)
        return _as_out(np.asarray(d) / np.asarray(n))

    def optimal_loss(self, C: ArrayLike, flops_per_param_token: float = 6.0) -> FloatOrArray:
        """Loss at the compute-optimal allocation for compute C."""
        n, d = self.optimal_allocation(C, flops_per_param_token)
        return self.loss(n, d)

    def optimal_params_for_tokens(self, D: ArrayLike) -> FloatOrArray:
        """The N for which D is the compute-optimal token count (inverts D_opt(C))."""
        d = np.asarray(D, dtype=np.float64)
        k = (self.G * d) ** (1.0 / self.b)  # C / flops_per_param_token at which D_opt == D
        return _as_out(self.G * k**self.a)

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChinchillaLaw:
        return cls(**{k: float(d[k]) for k in ("E", "A", "B", "alpha", "beta")})


# Hoffmann et al. (2022), Approach 3 fit (their eq. 10 / Table A3).
CHINCHILLA_HOFFMANN = ChinchillaLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
# Besiroglu et al. (2024), refit on data reconstructed from Hoffmann et al.'s Figure 4.
CHINCHILLA_BESIROGLU = ChinchillaLaw(E=1.82, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658)
PUBLISHED_LAWS: dict[str, ChinchillaLaw] = {
    "hoffmann": CHINCHILLA_HOFFMANN,
    "besiroglu": CHINCHILLA_BESIROGLU,
}


def repetitions(total: ArrayLike, unique: ArrayLike) -> FloatOrArray:
    """R = total / unique - 1, clipped at 0: the number of repeats beyond the first pass (epochs - 1)."""
    t = np.asarray(total, dtype=np.float64)
    u = np.asarray(unique, dtype=np.float64)
    return _as_out(np.maximum(t / u - 1.0, 0.0))


def effective_data(unique: ArrayLike, reps: ArrayLike, r_star: float) -> FloatOrArray:
    """Muennighoff et al. (2023), eq. 5: U + U R* (1 - exp(-R / R*)).

    ``unique`` is U (unique tokens U_D, or unique parameters U_N), ``reps`` is R (repetitions beyond
    the first epoch, >= 0), ``r_star`` is R*, the repetition count at which returns have decayed to
    1/e. R = 0 gives U; R -> infinity gives U (1 + R*).
    """
    u = np.asarray(unique, dtype=np.float64)
    r = np.asarray(reps, dtype=np.float64)
    if np.any(r < 0):
        raise ValueError("repetitions must be >= 0 (epochs - 1); got a negative value")
    return _as_out(u + u * r_star * (-np.expm1(-r / r_star)))


@dataclass(frozen=True)
class DataConstrainedLaw:
    """Muennighoff et al. (2023): L = E + A / N'^alpha + B / D'^beta with effective N', D'.

    ``loss(N, D, unique_tokens)`` needs, per run, the parameter count N, the total number of training
    tokens D and the number of unique tokens U_D in the data (epochs = D / U_D). With D <= U_D and
    N <= N_opt(U_D) it reduces exactly to the base Chinchilla law.
    """

    base: ChinchillaLaw
    r_star_d: float = 15.387
    r_star_n: float = 5.309

    def effective_tokens(self, D: ArrayLike, unique_tokens: ArrayLike) -> FloatOrArray:
        u = np.asarray(unique_tokens, dtype=np.float64)
        return effective_data(u, repetitions(D, u), self.r_star_d)

    def unique_params(self, N: ArrayLike, unique_tokens: ArrayLike) -> FloatOrArray:
        """U_N = min(N, N_opt(U_D)): the base law's compute-optimal size for U_D tokens."""
        n = np.asarray(N, dtype=np.float64)
        return _as_out(np.minimum(n, self.base.optimal_params_for_tokens(unique_tokens)))

    def effective_params(self, N: ArrayLike, unique_tokens: ArrayLike) -> FloatOrArray:
        un = np.asarray(self.unique_params(N, unique_tokens))
        return effective_data(un, repetitions(N, un), self.r_star_n)

    def loss(self, N: ArrayLike, D: ArrayLike, unique_tokens: ArrayLike) -> FloatOrArray:
        n_eff = self.effective_params(N, unique_tokens)
        return self.base.loss(n_eff, self.effective_tokens(D, unique_tokens))

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base.to_dict(), "r_star_d": self.r_star_d, "r_star_n": self.r_star_n}


# Muennighoff et al. (2023): their Chinchilla-form refit and the fitted decay constants R*_D, R*_N.
MUENNIGHOFF_DEFAULT = DataConstrainedLaw(
    base=ChinchillaLaw(E=1.87, A=521.0, B=1488.0, alpha=0.353, beta=0.353), r_star_d=15.387, r_star_n=5.309
)


@dataclass(frozen=True)
class MixtureLaw:
    """L(r) = E + A / (r + eps)^alpha for the domain share r in [0, 1] (see module docstring).

    Input per run: the domain share ``r`` of the continued-pretraining mixture and the validation loss
    on the domain; model size and token budget are held fixed across the runs being fitted.
    """

    E: float
    A: float
    alpha: float
    eps: float

    def loss(self, r: ArrayLike) -> FloatOrArray:
        x = np.asarray(r, dtype=np.float64)
        return _as_out(self.E + self.A / (x + self.eps) ** self.alpha)

    def ratio_for_loss(self, target: float) -> float:
        """Smallest domain share r reaching ``target`` loss (nan if unreachable with r <= 1)."""
        if target <= self.E:
            return math.nan
        r = (self.A / (target - self.E)) ** (1.0 / self.alpha) - self.eps
        return float(max(r, 0.0)) if r <= 1.0 else math.nan

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}
