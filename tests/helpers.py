"""Shared test helpers: compose configs through Hydra's compose API with a tiny, fast setup."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from pretrainctl.cli import CONF

# A few stdlib files, a small vocabulary, a tiny model: a training step takes milliseconds.
TINY = [
    "data.source.max_files=40",
    "data.seq_len=32",
    "data.batch_size=4",
    "data.eval_batch_size=16",
    "tokenizer.vocab_size=400",
    "tokenizer.train_bytes=300000",
    "arch.d_model=32",
    "arch.n_layers=2",
    "arch.n_heads=4",
    "trainer.val_check_interval=10",
    "trainer.limit_val_batches=4",
    "log_every=1",
]


def compose_config(
    name: str = "train", overrides: list[str] = (), cache_dir: Path | None = None
) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        extra = [f"cache_dir={cache_dir}"] if cache_dir is not None else []
        return compose(config_name=name, overrides=[*overrides, *extra])


def tiny_config(overrides: list[str] = (), cache_dir: Path | None = None) -> DictConfig:
    base = TINY
    trained = ("tokenizer=bpe", "tokenizer=unigram", "tokenizer=superbpe", "tokenizer=bytebpe")
    if any(o.startswith("tokenizer=") and o not in trained for o in overrides):
        base = [o for o in base if not o.startswith("tokenizer.")]  # e.g. bytes has no vocab_size
    if any(o.startswith("data=") and o != "data=stdlib" for o in overrides):
        base = [o for o in base if not o.startswith("data.source.")]
    return compose_config("train", [*base, *overrides], cache_dir)
