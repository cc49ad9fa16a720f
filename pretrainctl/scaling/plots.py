"""PNG plots of scaling-law fits: IsoFLOP curves with fitted parabolas and minima, compute-optimal
allocation, fitted law vs data, and residuals (after Hoffmann et al., 2022, Figures 3-4, and
Besiroglu et al., 2024).

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot, no global backend
switch), so plotting works headless and does not disturb a caller's matplotlib state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from .fit_common import RunPoint, as_points
from .fit_isoflop import Approach2Fit
from .fit_parametric import Approach3Fit


def _figure(width: float = 6.4, height: float = 4.8) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def plot_isoflop(points: Sequence[RunPoint], fit2: Approach2Fit, path: Path) -> Path:
    """Loss vs N per IsoFLOP budget (log x), the fitted parabola in ln N and its minimum."""
    fig, ax = _figure()
    cmap = colormaps["viridis"]
    budgets = [m.flops for m in fit2.minima]
    norm = LogNorm(min(budgets), max(budgets) * 1.0001)
    # Each run goes to the budget nearest its label (or its flops) in log space, as the fit grouped it.
    logc = np.log(budgets)
    owner = [int(np.argmin(np.abs(logc - np.log(p.budget or p.flops)))) for p in points]
    for i, m in enumerate(fit2.minima):
        color = cmap(norm(m.flops))
        near = [p for p, o in zip(points, owner) if o == i]
        if near:
            ax.scatter([p.params for p in near], [p.loss for p in near], color=color, s=18)
            lo, hi = min(p.params for p in near), max(p.params for p in near)
        else:
            lo, hi = m.n_opt / 4, m.n_opt * 4
        x = np.linspace(np.log(min(lo, m.n_opt)) - 0.2, np.log(max(hi, m.n_opt)) + 0.2, 100)
        ax.plot(np.exp(x), np.polyval(m.parabola, x), color=color, lw=1.2, label=f"C={m.flops:.2g}")
        ax.scatter([m.n_opt], [m.loss_opt], marker="*", s=140, color=color, edgecolor="black", zorder=3)
    ax.set_xscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel("loss")
    ax.set_title(f"IsoFLOP curves (Approach 2): N_opt ∝ C^{fit2.a:.3f}")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def plot_allocation(fit2: Approach2Fit | None, fit3: Approach3Fit | None, path: Path) -> Path:
    """Compute-optimal N and D against C: Approach 2 minima and power laws, Approach 3 closed form."""
    fig, ax = _figure()
    cs: list[float] = [m.flops for m in fit2.minima] if fit2 else [fit3.reference_flops] if fit3 else []
    grid = np.geomspace(min(cs) / 3, max(cs) * 30, 50)
    if fit2 is not None:
        ax.scatter(cs, [m.n_opt for m in fit2.minima], color="C0", label="N_opt per budget (A2)")
        ax.scatter(cs, [m.d_opt for m in fit2.minima], color="C1", label="D_opt per budget (A2)")
        ax.plot(grid, fit2.n_opt(grid), color="C0", label=f"A2: N ∝ C^{fit2.a:.3f}")
        ax.plot(grid, fit2.d_opt(grid), color="C1", label=f"A2: D ∝ C^{fit2.b:.3f}")
    if fit3 is not None:
        n, d = fit3.law.optimal_allocation(grid, fit3.flops_per_param_token)
        ax.plot(grid, n, "--", color="C0", label=f"A3: N ∝ C^{fit3.law.a:.3f}")
        ax.plot(grid, d, "--", color="C1", label=f"A3: D ∝ C^{fit3.law.b:.3f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training FLOPs C")
    ax.set_ylabel("parameters / tokens")
    ax.set_title("Compute-optimal allocation")
    ax.legend(fontsize=7)
    return _save(fig, path)


def _predicted(points: Sequence[RunPoint], fit3: Approach3Fit) -> np.ndarray:
    return np.asarray(fit3.law.loss([p.params for p in points], [p.tokens for p in points]), dtype=float)


def plot_law_vs_data(points: Sequence[RunPoint], fit3: Approach3Fit, path: Path) -> Path:
    """Predicted vs observed loss with the y = x line, coloured by training FLOPs."""
    fig, ax = _figure(5.2, 4.8)
    obs = np.array([p.loss for p in points])
    pred = _predicted(points, fit3)
    sc = ax.scatter(obs, pred, c=[p.flops for p in points], norm=LogNorm(), cmap="viridis", s=20)
    lim = [min(obs.min(), pred.min()), max(obs.max(), pred.max())]
    ax.plot(lim, lim, color="gray", lw=1, ls="--")
    fig.colorbar(sc, ax=ax, label="training FLOPs")
    law = fit3.law
    ax.set_title(f"E={law.E:.3g} A={law.A:.3g} B={law.B:.3g} α={law.alpha:.3f} β={law.beta:.3f}", fontsize=9)
    ax.set_xlabel("observed loss")
    ax.set_ylabel("predicted loss (Approach 3)")
    return _save(fig, path)


def plot_residuals(points: Sequence[RunPoint], fit3: Approach3Fit, path: Path) -> Path:
    """Relative residual (predicted / observed - 1) against N, coloured by training FLOPs."""
    fig, ax = _figure()
    rel = _predicted(points, fit3) / np.array([p.loss for p in points]) - 1.0
    sc = ax.scatter(
        [p.params for p in points],
        100 * rel,
        c=[p.flops for p in points],
        norm=LogNorm(),
        cmap="viridis",
        s=20,
    )
    ax.axhline(0.0, color="gray", lw=1)
    fig.colorbar(sc, ax=ax, label="training FLOPs")
    ax.set_xscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel("residual, % of observed loss")
    ax.set_title(f"Approach 3 residuals (max |r| = {100 * np.abs(rel).max():.2f}%)")
    return _save(fig, path)


def save_fit_plots(
    points: Sequence[RunPoint | Mapping[str, Any]],
    fit2: Approach2Fit | None,
    fit3: Approach3Fit | None,
    out_dir: str | Path,
) -> list[Path]:
    """Write the PNGs that apply (isoflop.png and allocation.png need fit2; law_vs_data.png,
    residuals.png need fit3) into ``out_dir`` (created) and return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pts = as_points(points)
    paths: list[Path] = []
    if fit2 is not None:
        paths.append(plot_isoflop(pts, fit2, out / "isoflop.png"))
    if fit2 is not None or fit3 is not None:
        paths.append(plot_allocation(fit2, fit3, out / "allocation.png"))
    if fit3 is not None:
        paths.append(plot_law_vs_data(pts, fit3, out / "law_vs_data.png"))
        paths.append(plot_residuals(pts, fit3, out / "residuals.png"))
    return paths
