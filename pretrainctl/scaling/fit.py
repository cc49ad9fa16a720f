"""Fitting scaling laws to finished runs (numbers from ``summary.json``; no training code).

The public API of the fits; implementations live in ``fit_isoflop.py`` (Approach 2), ``fit_parametric.py``
(Approach 3, data-constrained and mixture laws) and ``fit_common.py`` (run records, Huber loss).

- Approach 2 and 3 of Hoffmann et al. (2022), "Training Compute-Optimal Large Language Models", with the
  fitting practice of Besiroglu et al. (2024), "Chinchilla Scaling: A replication attempt".
- The data-constrained law of Muennighoff et al. (2023), "Scaling Data-Constrained Language Models".
- A mixture-ratio law for continued pretraining (Que et al., 2024, "D-CPT Law").

Inputs per run (``RunPoint`` or dicts, see ``as_points``): chinchilla and isoflop need params, tokens,
flops, loss; data_constrained also unique_tokens; mixture needs mix_ratio and loss.
Every interval is a percentile bootstrap (default 95%, seeded, configurable number of resamples).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .fit_common import RunPoint, as_points, group_by_budget
from .fit_isoflop import Approach2Fit, BudgetMinimum, fit_approach2
from .fit_parametric import (
    Approach3Fit,
    DataConstrainedFit,
    MixtureFit,
    default_grid,
    fit_approach3,
    fit_data_constrained,
    fit_mixture,
)
from .laws import ChinchillaLaw, DataConstrainedLaw, FloatOrArray, MixtureLaw

__all__ = [
    "LAWS", "Approach2Fit", "Approach3Fit", "BudgetMinimum", "DataConstrainedFit", "HeldoutReport",
    "MixtureFit", "RunPoint", "as_points", "default_grid", "fit_approach2", "fit_approach3",
    "fit_data_constrained", "fit_law", "fit_mixture", "group_by_budget", "heldout_error", "predict",
]  # fmt: skip


LAWS = ("chinchilla", "isoflop", "data_constrained", "mixture")


def fit_law(
    name: str, points: Sequence[RunPoint | Mapping[str, Any]], **kwargs: Any
) -> Approach3Fit | Approach2Fit | DataConstrainedFit | MixtureFit:
    """Fit a law by name: chinchilla (Approach 3), isoflop (Approach 2), data_constrained, mixture.

    Inputs per run: chinchilla and isoflop need params, tokens, flops, loss; data_constrained also
    unique_tokens; mixture needs mix_ratio and loss. ``kwargs`` go to the fitting function.
    """
    fns: dict[str, Callable[..., Any]] = {
        "chinchilla": fit_approach3,
        "isoflop": fit_approach2,
        "data_constrained": fit_data_constrained,
        "mixture": fit_mixture,
    }
    if name not in fns:
        raise ValueError(f"unknown scaling law {name!r}; choose one of: {', '.join(LAWS)}")
    return fns[name](points, **kwargs)


AnyLaw = ChinchillaLaw | DataConstrainedLaw | MixtureLaw


def predict(
    law: AnyLaw | Any, N: ArrayLike, D: ArrayLike, unique_tokens: ArrayLike | None = None
) -> FloatOrArray:
    """Predicted loss at N parameters and D tokens (a fit result's ``.law`` is used if given a fit).
    The data-constrained law also needs ``unique_tokens``; a mixture law is not a function of N, D."""
    law = getattr(law, "law", law)
    if isinstance(law, DataConstrainedLaw):
        if unique_tokens is None:
            raise ValueError("predicting with the data_constrained law needs unique_tokens")
        return law.loss(N, D, unique_tokens)
    if isinstance(law, ChinchillaLaw):
        return law.loss(N, D)
    raise ValueError(f"predict(N, D) does not apply to {type(law).__name__}; call its .loss() directly")


@dataclass
class HeldoutReport:
    """Relative error (predicted / observed - 1) of a law on runs it was not fitted to."""

    names: list[str]
    observed: list[float]
    predicted: list[float]
    rel_error: list[float]
    max_abs_rel_error: float
    mean_abs_rel_error: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def heldout_error(law: AnyLaw | Any, points: Sequence[RunPoint | Mapping[str, Any]]) -> HeldoutReport:
    """Relative error of ``law`` (or a fit result) on held-out runs, e.g. a larger run left out of the fit."""
    law = getattr(law, "law", law)
    pts = as_points(points)
    if not pts:
        raise ValueError("no held-out runs to evaluate")
    obs = np.array([p.loss for p in pts])
    if isinstance(law, MixtureLaw):
        pred = np.asarray(law.loss([p.mix_ratio for p in pts]))  # type: ignore[misc]
    else:
        n, d = [p.params for p in pts], [p.tokens for p in pts]
        uniq = [p.unique_tokens for p in pts] if isinstance(law, DataConstrainedLaw) else None
        pred = np.asarray(predict(law, n, d, uniq))
    rel = pred / obs - 1.0
    return HeldoutReport(
        [p.name for p in pts],
        obs.tolist(),
        pred.tolist(),
        rel.tolist(),
        float(np.abs(rel).max()),
        float(np.abs(rel).mean()),
    )
