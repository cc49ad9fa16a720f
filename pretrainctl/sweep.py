"""The table that ends a ``--multirun`` sweep: one row per run, read from the runs' summary.json."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from pretrainctl.runs import collect, write_json


def _fmt(value: Any, pattern: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return pattern.format(value)


def sweep_table(rows: list[dict], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    # Show what differs between the runs; the overrides they share go in the caption.
    sets = [set(r["overrides"].split()) for r in rows]
    common = set.intersection(*sets) if sets else set()
    if common:
        table.caption = "all runs: " + " ".join(sorted(common))
    for column in ("run", "overrides", "status", "val_bpb", "val_loss", "tokens", "tokens/s"):
        table.add_column(column, justify="right" if column not in ("run", "overrides", "status") else "left")
    for row in sorted(rows, key=lambda r: (r.get("val_bpb") is None, r.get("val_bpb") or 0)):
        table.add_row(
            Path(row["run"]).name,
            " ".join(o for o in row["overrides"].split() if o not in common),
            row.get("status", "?"),
            "not defined" if row.get("bpb_note") else _fmt(row.get("val_bpb"), "{:.4f}"),
            _fmt(row.get("val_loss"), "{:.4f}"),
            _fmt(row.get("tokens"), "{:,}"),
            _fmt(row.get("tokens_per_s"), "{:,.0f}"),
        )
    return table


class SweepTable(Callback):
    """Hydra callback: after the last job, print the results table and write sweep.json."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = collect([sweep_dir])
        Console().print(sweep_table(rows, f"sweep {sweep_dir} ({len(rows)} runs)"))
        write_json(sweep_dir / "sweep.json", rows)
