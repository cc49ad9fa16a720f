"""``pretrainctl scaling fit runs=<sweep dir or glob> [law=chinchilla|data_constrained|mixture]
[loss=val_loss|val_bpb] [heldout=<run dir>] [out=<dir>]``.

Reads finished runs through ``runs.collect`` (summary.json, plus the optional scaling.json that
``scaling sweep`` writes: budget, unique_tokens, mix_ratio) and fits:

- ``chinchilla``: Approach 3 (L = E + A/N^alpha + B/D^beta, Huber on log-loss, L-BFGS from a grid,
  bootstrap intervals) and, when the runs form >= 2 IsoFLOP budgets of >= 3 sizes, Approach 2.
  N is the non-embedding parameter count, D the training tokens.
- ``data_constrained`` (Muennighoff et al.): needs ``unique_tokens`` in each run's scaling.json.
- ``mixture`` (continued pretraining): needs ``mix_ratio`` in each run's scaling.json.

Writes ``fit.json`` and the PNG plots into ``out`` (default: the first runs directory). The compute
allocation C = k N D uses k = the runs' median train_flops / (N D) unless ``flops_per_param_token`` is
set: with small models the output head and attention make k well above 6.
"""

from __future__ import annotations

import glob
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, ListConfig
from rich.console import Console
from rich.table import Table

from pretrainctl.errors import UserError
from pretrainctl.runs import collect, read_json, write_json
from pretrainctl.scaling.fit import (
    LAWS,
    RunPoint,
    fit_approach2,
    fit_approach3,
    fit_law,
    group_by_budget,
    heldout_error,
)
from pretrainctl.scaling.plots import save_fit_plots

console = Console(width=None if sys.stdout.isatty() else 150)
FIT_LAWS = tuple(law for law in LAWS if law != "isoflop")  # isoflop (Approach 2) runs with chinchilla
TAG_KEYS = ("budget", "unique_tokens", "mix_ratio")


def expand(spec: Any, what: str) -> list[Path]:
    """A path, a glob, or a list of them -> existing directories."""
    items = list(spec) if isinstance(spec, list | ListConfig) else [spec]
    if not items or items == [None]:
        raise UserError(
            f"{what} is required, e.g. {what}=runs/scaling-<stamp> (a sweep directory or a glob)."
        )
    paths: list[Path] = []
    for item in items:
        found = sorted(glob.glob(str(item))) or ([str(item)] if Path(str(item)).exists() else [])
        if not found:
            raise UserError(f"{what}={item} matches no file or directory.")
        paths += [Path(p) for p in found]
    return paths


def load_points(paths: list[Path], loss: str, exclude: set[str] = frozenset()) -> list[RunPoint]:
    """Completed runs under ``paths`` as fit points; each run's scaling.json tags are merged in."""
    points = []
    for row in collect(paths):
        if row["run"] in exclude or row.get("status") != "completed":
            continue
        tags = Path(row["run"]) / "scaling.json"
        if tags.is_file():
            row.update({k: v for k, v in read_json(tags).items() if k in TAG_KEYS})
        if row.get(loss) is None:
            raise UserError(
                f"run {row['run']} has no {loss} in its summary.json; choose loss=val_loss or val_bpb."
            )
        points.append(RunPoint.from_summary(row, name=row["run"], loss_key=loss))
    return points


def fmt_interval(value: float, interval: tuple[float, float] | list[float] | None) -> str:
    if interval is None:
        return f"{value:.4g}"
    return f"{value:.4g}  [{interval[0]:.4g}, {interval[1]:.4g}]"


def fit_chinchilla(points: list[RunPoint], cfg: DictConfig, k: float) -> tuple[Any, Any, list[str]]:
    notes = []
    fit3 = fit_approach3(
        points,
        n_bootstrap=int(cfg.n_bootstrap),
        seed=int(cfg.seed),
        ci=float(cfg.ci),
        flops_per_param_token=k,
    )
    fit2 = None
    budgets = group_by_budget(points) if all(p.budget is not None for p in points) else []
    if len(budgets) >= 2 and all(len({p.params for p in g}) >= 3 for _, g in budgets):
        try:
            fit2 = fit_approach2(
                points, n_bootstrap=int(cfg.n_bootstrap), seed=int(cfg.seed), ci=float(cfg.ci),
                flops_per_param_token=k,
            )  # fmt: skip
        except ValueError as exc:
            notes.append(f"Approach 2 skipped: {exc}")
        for m in fit2.minima if fit2 else []:
            if not m.vertex_in_range:
                notes.append(
                    f"Approach 2: the minimum at budget {m.flops:.3g} (N = {m.n_opt:.3g}) lies outside the "
                    "sampled sizes, so it is extrapolated; sample sizes on both sides of it."
                )
    else:
        notes.append("Approach 2 needs >= 2 IsoFLOP budgets (scaling.json) with >= 3 sizes each; skipped.")
    return fit2, fit3, notes


def coefficient_table(fit2: Any, fit3: Any, k: float) -> Table:
    table = Table(title=f"scaling-law fit (95% bootstrap intervals; C = {k:.3g} N D)", title_justify="left")
    for col in ("quantity", "Approach 3", "Approach 2"):
        table.add_column(col, justify="left" if col == "quantity" else "right")
    est, iv = fit3.estimates(), fit3.intervals
    for key in ("E", "A", "B", "alpha", "beta"):
        table.add_row(key, fmt_interval(est[key], iv.get(key)), "")
    for key, label in (("a", "a  (N_opt ~ C^a)"), ("b", "b  (D_opt ~ C^b)")):
        two = fmt_interval(getattr(fit2, key), fit2.intervals.get(key)) if fit2 else "n/a"
        table.add_row(label, fmt_interval(est[key], iv.get(key)), two)
    c = fit3.reference_flops
    n2 = float(fit2.n_opt(c)) if fit2 else math.nan
    d2 = float(fit2.d_opt(c)) if fit2 else math.nan
    table.add_row(f"N_opt at C={c:.3g}", fmt_interval(est["n_opt"], iv.get("n_opt")), f"{n2:.4g}")
    table.add_row(f"D_opt at C={c:.3g}", fmt_interval(est["d_opt"], iv.get("d_opt")), f"{d2:.4g}")
    table.add_row(
        "tokens per parameter",
        fmt_interval(est["tokens_per_param"], iv.get("tokens_per_param")),
        f"{d2 / n2:.4g}",
    )
    return table


def run_fit(cfg: DictConfig) -> dict:
    law = str(cfg.law)
    if law not in FIT_LAWS:
        raise UserError(f"unknown law {law!r}; choose one of: {', '.join(FIT_LAWS)}.")
    if cfg.loss not in ("val_loss", "val_bpb"):
        raise UserError(f"loss={cfg.loss} is not a summary metric; choose val_loss or val_bpb.")
    paths = expand(cfg.runs, "runs")
    heldout_paths = expand(cfg.heldout, "heldout") if cfg.get("heldout") else []
    held = load_points(heldout_paths, str(cfg.loss)) if heldout_paths else []
    points = load_points(paths, str(cfg.loss), exclude={p.name for p in held})
    if not points:
        raise UserError(f"runs={cfg.runs} holds no completed run (no summary.json with status completed).")
    if cfg.get("heldout") and not held:
        raise UserError(f"heldout={cfg.heldout} holds no completed run.")
    k = cfg.get("flops_per_param_token") or float(
        np.median([p.flops / (p.params * p.tokens) for p in points])
    )
    out = Path(cfg.out) if cfg.get("out") else paths[0] if paths[0].is_dir() else paths[0].parent
    result: dict[str, Any] = {"law": law, "loss": str(cfg.loss), "flops_per_param_token": k,
                              "runs": [p.__dict__ for p in points]}  # fmt: skip
    fit2 = fit3 = None
    try:
        if law == "chinchilla":
            fit2, fit3, notes = fit_chinchilla(points, cfg, k)
            result |= {
                "approach2": fit2.to_dict() if fit2 else None,
                "approach3": fit3.to_dict(),
                "notes": notes,
            }
            console.print(coefficient_table(fit2, fit3, k))
            for note in notes:
                console.print(f"[yellow]{note}[/yellow]")
            model = fit3
        else:
            model = fit_law(law, points)
            result[law] = model.to_dict()
            console.print_json(data=model.to_dict())
        if held:
            report = heldout_error(model, held).to_dict()
            result["heldout"] = report
            for name, obs, pred, rel in zip(
                report["names"], report["observed"], report["predicted"], report["rel_error"]
            ):
                console.print(
                    f"held-out {name}: observed {obs:.4f}, predicted {pred:.4f}, "
                    f"relative error {100 * rel:+.2f}%"
                )
    except ValueError as exc:  # the fitting library's messages name what the data lacks
        raise UserError(f"cannot fit law={law} to {len(points)} runs: {exc}.") from None
    write_json(out / "fit.json", result)
    plots = save_fit_plots(points, fit2, fit3, out) if law == "chinchilla" else []
    console.print(f"wrote {out / 'fit.json'}" + "".join(f", {p.name}" for p in plots))
    return result


def hydra_task(cfg: DictConfig) -> None:
    run_fit(cfg)
