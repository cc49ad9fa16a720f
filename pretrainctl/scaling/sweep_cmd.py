"""``pretrainctl scaling sweep budgets=[1e13,3e13,1e14] sizes_per_budget=4 [train overrides ...]``.

Expands into an IsoFLOP grid: for each budget C, ``sizes_per_budget`` consecutive shapes of the shape
rule (``accounting.py``) centred in log N on the law's N_opt(C) (or the explicit ``widths``), each
trained with ``scaling=flops scaling.flops=C``. The runs execute one after another *in this process*
through ``train.run_train`` (the local launcher's behaviour; no subprocess per run), each as a normal
run directory ``<sweep>/C<budget>-d<d_model>`` with a ``scaling.json`` ({budget, shape, law}) beside its
summary.json, which ``scaling fit`` reads. The sweep ends with the sweep table and ``sweep.json``.

On a cluster, ``dry_run=true`` prints one ``pretrainctl train ... hydra.run.dir=<sweep>/<point>``
line per grid point (a point is a zipped (d_model, n_layers, n_heads) triple, which Hydra's basic sweeper
cannot express as a product of axes); submit them as a job array, or per size run
``pretrainctl train --multirun hydra/launcher=submitit_slurm scaling=flops scaling.flops=C1,C2,C3 <shape>``
(the budgets are a plain axis) to send each point to SLURM. Runs made that way carry no scaling.json:
write {"budget": C} into each yourself, or fit them untagged (``scaling fit`` then groups runs whose
train_flops agree within 5% into one IsoFLOP budget).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from omegaconf import DictConfig, ListConfig
from rich.console import Console

from pretrainctl.errors import UserError
from pretrainctl.runs import RunDir, collect, write_json
from pretrainctl.scaling.accounting import Shape, SizeFacts, arch_overrides, load_law
from pretrainctl.scaling.plan_cmd import Ladder, candidates, positive
from pretrainctl.sweep import sweep_table

console = Console(width=None if sys.stdout.isatty() else 150)
# Keys of conf/scaling_sweep.yaml that are not train settings (they are not passed to the runs).
SWEEP_KEYS = {
    "budgets", "sizes_per_budget", "law", "convention", "vocab_size", "width_multiple", "max_width",
    "aspect", "head_dim", "widths", "min_steps", "dry_run",
}  # fmt: skip


def compose_train(overrides: list[str]) -> DictConfig:
    """The train config with ``overrides``, inside a running Hydra app or standalone (tests)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return compose(config_name="train", overrides=overrides)
    from pretrainctl.cli import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def train_overrides(overrides: list[str]) -> list[str]:
    """The user's overrides minus sweep settings and Hydra's own."""
    keep = []
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if key in SWEEP_KEYS or key.startswith("hydra.") or key.startswith("hydra/"):
            continue
        if key in ("scaling", "trainer.max_steps") or key.startswith("scaling."):
            raise UserError(
                f"{o} conflicts with the sweep: each run's length comes from scaling.flops=<budget>."
            )
        keep.append(o)
    return keep


def budgets_of(cfg: DictConfig) -> list[float]:
    budgets = cfg.get("budgets")
    if isinstance(budgets, int | float):
        budgets = [budgets]
    if not isinstance(budgets, list | ListConfig) or not budgets:
        raise UserError("budgets must be a list of FLOP budgets, e.g. budgets=[1e13,3e13,1e14].")
    if any(not isinstance(b, int | float) or b <= 0 for b in budgets):
        raise UserError(f"budgets must be positive numbers; got {list(budgets)}.")
    return sorted(float(b) for b in budgets)


def grid(cfg: DictConfig) -> list[tuple[float, SizeFacts]]:
    """(budget, size) points: sizes that would train fewer than ``min_steps`` steps are dropped."""
    law, _ = load_law(str(cfg.law))
    sizes = Ladder(cfg, "chinchilla")  # the training plan counts FLOPs with the architecture itself
    n = int(positive(cfg, "sizes_per_budget"))
    tokens_per_step = cfg.data.batch_size * cfg.data.seq_len * cfg.trainer.accumulate_grad_batches
    points = []
    for c in budgets_of(cfg):
        chosen = sizes.all() if cfg.get("widths") else candidates(sizes, law, c, n)[0]
        for s in chosen:
            if c / (s.flops_per_token * tokens_per_step) >= int(cfg.min_steps):
                points.append((c, s))
        if sum(1 for b, _ in points if b == c) < min(3, len(chosen)):
            raise UserError(
                f"budget {c:.3g} leaves fewer than 3 model sizes with at least min_steps={cfg.min_steps} "
                f"steps of {tokens_per_step:,} tokens; raise the budget or lower data.batch_size/seq_len."
            )
    return points


def run_name(budget: float, shape: Shape) -> str:
    return f"C{budget:.2e}-d{shape.d_model}".replace("+", "")


def point_overrides(cfg: DictConfig, user: list[str], budget: float, size: SizeFacts) -> list[str]:
    """The train overrides of one grid point: the user's, the shape's, and the FLOP budget."""
    return [*user, *arch_overrides(cfg.arch, size.shape), "scaling=flops", f"scaling.flops={budget:g}"]


def run_sweep(cfg: DictConfig, sweep_dir: Path, overrides: list[str]) -> list[dict]:
    user = train_overrides(overrides)
    points = grid(cfg)
    console.print(f"IsoFLOP sweep: {len(points)} runs into {sweep_dir}")
    for c, s in points:
        console.print(
            f"  C={c:.3g}  d_model={s.shape.d_model} n_layers={s.shape.n_layers} n_heads={s.shape.n_heads}  "
            f"N={s.params_non_embedding:,} (non-embedding)  tokens={c / s.flops_per_token:.3g}"
        )
    commands = {(c, s.shape): point_overrides(cfg, user, c, s) for c, s in points}
    if cfg.dry_run:
        for (c, shape), point in commands.items():
            console.print(
                f"pretrainctl train {' '.join(point)} hydra.run.dir={sweep_dir / run_name(c, shape)}"
            )
        return []
    t0 = time.perf_counter()
    for i, (c, s) in enumerate(points):
        run = RunDir(sweep_dir / run_name(c, s.shape))
        if (run.read_summary() or {}).get("status") == "completed":
            console.print(f"[{i + 1}/{len(points)}] {run.path} already done; skipped")
            continue
        point = commands[(c, s.shape)]
        console.rule(f"[{i + 1}/{len(points)}] C={c:.3g} d_model={s.shape.d_model}")
        write_json(
            run.path / "scaling.json", {"budget": c, "shape": s.as_dict()["shape"], "law": str(cfg.law)}
        )
        from pretrainctl.train import run_train  # heavy import, only when training

        summary = run_train(compose_train(point), run.path, point)
        if summary["status"] == "interrupted":  # Ctrl-C / SIGTERM stops the sweep, not just this run
            console.print(f"[yellow]sweep stopped at {run.path}; finished runs are kept[/yellow]")
            break
    rows = collect([sweep_dir])
    console.print(
        sweep_table(rows, f"IsoFLOP sweep {sweep_dir} ({len(rows)} runs, {time.perf_counter() - t0:.0f} s)")
    )
    write_json(sweep_dir / "sweep.json", rows)
    console.print(f"next: pretrainctl scaling fit runs={sweep_dir}")
    return rows


def hydra_task(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    sweep_dir = Path(hc.runtime.output_dir)
    try:
        run_sweep(cfg, sweep_dir, list(hc.overrides.task))
    except UserError:
        if sweep_dir.is_dir() and not any(sweep_dir.iterdir()):
            sweep_dir.rmdir()
        raise
