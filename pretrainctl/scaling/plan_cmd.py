"""``pretrainctl scaling plan budget=1e17 [arch=...] [law=hoffmann|besiroglu|<fit.json>]``.

Candidate model sizes for a FLOP budget, built by the shape rule of ``accounting.py`` (each model is
built through ``build.build_model`` on the meta device, so parameters and FLOPs/token come from the
architecture), with tokens = budget / FLOPs-per-token, tokens per parameter, and the loss the chosen
law predicts at (non-embedding N, D). The row with the lowest predicted loss is the compute-optimal
choice among buildable shapes; the law's continuous optimum is printed under the table.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from pretrainctl.errors import UserError
from pretrainctl.runs import write_json
from pretrainctl.scaling.accounting import (
    Shape,
    SizeFacts,
    load_law,
    nearest_window,
    size_facts,
    vocab_size_of,
    width_ladder,
)
from pretrainctl.scaling.laws import ChinchillaLaw

console = Console(width=None if sys.stdout.isatty() else 150)


def positive(cfg: DictConfig, key: str) -> float:
    value = cfg.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
        raise UserError(f"{key} must be a positive number (e.g. {key}=1e17); got {value!r}.")
    return float(value)


class Ladder:
    """The shapes of the rule, from ``width_multiple`` up to ``max_width`` (or the explicit ``widths``),
    built lazily: N grows with width, so a window around N_opt needs only a bisection's worth of models."""

    def __init__(self, cfg: DictConfig, convention: str) -> None:
        if cfg.get("widths"):
            self.widths = sorted(int(w) for w in cfg.widths)
        else:
            self.widths = width_ladder(int(cfg.max_width), int(cfg.width_multiple))
        self.cfg, self.convention = cfg, convention
        self.vocab, self.seq_len = vocab_size_of(cfg), int(cfg.data.seq_len)
        self._facts: dict[int, SizeFacts] = {}

    def __len__(self) -> int:
        return len(self.widths)

    def __getitem__(self, i: int) -> SizeFacts:
        w = self.widths[i]
        if w not in self._facts:
            shape = Shape.from_width(w, float(self.cfg.aspect), int(self.cfg.head_dim))
            self._facts[w] = size_facts(self.cfg, shape, self.vocab, self.seq_len, self.convention)
        return self._facts[w]

    def all(self) -> list[SizeFacts]:
        return [self[i] for i in range(len(self))]

    def window(self, n_opt: float, n: int) -> list[SizeFacts]:
        """``n`` consecutive sizes whose log-centre (non-embedding N) is nearest ``n_opt``."""
        lo, hi = 0, len(self) - 1
        while lo < hi:  # first index with N >= n_opt
            mid = (lo + hi) // 2
            lo, hi = (mid + 1, hi) if self[mid].params_non_embedding < n_opt else (lo, mid)
        first, last = max(0, lo - n), min(len(self), lo + n)
        near = [self[i] for i in range(first, last)]
        start = nearest_window([float(s.params_non_embedding) for s in near], n_opt, n)
        return near[start : start + n]


def candidates(
    sizes: Ladder, law: ChinchillaLaw, budget: float, n: int, k: float = 6.0
) -> tuple[list[SizeFacts], float]:
    """``n`` consecutive sizes centred (in log N) on the law's optimum N_opt(budget), and N_opt."""
    n_opt = float(law.optimal_allocation(budget, k)[0])
    return sizes.window(n_opt, n), n_opt


def plan_rows(sizes: list[SizeFacts], law: ChinchillaLaw, budget: float) -> list[dict]:
    rows = []
    for s in sizes:
        tokens = budget / s.flops_per_token
        rows.append(
            {
                **s.as_dict(),
                "tokens": tokens,
                "tokens_per_param": tokens / s.params_non_embedding,
                "predicted_loss": float(law.loss(s.params_non_embedding, tokens)),
            }
        )
    best = min(range(len(rows)), key=lambda i: rows[i]["predicted_loss"]) if rows else None
    for i, row in enumerate(rows):
        row["optimal"] = i == best
    return rows


def plan_table(rows: list[dict], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("d_model", "layers", "heads", "params total", "non-embedding", "FLOPs/token", "tokens",
                "tokens/param", "pred. loss", ""):  # fmt: skip
        table.add_column(col, justify="right")
    for r in rows:
        sh = r["shape"]
        table.add_row(
            str(sh["d_model"]), str(sh["n_layers"]), str(sh["n_heads"]), f"{r['params_total']:,}",
            f"{r['params_non_embedding']:,}", f"{r['flops_per_token']:,}", f"{r['tokens']:.3g}",
            f"{r['tokens_per_param']:.1f}", f"{r['predicted_loss']:.4f}", "◀ optimal" if r["optimal"] else "",
            style="bold" if r["optimal"] else None,
        )  # fmt: skip
    return table


def run_plan(cfg: DictConfig) -> dict:
    budget = positive(cfg, "budget")
    law, law_name = load_law(str(cfg.law))
    sizes = Ladder(cfg, str(cfg.convention))
    chosen, n_opt = candidates(sizes, law, budget, int(cfg.num_sizes))
    rows = plan_rows(chosen, law, budget)
    d_opt = budget / (6.0 * n_opt)
    title = (
        f"scaling plan: C = {budget:.3g} FLOPs ({cfg.convention} convention), law {law_name}, "
        f"vocabulary {vocab_size_of(cfg):,}, seq_len {cfg.data.seq_len}"
    )
    console.print(plan_table(rows, title))
    console.print(
        f"law optimum (C = 6 N D, N non-embedding): N_opt = {n_opt:.3g}, D_opt = {d_opt:.3g} tokens, "
        f"{d_opt / n_opt:.1f} tokens per parameter; predicted loss {float(law.loss(n_opt, d_opt)):.4f}"
    )
    if rows and (rows[0]["optimal"] or rows[-1]["optimal"]) and len(rows) > 1:
        console.print(
            "[yellow]the best candidate is at the edge of the table: widen max_width/num_sizes[/yellow]"
        )
    result = {
        "budget": budget, "law": law_name, "coefficients": law.to_dict(), "convention": str(cfg.convention),
        "n_opt": n_opt, "d_opt": d_opt, "tokens_per_param": d_opt / n_opt, "candidates": rows,
    }  # fmt: skip
    if cfg.get("out"):
        write_json(Path(cfg.out), result)
        console.print(f"wrote {cfg.out}")
    if not math.isfinite(n_opt):
        raise UserError(f"the law {law_name} has no finite optimum at budget {budget:.3g}.")
    return result


def hydra_task(cfg: DictConfig) -> None:
    run_plan(cfg)
