"""Approach 2 of Hoffmann et al. (2022), "Training Compute-Optimal Large Language Models".

Group runs by IsoFLOP budget, fit a parabola of loss against ln N per budget, take its vertex as
N_opt(C), set D_opt = C / (6 N_opt), then regress ln N_opt and ln D_opt on ln C for the exponents a and
b of N_opt = k_N C^a and D_opt = k_D C^b. Intervals: percentile bootstrap resampling runs within each
budget. Use through ``fit.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .fit_common import Array, RunPoint, as_points, group_by_budget, interval
from .laws import FloatOrArray


@dataclass(frozen=True)
class BudgetMinimum:
    flops: float
    n_opt: float
    d_opt: float
    loss_opt: float
    parabola: tuple[float, float, float]  # loss = p0 (ln N)^2 + p1 ln N + p2
    num_points: int
    vertex_in_range: bool  # False: the minimum is extrapolated beyond the sampled sizes


@dataclass
class Approach2Fit:
    """N_opt = n_coeff C^a, D_opt = d_coeff C^b, from per-budget parabola minima."""

    minima: list[BudgetMinimum]
    a: float
    b: float
    n_coeff: float
    d_coeff: float
    intervals: dict[str, tuple[float, float]]
    n_bootstrap: int
    n_bootstrap_failed: int = 0

    def n_opt(self, C: ArrayLike) -> FloatOrArray:
        return self.n_coeff * np.asarray(C, dtype=np.float64) ** self.a

    def d_opt(self, C: ArrayLike) -> FloatOrArray:
        return self.d_coeff * np.asarray(C, dtype=np.float64) ** self.b

    def to_dict(self) -> dict[str, Any]:
        return {
            "approach": 2,
            "a": self.a,
            "b": self.b,
            "n_coeff": self.n_coeff,
            "d_coeff": self.d_coeff,
            "intervals": {k: list(v) for k, v in self.intervals.items()},
            "n_bootstrap": self.n_bootstrap,
            "n_bootstrap_failed": self.n_bootstrap_failed,
            "minima": [m.__dict__ | {"parabola": list(m.parabola)} for m in self.minima],
        }


def _vertex(logn: Array, loss: Array) -> tuple[Array, float] | None:
    if len(np.unique(logn)) < 3:
        return None
    coef = np.polyfit(logn, loss, 2)
    return (coef, float(-coef[1] / (2 * coef[0]))) if coef[0] > 0 else None


def _powerlaws(flops: Array, n_opt: Array, k: float) -> tuple[float, float, float, float]:
    a, ln_kn = np.polyfit(np.log(flops), np.log(n_opt), 1)
    b, ln_kd = np.polyfit(np.log(flops), np.log(flops / (k * n_opt)), 1)
    return float(a), float(b), float(np.exp(ln_kn)), float(np.exp(ln_kd))


def fit_approach2(
    points: Sequence[RunPoint | Mapping[str, Any]],
    rel_tol: float = 0.05,
    flops_per_param_token: float = 6.0,
    n_bootstrap: int = 100,
    seed: int = 0,
    ci: float = 0.95,
) -> Approach2Fit:
    """IsoFLOP parabolas (Hoffmann et al., Approach 2); bootstrap resamples runs within each budget."""
    groups = group_by_budget(as_points(points), rel_tol)
    if len(groups) < 2:
        raise ValueError(f"Approach 2 needs at least 2 IsoFLOP budgets; found {len(groups)}")
    data = []
    minima = []
    for c, g in groups:
        logn, loss = np.log([p.params for p in g]), np.array([p.loss for p in g])
        if len(np.unique(logn)) < 3:
            raise ValueError(
                f"IsoFLOP budget {c:.3g} has {len(np.unique(logn))} distinct model sizes; "
                "Approach 2 needs at least 3 per budget to fit a parabola"
            )
        fitted = _vertex(logn, loss)
        if fitted is None:
            raise ValueError(
                f"the loss at IsoFLOP budget {c:.3g} is not convex in ln N; "
                "sample model sizes on both sides of the minimum"
            )
        coef, x = fitted
        n = math.exp(x)
        inside = bool(logn.min() <= x <= logn.max())
        lo = float(np.polyval(coef, x))
        minima.append(
            BudgetMinimum(c, n, c / (flops_per_param_token * n), lo, tuple(map(float, coef)), len(g), inside)
        )
        data.append((logn, loss))
    flops = np.array([m.flops for m in minima])
    a, b, kn, kd = _powerlaws(flops, np.array([m.n_opt for m in minima]), flops_per_param_token)
    rng = np.random.default_rng(seed)
    samples, failed = [], 0
    for _ in range(n_bootstrap):
        xs = []
        for logn, loss in data:
            idx = rng.integers(0, len(logn), len(logn))
            v = _vertex(logn[idx], loss[idx])
            if v is None:
                break
            xs.append(v[1])
        if len(xs) < len(data):
            failed += 1
            continue
        samples.append(_powerlaws(flops, np.exp(np.array(xs)), flops_per_param_token))
    intervals = {}
    if samples:
        s = np.array(samples)
        for j, key in enumerate(("a", "b", "n_coeff", "d_coeff")):
            intervals[key] = interval(s[:, j], ci)
    return Approach2Fit(minima, a, b, kn, kd, intervals, n_bootstrap, failed)
