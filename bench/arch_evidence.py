"""Evidence for the architecture issue, through the CLI on the default data (stdlib, default BPE).

(a) balancing: a small ``moe`` model trained with ``balance=aux_free`` and with ``balance=none``,
    otherwise identical; prints the mean routing max-violation (max load / mean load - 1, worst MoE
    layer, read from ``moe/max_violation`` in metrics.jsonl) over the steps after warm-up.
(b) ``moe`` vs ``dense`` at one training-FLOP budget (``scaling=flops``: each run's steps follow from
    its own FLOPs per token) with the same attention and ~equal active FLOPs per token; prints
    validation bits per byte on the whole validation split.

Sizes are far below the presets so each run takes minutes on a loaded 2-core CPU; every override
is printed and the results are in bench/results/arch_evidence.md. Run directories go under
$PRETRAINCTL_RUNS (default /tmp/arch_ev); a run whose summary.json exists is reused, not retrained.

    nice -n 19 .venv/bin/python bench/arch_evidence.py [--part a|b|all] [--jobs 2]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cli_runs import metrics, summary, train_all  # bench/cli_runs.py (run as a script)

RUNS = Path(os.environ.setdefault("PRETRAINCTL_RUNS", "/tmp/arch_ev"))

# (a) d_model 64, 16 routed experts of width 32 (top-4) + 1 shared, sigmoid scores (the preset's).
# 64 sequences x 16 tokens = 1024 tokens per step: the load is measured on one batch, so few long
# sequences make it swing with their content. Pilot runs at gamma 0.01, 400 steps, mean over steps
# 201-400: 16 x 64 -> 0.50, 32 x 32 -> 0.32 (0.28 with 8 experts top-2), 64 x 16 -> 0.27.
A_ARCH = ["+arch=moe", "arch.d_model=64", "arch.n_heads=4", "arch.expert_hidden=32"]
A_DATA = ["data.seq_len=16", "data.batch_size=64"]
A_STEPS, A_WARMUP = 400, 200
# gamma: DeepSeek-V3 uses 0.001 over ~15T tokens; a run of a few hundred steps needs a faster bias.
# Pilots (16 x 64): 0.05 oscillates (mean ~1.2 at steps 100-200), 0.02 ~0.6, 0.01 the best found.
A_GAMMA = 0.01
A_LOG = ["trainer.val_check_interval=1000", "trainer.limit_val_batches=8", "log_every=5"]

# (b) d_model 128, 4 layers, 4 heads, the same attention; the first layer's FFN is dense in both.
# dense: SwiGLU 384 per layer. moe: 16 routed experts of 96 (top-3, gates normalized to sum 1) + 1
# shared of 96 = 384 active units per token; moe_top1: 8 routed experts of 192 (top-1, gate 1) + 1
# shared of 192 = 384; moe_2shared: 16 routed of 96 (top-2) + 2 shared (one SwiGLU of 192) = 384.
# FLOPs/token are within 0.5% of dense, total parameters ~2.1x.
B_SIZE = ["arch.d_model=128", "arch.n_layers=4", "arch.n_heads=4"]
B_MOE = {
    "isoflop_moe": ["arch.n_experts=16", "arch.expert_hidden=96", "arch.top_k=3"],
    "isoflop_moe_top1": ["arch.n_experts=8", "arch.expert_hidden=192", "arch.top_k=1"],
    "isoflop_moe_2shared": [
        "arch.n_experts=16",
        "arch.expert_hidden=96",
        "arch.top_k=2",
        "arch.n_shared_experts=2",
    ],
}
B_DATA = ["data.seq_len=128", "data.batch_size=8"]
B_FLOPS = 5e12
B_LOG = ["trainer.val_check_interval=100000", "trainer.limit_val_batches=null", "log_every=10"]


def a_jobs() -> dict[str, list[str]]:
    base = [*A_ARCH, *A_DATA, *A_LOG, f"trainer.max_steps={A_STEPS}"]
    return {
        "balance_aux_free": [*base, "arch.balance=aux_free", f"arch.bias_update_speed={A_GAMMA}"],
        "balance_none": [*base, "arch.balance=none"],
    }


def part_a(n_jobs: int) -> None:
    runs = train_all(a_jobs(), n_jobs)
    for name, run in runs.items():
        logged = [(r["step"], r["moe/max_violation"]) for r in metrics(run) if "moe/max_violation" in r]
        viol = [v for _, v in logged]
        after = [v for step, v in logged if step > A_WARMUP]
        s = summary(run)
        print(
            f"(a) {name:17s} mean max-violation steps {A_WARMUP + 1}-{A_STEPS}: "
            f"{sum(after) / len(after):.3f} (n={len(after)}, min {min(after):.2f}, max {max(after):.2f}; "
            f"last logged {viol[-1]:.2f}) val_bpb={s['val_bpb']:.4f} wall={s['wall_s']:.0f}s"
        )


def part_b(n_jobs: int) -> None:
    common = [*B_SIZE, *B_DATA, *B_LOG, "scaling=flops", f"scaling.flops={B_FLOPS:g}"]
    gamma = f"arch.bias_update_speed={A_GAMMA}"
    jobs = {"isoflop_dense": ["+arch=dense", *common]}
    jobs |= {name: ["+arch=moe", *moe, gamma, *common] for name, moe in B_MOE.items()}
    runs = train_all(jobs, n_jobs)
    for name, run in runs.items():
        s = summary(run)
        print(
            f"(b) {name:19s} flops/token={s['flops_per_token']:,} steps={s['step']} "
            f"tokens={s['tokens']:,} params total/active={s['params_total']:,}/{s['params_active']:,} "
            f"train_flops={s['train_flops']:.3g} val_bpb={s['val_bpb']:.4f} wall={s['wall_s']:.0f}s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["a", "b", "all"], default="all")
    parser.add_argument("--jobs", type=int, default=2, help="training runs side by side")
    args = parser.parse_args()
    if args.part in ("a", "all"):
        part_a(args.jobs)
    if args.part in ("b", "all"):
        part_b(args.jobs)


if __name__ == "__main__":
    main()
