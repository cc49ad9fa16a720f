"""``pretrainctl data train_scorer positive=<file> negative=<file> out=<scorer.npz>``.

Fits the hashed n-gram logistic-regression quality scorer (``curation.quality.QualityScorer``) from
two local example sets (jsonl with ``text_field``, or one example per line), reports its accuracy on
a held-out fraction of both sets, and saves it where the ``quality`` curation stage loads it:
``pretrainctl data prepare curation=quality 'curation.stages.quality.model_paths=[<scorer.npz>]'``.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from pretrainctl.data.curation.contamination import read_eval_items
from pretrainctl.data.curation.quality import QualityScorer
from pretrainctl.errors import UserError


def _read(path: str, setting: str, text_field: str) -> list[str]:
    if not Path(path).is_file():
        raise UserError(f"{setting}={path} does not exist; give a .jsonl (field {text_field!r}) or .txt.")
    items = [t for t in read_eval_items(path, text_field) if t.strip()]
    if len(items) < 2:
        raise UserError(f"{setting}={path} has {len(items)} non-empty examples; a scorer needs at least 2.")
    return items


def _split(items: list[str], holdout: float, rng: random.Random) -> tuple[list[str], list[str]]:
    items = items[:]
    rng.shuffle(items)
    n_held = int(round(holdout * len(items)))
    n_held = min(max(n_held, 1 if holdout > 0 else 0), len(items) - 1)  # keep >= 1 training example
    return items[n_held:], items[:n_held]


def train_scorer(cfg: DictConfig) -> dict:
    """Fit, evaluate on the held-out examples, save ``out`` and ``out``.json; returns the report."""
    if not 0 <= cfg.holdout < 1:
        raise UserError(f"holdout must be in [0, 1), not {cfg.holdout}.")
    pos = _read(cfg.positive, "positive", cfg.text_field)
    neg = _read(cfg.negative, "negative", cfg.text_field)
    rng = random.Random(cfg.seed)
    pos_train, pos_held = _split(pos, cfg.holdout, rng)
    neg_train, neg_held = _split(neg, cfg.holdout, rng)
    start = time.perf_counter()
    scorer = QualityScorer(
        n_features=cfg.n_features, word_ngrams=list(cfg.word_ngrams), char_ngrams=list(cfg.char_ngrams),
        l2=cfg.l2, max_iter=cfg.max_iter,
    ).fit(pos_train, neg_train)  # fmt: skip
    report = {
        "positive": str(cfg.positive), "negative": str(cfg.negative),
        "train": {"positive": len(pos_train), "negative": len(neg_train)},
        "heldout": {"positive": len(pos_held), "negative": len(neg_held)},
        "fit_s": round(time.perf_counter() - start, 3),
        "train_accuracy": _accuracy(scorer, pos_train, neg_train),
    }  # fmt: skip
    if pos_held and neg_held:
        report["heldout_accuracy"] = _accuracy(scorer, pos_held, neg_held)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    scorer.save(out)
    report["scorer"] = str(out)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _accuracy(scorer: QualityScorer, pos: list[str], neg: list[str]) -> float:
    """Share of examples on the right side of probability 0.5."""
    correct = np.sum(scorer.logit(pos) > 0) + np.sum(scorer.logit(neg) <= 0)
    return round(float(correct) / (len(pos) + len(neg)), 4)


def hydra_task(cfg: DictConfig) -> None:
    report = train_scorer(cfg)
    table = Table(title=f"quality scorer -> {report['scorer']}")
    for col in ("split", "positive", "negative", "accuracy"):
        table.add_column(col, justify="left" if col == "split" else "right")
    table.add_row("train", str(report["train"]["positive"]), str(report["train"]["negative"]),
                  f"{report['train_accuracy']:.3f}")  # fmt: skip
    held = report["heldout"]
    table.add_row("held-out", str(held["positive"]), str(held["negative"]),
                  f"{report['heldout_accuracy']:.3f}" if "heldout_accuracy" in report else "-")  # fmt: skip
    Console().print(table)
    use = f"curation.stages.quality.model_paths=[{report['scorer']}]"
    print(f"use it: pretrainctl data prepare curation=quality '{use}'")
