"""Evidence for the objectives issue (ar / mtp / distill), through the CLI on the default data (stdlib,
default 4096-token BPE).

(mtp)     ``objective=ar`` and ``objective=mtp`` (depth 1, weight 0.3) with ``arch=dense`` and
          ``arch=moe_mla``, otherwise identical: the training loss falls for both objectives on both
          architectures, and the MTP runs' main-head loss (``ntp_loss``) and validation bpb compare
          with the AR runs'.
(distill) a teacher (dense, d 192, 4 layers) trained first; then one student (dense, d 96, 2 layers)
          trained from scratch and the same student distilled from the teacher (the defaults:
          forward KL, T=1, alpha=0.5), the same steps, data order and seed. Prints each run's
          validation bits per byte on the whole validation split.

Sizes are far below the presets so the whole script takes minutes on a loaded 2-core CPU. Run
directories go under $PRETRAINCTL_RUNS (default /tmp/objective_ev); a run whose summary.json exists
is reused, not retrained. Results: README.md, section "Objectives".

    nice -n 5 flock /tmp/pretrainctl-heavy.lock \
        .venv/bin/python bench/objective_evidence.py [--part mtp|distill|all]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cli_runs import metrics, summary, train_all  # bench/cli_runs.py (run as a script)

RUNS = Path(os.environ.setdefault("PRETRAINCTL_RUNS", "/tmp/objective_ev"))

DATA = ["data.seq_len=128", "data.batch_size=16"]
# Only a final validation, on the whole validation split.
LOG = ["trainer.val_check_interval=100000", "trainer.limit_val_batches=null", "log_every=10"]

MTP_SIZE = ["arch.d_model=96", "arch.n_layers=2", "arch.n_heads=4"]
MTP_STEPS = 150

TEACHER = ["arch=dense", "arch.d_model=192", "arch.n_layers=4", "arch.n_heads=4", "trainer.max_steps=400"]
STUDENT = ["arch=dense", "arch.d_model=96", "arch.n_layers=2", "arch.n_heads=4", "trainer.max_steps=200"]


def mean_of(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if key in r]
    return sum(values) / len(values)


def part_mtp(n_jobs: int) -> None:
    common = [*MTP_SIZE, *DATA, *LOG, f"trainer.max_steps={MTP_STEPS}"]
    jobs = {
        f"{objective}_{arch}": [f"arch={arch}", f"objective={objective}", *common]
        for arch in ("dense", "moe_mla")
        for objective in ("ar", "mtp")
    }
    runs = train_all(jobs, n_jobs)
    for name, run in runs.items():
        rows = [r for r in metrics(run) if "train_loss" in r]
        first, last = rows[:2], rows[-2:]  # logged every 10 steps: steps 10-20 and the last 20
        s = summary(run)
        line = (
            f"(mtp) {name:12s} train_loss {mean_of(first, 'train_loss'):.3f} (steps 10-20) -> "
            f"{mean_of(last, 'train_loss'):.3f} (last 20)"
        )
        if "ntp_loss" in rows[-1]:
            line += (
                f"  ntp_loss {mean_of(first, 'ntp_loss'):.3f} -> {mean_of(last, 'ntp_loss'):.3f}"
                f"  mtp_loss_1 {mean_of(first, 'mtp_loss_1'):.3f} -> {mean_of(last, 'mtp_loss_1'):.3f}"
            )
        print(f"{line}  val_bpb={s['val_bpb']:.4f}  wall={s['wall_s']:.0f}s", flush=True)


def part_distill(n_jobs: int) -> None:
    teacher = train_all({"teacher": [*TEACHER, *DATA, *LOG]}, 1)["teacher"]
    distill = ["objective=distill", f"objective.teacher={teacher}"]
    jobs = {
        "student_scratch": [*STUDENT, *DATA, *LOG],
        "student_distill": [*STUDENT, *DATA, *LOG, *distill],
    }
    runs = {"teacher": teacher, **train_all(jobs, n_jobs)}
    for name, run in runs.items():
        s = summary(run)
        print(
            f"(distill) {name:18s} params={s['params_total']:,} steps={s['step']} tokens={s['tokens']:,} "
            f"val_loss={s['val_loss']:.4f} val_bpb={s['val_bpb']:.4f} wall={s['wall_s']:.0f}s",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["mtp", "distill", "all"], default="all")
    parser.add_argument("--jobs", type=int, default=2, help="training runs side by side")
    args = parser.parse_args()
    if args.part in ("distill", "all"):
        part_distill(args.jobs)
    if args.part in ("mtp", "all"):
        part_mtp(args.jobs)


if __name__ == "__main__":
    main()
