"""Evidence for the architecture issue, through the CLI on the default (stdlib) data.

(a) balancing: the ``moe`` preset trained with ``balance=aux_free`` and with ``balance=none``;
    prints the mean routing max-violation (max load / mean load - 1, worst layer) over the steps
    after warm-up.
(b) ``moe`` vs ``dense`` at one training-FLOP budget (``scaling=flops``): prints validation bpb.

Both use a smaller-than-preset width and context so each run takes minutes on a laptop CPU; every
override is printed. Run:  nice -n 19 .venv/bin/python bench/arch_evidence.py [--part a|b|all]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

RUNS = Path(os.environ.setdefault("PRETRAINCTL_RUNS", "/tmp/arch_runs"))
# 16 x 64 = 1024 tokens per step: 256 assignments per expert on average at top-4 of 16
COMMON = ["data.seq_len=64", "data.batch_size=16", "trainer.limit_val_batches=8", "log_every=5"]
WIDTH = ["arch.d_model=64", "arch.n_heads=4"]


def train(name: str, overrides: list[str]) -> Path:
    run = RUNS / name
    if not (run / "summary.json").is_file():
        cmd = [str(Path(sys.executable).with_name("pretrainctl")), "train", *overrides]
        print("$ PRETRAINCTL_STAMP=" + name, "pretrainctl train", " ".join(overrides), flush=True)
        subprocess.run(
            cmd, check=True, env={**os.environ, "PRETRAINCTL_STAMP": name}, stdout=subprocess.DEVNULL
        )
    return run


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def part_a(steps: int, warmup: int) -> None:
    base = [
        "+arch=moe",
        *WIDTH,
        "arch.expert_hidden=32",
        *COMMON,
        f"trainer.max_steps={steps}",
        "trainer.val_check_interval=1000",
    ]
    # gamma 0.01 instead of the preset's 0.001: the bias must move within a few hundred steps here
    results = {}
    for balance, extra in (("aux_free", ["arch.bias_update_speed=0.01"]), ("none", [])):
        run = train(f"balance_{balance}", [*base, f"arch.balance={balance}", *extra])
        # metrics.jsonl carries the model's diagnostics every log step (moe/max_violation: worst layer)
        viol = [
            r["moe/max_violation"]
            for r in metrics(run)
            if r.get("step", 0) > warmup and "moe/max_violation" in r
        ]
        results[balance] = sum(viol) / len(viol)
    for balance, v in results.items():
        print(f"(a) balance={balance:9s} mean max-violation after step {warmup}: {v:.3f}")


def part_b(flops: float) -> None:
    results = {}
    # at width 64, experts of 32 give the MoE 5 x 32 = 160 active FFN units vs the dense 192
    for arch, extra in (("dense", []), ("moe", ["arch.expert_hidden=32"])):
        overrides = [f"+arch={arch}", *WIDTH, *extra, *COMMON, "scaling=flops", f"scaling.flops={flops:g}"]
        run = train(f"isoflop_{arch}", overrides)
        summary = json.loads((run / "summary.json").read_text())
        results[arch] = summary
    for arch, s in results.items():
        print(
            f"(b) {arch:5s} flops/token={s['flops_per_token']:,} steps={s['step']} "
            f"params total/active={s['params_total']:,}/{s['params_active']:,} "
            f"train_flops={s['train_flops']:.3g} val_bpb={s['val_bpb']:.4f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["a", "b", "all"], default="all")
    parser.add_argument("--steps", type=int, default=100, help="(a) training steps")
    parser.add_argument("--warmup", type=int, default=40, help="(a) steps excluded from the average")
    parser.add_argument("--flops", type=float, default=1e12, help="(b) training FLOPs per run")
    args = parser.parse_args()
    if args.part in ("a", "all"):
        part_a(args.steps, args.warmup)
    if args.part in ("b", "all"):
        part_b(args.flops)


if __name__ == "__main__":
    main()
