"""Pre-tokenized shards: reader throughput, and training tokens/s on data=shards vs raw files.

1. ``pretrainctl data prepare`` of the whole stdlib corpus with ``curation=none`` and the default
   tokenizer (same training documents in the same order, so the same cached BPE as ``data=stdlib``),
   ``tokenize=true``.
2. Reader: tokens/s of ``ShardsDataModule.train_batch`` (memory-mapped gather of B x (L + 1) rows),
   against the tokens/s the training loop consumes.
3. Training: ``pretrainctl train`` for ``--steps`` steps on data=stdlib (raw files, tokenized and
   packed in memory) and on data=shards, alternated raw, shards, raw, shards in one process; the
   ratio is shards / raw of the mean tokens/s (target >= 1).

    python -m bench.data_throughput [--steps 20] [--out /tmp/prepared-stdlib] [train overrides ...]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from pretrainctl.data.prepare_cmd import run_prepare
from pretrainctl.data.shards import ShardsDataModule
from pretrainctl.tokenizer import load_tokenizer
from pretrainctl.train import run_train
from tests.helpers import compose_config


def reader_tokens_per_s(out: Path, seq_len: int, batch_size: int, batches: int = 2000) -> float:
    dm = ShardsDataModule(str(out), load_tokenizer(out / "tokenizer"), seq_len=seq_len, batch_size=batch_size)
    dm.setup()
    t0 = time.perf_counter()
    for i in range(batches):
        dm.train_batch(i)
    return batches * batch_size * seq_len / (time.perf_counter() - t0)


def raw_reader_tokens_per_s(overrides: list[str], batches: int = 2000) -> float:
    """The same figure for data=stdlib (tokenized and packed in memory, from the token cache)."""
    from pretrainctl.build import build_experiment

    dm = build_experiment(compose_config("train", overrides)).datamodule
    dm.setup()
    t0 = time.perf_counter()
    for i in range(batches):
        dm.train_batch(i)
    return batches * dm.batch_size * dm.seq_len / (time.perf_counter() - t0)


def train_tokens_per_s(overrides: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_train(compose_config("train", overrides), Path(tmp) / "run")
    return summary["tokens_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "pretrainctl-prepared-stdlib"))
    parser.add_argument("overrides", nargs="*", help="extra train overrides, e.g. arch.d_model=128")
    args = parser.parse_args()
    t0 = time.perf_counter()
    run_prepare(
        compose_config("data_prepare", ["curation=none", "tokenize=true", f"out={args.out}"]), progress=False
    )
    prepare_s = time.perf_counter() - t0
    index = json.loads((Path(args.out) / "tokens" / "index.json").read_text())
    reader = reader_tokens_per_s(Path(args.out), 256, 16)
    common = [
        f"trainer.max_steps={args.steps}",
        "trainer.val_check_interval=1000",
        "trainer.limit_val_batches=1",
    ]
    raw_reader = raw_reader_tokens_per_s(common)
    raw, shards = [], []
    for _ in range(2):
        raw.append(train_tokens_per_s(common))
        shards.append(train_tokens_per_s([*common, "data=shards", f"data.path={args.out}"]))
    result = {
        "prepare_s": round(prepare_s, 1),
        "train_tokens": index["tokens"]["train"],
        "reader_tokens_per_s": round(reader),
        "raw_reader_tokens_per_s": round(raw_reader),
        "train_raw_tokens_per_s": [round(x) for x in raw],
        "train_shards_tokens_per_s": [round(x) for x in shards],
        "ratio_shards_over_raw": round(sum(shards) / sum(raw), 3),
        "reader_over_training": round(reader / (sum(raw) / len(raw))),
        "train_overrides": common,
        "loadavg_1_5_15min": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
