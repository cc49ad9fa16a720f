"""Parametric law fits by Huber loss on log-residuals: Chinchilla Approach 3, data-constrained, mixture.

- Approach 3 of Hoffmann et al. (2022), "Training Compute-Optimal Large Language Models": fit
  L(N, D) = E + A/N^alpha + B/D^beta by minimizing the Huber loss (delta = 1e-3) of log-residuals in
  the log-sum-exp parametrization
      log L_hat = LSE(a - alpha ln N, b - beta ln D, e),   A = e^a, B = e^b, E = e^e,
  with L-BFGS-B from Hoffmann et al.'s grid of initializations. As in Besiroglu et al. (2024),
  "Chinchilla Scaling: A replication attempt", the optimizer runs to tight tolerances and uncertainty
  comes from a bootstrap over runs. The whole grid (4500 points) is scored in one vectorized pass and
  L-BFGS-B (analytic gradient) starts from the ``top_k`` best grid points: on the synthetic test data
  (63 runs) the 8 best starts all reached the same optimum, and 5 starts keep a fit well under a second.
- The data-constrained law of Muennighoff et al. (2023), "Scaling Data-Constrained Language Models":
  R*_D and R*_N fitted on top of a single-epoch Chinchilla law.
- The mixture-ratio law L(r) = E + A/(r + eps)^alpha for continued pretraining (Que et al., 2024,
  D-CPT Law); see ``laws.py``.

Use through ``fit.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp

from .fit_common import (
    LBFGS_OPTIONS,
    Array,
    RunPoint,
    as_points,
    blas_single_thread,
    huber,
    interval,
    robust_fit,
)
from .laws import MUENNIGHOFF_DEFAULT, ChinchillaLaw, DataConstrainedLaw, MixtureLaw

# theta = (a, b, e, alpha, beta); bounds keep L-BFGS-B away from overflow, far outside real fits.
_BOUNDS = [(-30.0, 80.0), (-30.0, 80.0), (-5.0, 5.0), (0.0, 4.0), (0.0, 4.0)]


def default_grid() -> Array:
    """Hoffmann et al.'s initialization grid: alpha, beta in {0, .5, ..., 2}, e in {-1, -.5, ..., 1},
    a, b in {0, 5, ..., 25}: 4500 starts, as rows (a, b, e, alpha, beta)."""
    ab, e, ex = np.arange(0, 26, 5.0), np.arange(-1, 1.01, 0.5), np.arange(0, 2.01, 0.5)
    mesh = np.meshgrid(ab, ab, e, ex, ex, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)


def _lse_terms(theta: Array, logn: Array, logd: Array) -> Array:
    """(..., n, 3) stack of the three LSE arguments for theta of shape (..., 5)."""
    t = np.asarray(theta)[..., None, :]
    return np.stack(
        [
            t[..., 0] - t[..., 3] * logn,
            t[..., 1] - t[..., 4] * logd,
            np.broadcast_to(t[..., 2], np.broadcast_shapes(t[..., 2].shape, logn.shape)),
        ],
        -1,
    )


def _objective(theta: Array, logn: Array, logd: Array, logl: Array, delta: float) -> tuple[float, Array]:
    a, b, e, alpha, beta = theta
    u = np.stack([a - alpha * logn, b - beta * logd, np.full_like(logn, e)], axis=1)  # (n, 3)
    m = u.max(axis=1, keepdims=True)
    ex = np.exp(u - m)
    tot = ex.sum(axis=1)
    val, dh = huber(m[:, 0] + np.log(tot) - logl, delta)
    w = ex * (dh / tot)[:, None]  # d LSE / d u_j = softmax_j, times the Huber derivative
    gsum = w.sum(axis=0)
    return float(val.sum()), np.array([gsum[0], gsum[1], gsum[2], -w[:, 0] @ logn, -w[:, 1] @ logd])


def _fit_lse(logn: Array, logd: Array, logl: Array, delta: float, starts: Array) -> tuple[Array, float]:
    best: tuple[Array, float] | None = None
    with blas_single_thread():
        for s in starts:
            res = minimize(
                _objective,
                s,
                args=(logn, logd, logl, delta),
                jac=True,
                method="L-BFGS-B",
                bounds=_BOUNDS,
                options=LBFGS_OPTIONS,
            )
            if best is None or res.fun < best[1]:
                best = (res.x, float(res.fun))
    assert best is not None
    return best


def _top_starts(grid: Array, logn: Array, logd: Array, logl: Array, delta: float, k: int) -> Array:
    vals = np.empty(len(grid))
    for i in range(0, len(grid), 1024):  # chunks bound memory at 1024 * n * 3 floats
        chunk = grid[i : i + 1024]
        vals[i : i + 1024] = huber(logsumexp(_lse_terms(chunk, logn, logd), axis=-1) - logl, delta)[0].sum(-1)
    return grid[np.argsort(vals)[:k]]


def _law(theta: Array) -> ChinchillaLaw:
    a, b, e, alpha, beta = map(float, theta)
    return ChinchillaLaw(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=alpha, beta=beta)


def _derived(law: ChinchillaLaw, c_ref: float, k: float) -> dict[str, float]:
    n, d = law.optimal_allocation(c_ref, k)
    return {
        **law.to_dict(),
        "a": law.a,
        "b": law.b,
        "G": law.G,
        "tokens_per_param": float(d) / float(n),
        "n_opt": float(n),
        "d_opt": float(d),
    }


@dataclass
class Approach3Fit:
    """Fitted Chinchilla law, bootstrap intervals for its coefficients and the implied allocation
    (a, b, G, and N_opt, D_opt, tokens_per_param at ``reference_flops``)."""

    law: ChinchillaLaw
    intervals: dict[str, tuple[float, float]]
    objective: float
    num_points: int
    n_bootstrap: int
    reference_flops: float
    flops_per_param_token: float = 6.0
    bootstrap: list[dict[str, float]] = field(default_factory=list, repr=False)

    def estimates(self) -> dict[str, float]:
        return _derived(self.law, self.reference_flops, self.flops_per_param_token)

    def to_dict(self) -> dict[str, Any]:
        return {
            "approach": 3,
            "law": "chinchilla",
            "coefficients": self.law.to_dict(),
            "estimates": self.estimates(),
            "reference_flops": self.reference_flops,
            "intervals": {k: list(v) for k, v in self.intervals.items()},
            "huber_objective": self.objective,
            "num_points": self.num_points,
            "n_bootstrap": self.n_bootstrap,
        }


def fit_approach3(
    points: Sequence[RunPoint | Mapping[str, Any]],
    delta: float = 1e-3,
    grid: Array | None = None,
    top_k: int = 5,
    n_bootstrap: int = 100,
    seed: int = 0,
    ci: float = 0.95,
    reference_flops: float | None = None,
    flops_per_param_token: float = 6.0,
    bootstrap_top_k: int = 0,
) -> Approach3Fit:
    """Huber fit of L = E + A/N^alpha + B/D^beta (Hoffmann et al., Approach 3) with bootstrap intervals.

    ``reference_flops`` (default: the largest run's flops) is where N_opt, D_opt and tokens_per_param
    are reported; tokens per parameter depends on C unless alpha == beta. Each bootstrap resample starts
    from the full-data optimum, plus its own ``bootstrap_top_k`` best grid points (0 by default: one
    warm-started L-BFGS-B per resample keeps 100 resamples to about a second).
    """
    pts = as_points(points)
    if len(pts) < 6:
        raise ValueError(f"Approach 3 fits 5 coefficients and needs at least 6 runs; got {len(pts)}")
    logn, logd = np.log([p.params for p in pts]), np.log([p.tokens for p in pts])
    logl = np.log([p.loss for p in pts])
    grid = default_grid() if grid is None else np.asarray(grid, dtype=np.float64)
    theta, obj = _fit_lse(logn, logd, logl, delta, _top_starts(grid, logn, logd, logl, delta, top_k))
    c_ref = float(reference_flops or max(p.flops for p in pts))
    rng = np.random.default_rng(seed)
    boots: list[dict[str, float]] = []
    for _ in range(n_bootstrap):
        idx = rng.integers(0, len(pts), len(pts))
        if len(np.unique(idx)) < 6:
            continue
        bn, bd, bl = logn[idx], logd[idx], logl[idx]
        starts = theta[None]
        if bootstrap_top_k > 0:
            starts = np.vstack([starts, _top_starts(grid, bn, bd, bl, delta, bootstrap_top_k)])
        boots.append(_derived(_law(_fit_lse(bn, bd, bl, delta, starts)[0]), c_ref, flops_per_param_token))
    intervals = {k: interval(np.array([s[k] for s in boots]), ci) for k in boots[0]} if boots else {}
    return Approach3Fit(
        _law(theta), intervals, obj, len(pts), n_bootstrap, c_ref, flops_per_param_token, boots
    )


@dataclass
class DataConstrainedFit:
    """Muennighoff et al. decay constants R*_D, R*_N fitted on top of a base Chinchilla law."""

    law: DataConstrainedLaw
    objective: float
    num_points: int
    fixed: list[str]  # coefficients held at their published values because the data cannot identify them

    def to_dict(self) -> dict[str, Any]:
        return {
            "law": "data_constrained",
            "coefficients": self.law.to_dict(),
            "fixed": self.fixed,
            "huber_objective": self.objective,
            "num_points": self.num_points,
        }


def fit_data_constrained(
    points: Sequence[RunPoint | Mapping[str, Any]], base: ChinchillaLaw | None = None, delta: float = 1e-3
) -> DataConstrainedFit:
    """Fit R*_D (and R*_N where some run has more parameters than N_opt(U_D)) of Muennighoff et al.

    Needs ``unique_tokens`` on every run (unique tokens in its training data; epochs = tokens /
    unique_tokens) and some runs with more than one epoch. ``base`` is the single-epoch Chinchilla law;
    when omitted it is fitted (Approach 3, no bootstrap) on the runs with at most one epoch.
    """
    pts = as_points(points)
    missing = [p.name or str(i) for i, p in enumerate(pts) if not p.unique_tokens]
    if missing:
        raise ValueError(
            "the data_constrained law needs unique_tokens (unique tokens in the training data; "
            f"epochs = tokens / unique_tokens) on every run; missing for: {', '.join(missing[:5])}"
        )
    u = np.array([p.unique_tokens for p in pts], dtype=np.float64)
    n, d = np.array([p.params for p in pts]), np.array([p.tokens for p in pts])
    logl = np.log([p.loss for p in pts])
    if not np.any(d > u * (1 + 1e-9)):
        raise ValueError(
            "the data_constrained law needs some runs with more than one epoch (tokens > unique_tokens)"
        )
    if base is None:
        single = [p for p in pts if p.tokens <= p.unique_tokens * (1 + 1e-9)]  # type: ignore[operator]
        if len(single) < 6:
            raise ValueError(
                f"only {len(single)} single-epoch runs to fit the base law from (need 6); pass base="
            )
        base = fit_approach3(single, delta=delta, n_bootstrap=0).law
    default = MUENNIGHOFF_DEFAULT
    excess_n = bool(np.any(n > base.optimal_params_for_tokens(u) * (1 + 1e-9)))
    fixed = [] if excess_n else ["r_star_n"]

    def law_of(th: Array) -> DataConstrainedLaw:
        rn = math.exp(th[1]) if excess_n else default.r_star_n
        return DataConstrainedLaw(base, r_star_d=math.exp(th[0]), r_star_n=rn)

    resid = lambda th: np.log(law_of(th).loss(n, d, u)) - logl
    starts = [
        (math.log(x), math.log(y)) for x in (2.0, 10.0, 50.0) for y in ((2.0, 10.0) if excess_n else (5.0,))
    ]
    th, obj = robust_fit(resid, starts, [(math.log(0.05), math.log(1e4))] * 2, delta)
    return DataConstrainedFit(law_of(th), obj, len(pts), fixed)


@dataclass
class MixtureFit:
    law: MixtureLaw
    objective: float
    num_points: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "law": "mixture",
            "coefficients": self.law.to_dict(),
            "huber_objective": self.objective,
            "num_points": self.num_points,
        }


def fit_mixture(points: Sequence[RunPoint | Mapping[str, Any]], delta: float = 1e-3) -> MixtureFit:
    """Fit L(r) = E + A/(r + eps)^alpha (laws.MixtureLaw) to runs carrying ``mix_ratio`` (the domain share
    r in [0, 1]) and ``loss`` (validation loss on the domain), at fixed model size and token budget.
    Parametrized as log L = LSE(e, a - alpha log(r + eps)) with E = e^e, A = e^a, eps = e^l."""
    pts = as_points(points)
    if any(p.mix_ratio is None for p in pts):
        raise ValueError("the mixture law needs mix_ratio (share of domain data, 0..1) on every run")
    r = np.array([p.mix_ratio for p in pts], dtype=np.float64)
    if len(np.unique(r)) < 5:
        raise ValueError(
            f"the mixture law fits 4 coefficients; it needs at least 5 distinct mix_ratio values, "
            f"got {len(np.unique(r))}"
        )
    logl = np.log([p.loss for p in pts])

    def resid(th: Array) -> Array:
        e, a, alpha, le = th
        return np.logaddexp(e, a - alpha * np.log(r + math.exp(le))) - logl

    starts = [
        (e, a, al, le)
        for e in (-1.0, 0.0, 1.0)
        for a in (-2.0, 0.0)
        for al in (0.3, 1.0)
        for le in (-5.0, -2.0)
    ]
    th, obj = robust_fit(resid, starts, [(-5.0, 5.0), (-15.0, 15.0), (0.0, 5.0), (-12.0, 1.0)], delta)
    e, a, alpha, le = map(float, th)
    return MixtureFit(MixtureLaw(E=math.exp(e), A=math.exp(a), alpha=alpha, eps=math.exp(le)), obj, len(pts))
