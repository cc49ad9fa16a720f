"""µP evidence on the default data (stdlib corpus, default 4096-piece BPE).

coord: coordinate check — 4 widths (64..512, 4 heads, 2 layers), 5 AdamW steps at LR 1e-2 on the
       same default-data batches, µP (base width 64) and SP; per layer, RMS of the change of its
       output from init. Table + PNG.
sweep: LR transfer — one ``pretrainctl train --multirun`` over widths 64 and 256 (= 4 x 64) and a
       4-point LR grid (factor 2), µP with base width 64 (and the same grid under SP with --sp),
       2 layers, the default 16 x 256-token batches, 250 steps; each point's val_bpb from its summary.json.

    nice -n 5 .venv/bin/python bench/mup_evidence.py coord
    nice -n 5 .venv/bin/python bench/mup_evidence.py sweep [--sp]
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
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, (name, base) in zip(axes, (("SP", None), ("µP", 64)), strict=True):
        r = coord_check(widths, batches, vocab_size=tok.vocab_size, mup_base_width=base, lr=1e-2)
        for layer in r[widths[0]]:
            vals = [r[w][layer] for w in widths]
            lines.append(f"| {name} | {layer} | " + " | ".join(f"{v:.4f}" for v in vals)
                         + f" | {growth(r, layer):.2f}x |")  # fmt: skip
            ax.plot(widths, vals, "o-", label=layer)
        ax.set(xscale="log", yscale="log", xlabel="width d_model", title=f"{name}: RMS change after 5 steps")
    axes[0].set_ylabel("RMS(output_t - output_0)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "mup_coord_check.png", dpi=110)
    return "\n".join(lines)


def sweep(sp: bool) -> None:
    stamp = "mup_sweep_sp" if sp else "mup_sweep"
    if (RUNS / f"sweep-{stamp}").is_dir():
        return
    widths = ",".join(map(str, WIDTHS))
    lrs = ",".join(f"{x:g}" for x in LRS)
    mup = [] if sp else ["arch.mup_base_width=64"]
    lock = [] if os.environ.get("PRETRAINCTL_LOCK_HELD") else ["flock", "/tmp/pretrainctl-heavy.lock"]
    cmd = [*lock, sys.executable, "-m", "pretrainctl.cli", "train",
           "--multirun", *mup, f"arch.d_model={widths}", f"optim.lr={lrs}", *SWEEP]  # fmt: skip
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "PRETRAINCTL_STAMP": stamp})


def sweep_table(stamp: str) -> str:
    from omegaconf import OmegaConf

    grid: dict[tuple[int, float], float] = {}
    for summary in sorted((RUNS / f"sweep-{stamp}").glob("*/summary.json")):
        cfg = OmegaConf.load(summary.parent / "config.yaml")
        grid[(cfg.arch.d_model, cfg.optim.lr)] = json.loads(summary.read_text())["val_bpb"]
    lines = [
        "| width | " + " | ".join(f"lr {x:g}" for x in LRS) + " | best |",
        "|---|" + "---|" * (len(LRS) + 1),
    ]
    for w in WIDTHS:
        row = [grid.get((w, lr)) for lr in LRS]
        done = [(v, lr) for v, lr in zip(row, LRS, strict=True) if v is not None]
        best = f"{min(done)[1]:g}" if done else "n/a"
        lines.append(
            f"| {w} | " + " | ".join("n/a" if v is None else f"{v:.4f}" for v in row) + f" | {best} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["coord", "sweep", "report"])
    ap.add_argument("--sp", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).parent.parent))
    if args.what == "sweep":
        return sweep(args.sp)
    text = ["# µP evidence (bench/mup_evidence.py)", ""]
    if args.what == "coord" or not (OUT / "mup_coord.md").is_file():
        (OUT / "mup_coord.md").write_text(coord() + "\n")
    text += ["Coordinate check:", "", (OUT / "mup_coord.md").read_text()]
    for stamp, name in (("mup_sweep", "µP (base width 64)"), ("mup_sweep_sp", "SP")):
        if (RUNS / f"sweep-{stamp}").is_dir():
            text += [f"LR sweep, {name}, val_bpb after 250 steps:", "", sweep_table(stamp), ""]
    (OUT / "mup_evidence.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
