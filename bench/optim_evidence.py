"""Evidence for the optimizer issue, through the CLI on the default data and model.

(a) Muon vs AdamW: AdamW trained for N steps at 5 LRs, Muon for 0.8 N steps (its own cosine
    schedule over 0.8 N) at 3 Muon LRs (AdamW part of Muon at the default 3e-3); every run also keeps
    an EMA of its weights. The claim holds if the best Muon run's final val_bpb <= the best AdamW's.
(b) Weight averaging: last vs ema vs soup of the last k step checkpoints, evaluated by
    ``pretrainctl eval``, on the default run (300 steps, EMA 0.9, checkpoints 5 steps apart), on the
    AdamW 3e-3 run of (a) (the default config at N steps), on the Muon 0.02 run, and on a constant-LR
    run of 150 steps.

Each run is one ``pretrainctl train`` under the shared heavy-work lock; a run whose summary.json
exists is reused. ``report`` writes bench/results/optim_evidence.md and the curves PNG.

    nice -n 5 .venv/bin/python bench/optim_evidence.py run [--part a|b]
    .venv/bin/python bench/optim_evidence.py report
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

RUNS = Path(os.environ.setdefault("PRETRAINCTL_RUNS", "/tmp/optim-runs"))
OUT = Path(__file__).parent / "results"
# The heavy-work lock, unless the caller already holds it (PRETRAINCTL_LOCK_HELD=1).
LOCK = [] if os.environ.get("PRETRAINCTL_LOCK_HELD") else ["flock", "/tmp/pretrainctl-heavy.lock"]
N = 100  # AdamW steps; Muon gets 0.8 N. The default run's 300 did not fit the shared CPU budget 6 x over.
ADAMW_LRS = [3.75e-4, 7.5e-4, 1.5e-3, 3e-3, 6e-3]  # the low ones added as each came out best
MUON_LRS = [0.01, 0.02, 0.04]
COMMON = ["trainer.val_check_interval=25", "log_every=10", "ema.decay=0.999"]
RUNS_A = {
    **{f"adamw_lr{lr:g}": ["optim=adamw", f"optim.lr={lr}", f"trainer.max_steps={N}", *COMMON]
       for lr in ADAMW_LRS},
    **{f"muon_lr{lr:g}": ["optim=muon", f"optim.lr={lr}", f"trainer.max_steps={int(0.8 * N)}", *COMMON]
       for lr in MUON_LRS},
}  # fmt: skip
AVG = ["ema.decay=0.999", "checkpoint.every_n_steps=10"]
RUNS_A["adamw_lr0.003"] += AVG[1:]  # the default config at N steps: averaging evidence for free
RUNS_A["muon_lr0.02"] += AVG[1:]
# The default run itself (300 steps, cosine to 0.1x): its weights and val_bpb are those of plain
# `pretrainctl train` (EMA and step checkpoints do not change training). A short EMA (0.9: ~10 steps)
# and step checkpoints 5 apart, because the LR at the end of a decayed schedule is small and a long
# average lags the still-falling loss (the 100-step runs above showed that).
RUNS_B = {
    "default_avg": ["ema.decay=0.9", "checkpoint.every_n_steps=5"],
    # Constant LR (where averaging should help most), cut to 150 steps to fit the CPU budget.
    "constant_avg": [*AVG, "schedule=constant", "trainer.max_steps=150"],
}
AVERAGED = ["default_avg", "adamw_lr0.003", "muon_lr0.02", "constant_avg"]


def train(name: str, overrides: list[str]) -> None:
    if (RUNS / name / "summary.json").is_file():
        return
    env = {**os.environ, "PRETRAINCTL_STAMP": name}
    # threads=1: two runs side by side use the 2 cores without oversubscribing them
    cmd = [*LOCK, sys.executable, "-m", "pretrainctl.cli", "train", *overrides, "threads=1"]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env)


def evaluate(name: str, ckpt: str) -> dict:
    out = RUNS / name / "eval" / f"{ckpt}.json"
    if not out.is_file():
        cmd = [sys.executable, "-m", "pretrainctl.cli", "eval", f"run={RUNS / name}", f"ckpt={ckpt}"]
        subprocess.run(cmd, check=True)
    return json.loads(out.read_text())


def averaging(name: str) -> dict[str, float]:
    for k in (3, 5):
        subprocess.run(
            [sys.executable, "-m", "pretrainctl.cli", "checkpoint", "soup", f"run={RUNS / name}",
             f"k={k}", f"name=soup{k}"], check=True,
        )  # fmt: skip
    return {c: evaluate(name, c)["val_bpb"] for c in ("last", "ema", "soup3", "soup5")}


def metrics(name: str) -> list[dict]:
    path = RUNS / name / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []


def report() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = ["# Optimizer evidence (bench/optim_evidence.py)", ""]
    lines += [f"AdamW {N} steps vs Muon {int(0.8 * N)} steps, cosine schedule over each run's own length, "
              "default data/model/batch; val_bpb on the whole validation split.", "",
              "| run | steps | final val_bpb | EMA val_bpb | train s |", "|---|---|---|---|---|"]  # fmt: skip
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for name in RUNS_A:
        s = RUNS / name / "summary.json"
        if not s.is_file():
            continue
        summary = json.loads(s.read_text())
        ema = evaluate(name, "ema")["val_bpb"]
        lines.append(f"| {name} | {summary['step']} | {summary['val_bpb']:.4f} | {ema:.4f} | "
                     f"{summary['train_s']:.0f} |")  # fmt: skip
        m = metrics(name)
        style = "-" if name.startswith("muon") else "--"
        tr = [(r["step"], r["train_loss"]) for r in m if "train_loss" in r]
        va = [(r["step"], r["val_bpb"]) for r in m if "val_bpb" in r]
        ax1.plot(*zip(*tr), style, label=name)
        ax2.plot(*zip(*va), style + "o", label=name)
    ax1.set(xlabel="step", ylabel="train loss (nats/token)", title="training loss")
    ax2.set(xlabel="step", ylabel="val bits per byte", title="validation bpb")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(OUT / "optim_muon_vs_adamw.png", dpi=110)
    lines += ["", "Weight averaging (val_bpb, `pretrainctl eval`, whole validation split):", "",
              "| run | last | ema | soup of last 3 | soup of last 5 |", "|---|---|---|---|---|"]  # fmt: skip
    for name in AVERAGED:
        if (RUNS / name / "summary.json").is_file():
            r = averaging(name)
            cells = " | ".join(f"{r[c]:.4f}" for c in ("last", "ema", "soup3", "soup5"))
            lines.append(f"| {name} | {cells} |")
    (OUT / "optim_evidence.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["run", "report"])
    ap.add_argument("--part", default="all", choices=["a", "b", "all"])
    args = ap.parse_args()
    if args.what == "report":
        return report()
    first = ["adamw_lr0.003", "muon_lr0.02"]  # the averaging evidence runs first
    order = [*first, *(name for name in RUNS_A if name not in first)]
    if args.part in ("a", "all"):
        for name in order:
            train(name, RUNS_A[name])
    if args.part in ("b", "all"):
        for name, overrides in RUNS_B.items():
            train(name, overrides)


if __name__ == "__main__":
    main()
