"""µP evidence on the default data (stdlib corpus, default 4096-piece BPE).

coord: coordinate check — 4 widths (64..512, 4 heads, 2 layers), 5 AdamW steps at LR 1e-2 on the
       same default-data batches: SP, µP (base width 64) with a tied head, with a tied head and no
       logit multiplier, and with an untied head with and without it; per layer, RMS of the change of
       its output from init. Table + PNG.
sweep: LR transfer — ``pretrainctl train --multirun`` over widths 64 and 256 (= 4 x 64) and a
       4-point LR grid (factor 2), µP with base width 64 and a tied head by default; ``--untied``
       (the README's recipe), ``--sp`` (SP, also with --untied) or ``--no-output-mult`` pick the
       variant. 2 layers, the default 16 x 256-token batches, 250 steps; each point's val_bpb from its
       summary.json. ``--widths``/``--lrs`` run a part of the grid (or extend it) under its own sweep
       directory (e.g. one part per CPU lane), ``--seed`` another seed; the report merges the parts into
       one table per variant and seed, and plots val_bpb against LR per width (mup_lr_transfer.png).

    nice -n 5 .venv/bin/python bench/mup_evidence.py coord
    nice -n 5 .venv/bin/python bench/mup_evidence.py sweep [--untied] [--sp | --no-output-mult] \\
        [--widths 256 --lrs 4e-3] [--seed 1]
    .venv/bin/python bench/mup_evidence.py report
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
LRS = [4e-3, 8e-3, 1.6e-2, 3.2e-2]
WIDTHS = [64, 256]
# 250 steps of the default 16 x 256 rows: at 100 steps of 16 x 128 (the first version of this sweep) every
# run was still leaving the unigram plateau (train loss 5.4-6.2 nats) and the ranking of LRs was
# chaotic (e.g. width 64: 0.008 worse than both 0.004 and 0.016).
SWEEP = ["arch.n_layers=2", "trainer.max_steps=250", "trainer.val_check_interval=250", "threads=1"]


def coord() -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pretrainctl import build
    from pretrainctl.optim.coord_check import coord_check, growth
    from tests.helpers import compose_config

    cfg = compose_config("train", ["data.batch_size=8", "data.seq_len=128"])
    dm = build.build_datamodule(cfg)
    tok = build.build_tokenizer(cfg, dm)
    dm.tokenizer = tok
    dm.setup("fit")
    it = iter(dm.train_dataloader())
    batches = [next(it)["tokens"] for _ in range(5)]
    widths = [64, 128, 256, 512]
    lines = ["| parametrization | layer | " + " | ".join(f"d={w}" for w in widths) + " | growth 512/64 |",
             "|---|---|" + "---|" * (len(widths) + 1)]  # fmt: skip
    variants = (  # name, base width, logit multiplier, tied head
        ("SP", None, True, True),
        ("µP", 64, True, True),
        ("µP, no logit multiplier", 64, False, True),
        ("µP, untied head", 64, True, False),
        ("µP, untied, no logit multiplier", 64, False, False),
    )
    fig, axes = plt.subplots(1, len(variants), figsize=(3.7 * len(variants), 3.8), sharey=True)
    for ax, (name, base, mult, tied) in zip(axes, variants, strict=True):
        r = coord_check(
            widths, batches, vocab_size=tok.vocab_size, mup_base_width=base, lr=1e-2, mup_output_mult=mult,
            tie_embeddings=tied,
        )  # fmt: skip
        for layer in r[widths[0]]:
            vals = [r[w][layer] for w in widths]
            lines.append(f"| {name} | {layer} | " + " | ".join(f"{v:.4f}" for v in vals)
                         + f" | {growth(r, layer):.2f}x |")  # fmt: skip
            ax.plot(widths, vals, "o-", label=layer)
        ax.set(xscale="log", yscale="log", xlabel="width d_model")
        ax.set_title(name, fontsize=10)
    axes[0].set_ylabel("RMS(output_t - output_0), 5 steps")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "mup_coord_check.png", dpi=110)
    return "\n".join(lines)


VARIANTS = {  # stamp prefix -> (title, overrides, the variant whose base-width model is the same)
    "mup_sweep": ("µP (base width 64), tied head", ["arch.mup_base_width=64"], None),
    "mup_sweep_sp": ("SP, tied head", [], "mup_sweep"),
    "mup_sweep_nomult": (
        "µP (base width 64), tied head, no logit multiplier",
        ["arch.mup_base_width=64", "arch.mup_output_mult=false"],
        "mup_sweep",
    ),
    "mup_sweep_untied": (
        "µP (base width 64), untied head",
        ["arch.mup_base_width=64", "arch.tie_embeddings=false"],
        None,
    ),
    "mup_sweep_sp_untied": ("SP, untied head", ["arch.tie_embeddings=false"], "mup_sweep_untied"),
}


def sweep(variant: str, widths: list[int], lrs: list[float], seed: int | None = None) -> None:
    part = (
        ""
        if (widths, lrs) == (WIDTHS, LRS)
        else "_w" + "-".join(map(str, widths)) + "_lr" + "-".join(f"{x:g}" for x in lrs)
    )
    stamp = variant + ("" if seed is None else f"_s{seed}") + part
    if (RUNS / f"sweep-{stamp}").is_dir():
        return
    mup = VARIANTS[variant][1] + ([] if seed is None else [f"seed={seed}"])
    lock = [] if os.environ.get("PRETRAINCTL_LOCK_HELD") else ["flock", "/tmp/pretrainctl-heavy.lock"]
    cmd = [*lock, sys.executable, "-m", "pretrainctl.cli", "train",
           "--multirun", *mup, "arch.d_model=" + ",".join(map(str, widths)),
           "optim.lr=" + ",".join(f"{x:g}" for x in lrs), *SWEEP]  # fmt: skip
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "PRETRAINCTL_STAMP": stamp})


def sweep_dirs(variant: str, seed: int | None = None) -> list[Path]:
    """The variant's whole-grid sweep and its parts (``sweep-<variant>[_s<seed>]_w...``)."""
    name = variant + ("" if seed is None else f"_s{seed}")
    return [d for d in [RUNS / f"sweep-{name}", *sorted(RUNS.glob(f"sweep-{name}_w*"))] if d.is_dir()]


def sweep_seeds(variant: str) -> list[int]:
    """Seeds other than the default that have a part of this variant's grid."""
    found = {
        d.name.removeprefix(f"sweep-{variant}_s").split("_")[0] for d in RUNS.glob(f"sweep-{variant}_s*_w*")
    }
    return sorted(int(s) for s in found if s.isdigit())


def sweep_grid(variant: str, seed: int | None = None) -> dict[tuple[int, float], float]:
    """val_bpb per (width, LR). At the base width (width_mult 1) some variants are the same model as
    another (µP without the logit multiplier and SP are µP there), so their base-width points come from
    that variant's sweep when they have none of their own."""
    from omegaconf import OmegaConf

    grid: dict[tuple[int, float], float] = {}
    base = VARIANTS[variant][2]
    borrowed = sweep_dirs(base, seed) if base else []
    for own, d in [*((False, d) for d in borrowed), *((True, d) for d in sweep_dirs(variant, seed))]:
        for summary in sorted(d.glob("*/summary.json")):  # own points come last and win
            cfg = OmegaConf.load(summary.parent / "config.yaml")
            if own or cfg.arch.d_model == cfg.arch.mup_base_width:
                grid[(cfg.arch.d_model, cfg.optim.lr)] = json.loads(summary.read_text())["val_bpb"]
    return grid


def sweep_table(grid: dict[tuple[int, float], float]) -> str:
    lrs = sorted({lr for _, lr in grid} | set(LRS))  # the default grid plus any extension (--lrs)
    lines = [
        "| width | " + " | ".join(f"lr {x:g}" for x in lrs) + " | best |",
        "|---|" + "---|" * (len(lrs) + 1),
    ]
    for w in sorted({w for w, _ in grid} | set(WIDTHS)):  # widths beyond the default grid (--widths 512)
        row = [grid.get((w, lr)) for lr in lrs]
        done = [(v, lr) for v, lr in zip(row, lrs, strict=True) if v is not None]
        best = f"{min(done)[1]:g}" if done else "n/a"
        lines.append(
            f"| {w} | " + " | ".join("n/a" if v is None else f"{v:.4f}" for v in row) + f" | {best} |"
        )
    return "\n".join(lines)


def plot_sweeps(panels: list[tuple[str, dict[tuple[int, float], float]]]) -> None:
    """val_bpb against LR, one line per width, one panel per sweep: µP transfer means the minima line up."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), sharey=True, squeeze=False)
    widths = sorted({w for _, grid in panels for w, _ in grid})
    for ax, (title, grid) in zip(axes[0], panels, strict=True):
        for w in sorted({w for w, _ in grid}):
            pts = sorted((lr, v) for (width, lr), v in grid.items() if width == w)
            ax.plot(*zip(*pts, strict=True), "o-", color=f"C{widths.index(w)}", label=f"width {w}")
            ax.plot(*min(pts, key=lambda p: p[1]), "k*", markersize=12)
        ax.set(xscale="log", xlabel="AdamW LR", title=title)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("val_bpb after 250 steps (star: best)")
    fig.tight_layout()
    fig.savefig(OUT / "mup_lr_transfer.png", dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["coord", "sweep", "report"])
    ap.add_argument("--sp", action="store_true")
    ap.add_argument("--no-output-mult", action="store_true")
    ap.add_argument("--untied", action="store_true")
    ap.add_argument("--widths", default=",".join(map(str, WIDTHS)))
    ap.add_argument("--lrs", default=",".join(f"{x:g}" for x in LRS))
    ap.add_argument("--seed", type=int, default=None, help="a seed other than the default (train.yaml)")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).parent.parent))
    if args.what == "sweep":
        variant = "mup_sweep" + "_sp" * args.sp + "_nomult" * args.no_output_mult + "_untied" * args.untied
        if variant not in VARIANTS:
            ap.error(f"no sweep variant for that combination of flags (known: {', '.join(VARIANTS)})")
        widths = [int(w) for w in args.widths.split(",")]
        return sweep(variant, widths, [float(x) for x in args.lrs.split(",")], args.seed)
    text = ["# µP evidence (bench/mup_evidence.py)", ""]
    if args.what == "coord" or not (OUT / "mup_coord.md").is_file():
        (OUT / "mup_coord.md").write_text(coord() + "\n")
    text += ["Coordinate check:", "", (OUT / "mup_coord.md").read_text()]
    panels = []
    for variant, (name, _, _) in VARIANTS.items():
        for seed in ([None] if sweep_dirs(variant) else []) + sweep_seeds(variant):
            title = name + ("" if seed is None else f", seed {seed}")
            grid = sweep_grid(variant, seed)
            text += [f"LR sweep, {title}, val_bpb after 250 steps:", "", sweep_table(grid), ""]
            panels.append((title.replace(" (base width 64)", ""), grid))
    plot_sweeps(panels)
    (OUT / "mup_evidence.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
