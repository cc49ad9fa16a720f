"""Learned quality scorer: separates two synthetic classes; persistence; filter stage."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from pretrainctl.data.curation.quality import QualityFilter, QualityScorer

GOOD = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "with",
    "as",
    "was",
    "on",
    "be",
    "by",
    "this",
    "are",
    "from",
    "at",
    "have",
    "an",
    "which",
]
GOOD += [
    "report",
    "study",
    "results",
    "method",
    "analysis",
    "evidence",
    "data",
    "model",
    "research",
    "paper",
    "section",
]
BAD = [
    "click",
    "buy",
    "now",
    "free",
    "win",
    "cheap",
    "deal",
    "offer",
    "best",
    "sale",
    "discount",
    "casino",
    "viagra",
    "hot",
    "amazing",
]
BAD += ["limited", "prize", "bonus", "subscribe", "follow", "like", "share", "!!!", "$$$", "www", "link"]


def sample(rng: random.Random, vocab: list[str], other: list[str], n: int) -> list[str]:
    """Documents mostly from `vocab` with 30% words from `other`, so classes overlap somewhat."""
    return [
        " ".join(
            rng.choice(vocab) if rng.random() < 0.7 else rng.choice(other) for _ in range(rng.randint(20, 80))
        )
        for _ in range(n)
    ]


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Mann-Whitney AUC: P(score(pos) > score(neg)), ties counted half."""
    diff = pos[:, None] - neg[None, :]
    return float(np.mean(diff > 0) + 0.5 * np.mean(diff == 0))


def test_scorer_separates_classes_and_roundtrips(tmp_path: Path) -> None:
    rng = random.Random(0)
    scorer = QualityScorer(n_features=2**16).fit(sample(rng, GOOD, BAD, 200), sample(rng, BAD, GOOD, 200))
    pos, neg = sample(rng, GOOD, BAD, 100), sample(rng, BAD, GOOD, 100)
    p = np.array([scorer.score(t) for t in pos])
    n = np.array([scorer.score(t) for t in neg])
    assert auc(p, n) > 0.9
    path = tmp_path / "scorer.npz"
    scorer.save(path)
    loaded = QualityScorer.load(path)
    np.testing.assert_allclose([loaded.score(t) for t in pos[:10]], p[:10], rtol=1e-4, atol=1e-5)


def test_features_are_l2_normalized_and_deterministic() -> None:
    scorer = QualityScorer(n_features=2**12)
    x = scorer.features(["a b c a b", "hello world"])
    np.testing.assert_allclose(np.sqrt(np.asarray(x.multiply(x).sum(axis=1))).ravel(), [1.0, 1.0], rtol=1e-6)
    assert (scorer.features(["a b c a b"]) != x[0]).nnz == 0


def test_quality_filter_thresholds_buckets_and_weights(tmp_path: Path) -> None:
    rng = random.Random(1)
    good = QualityScorer(n_features=2**14).fit(sample(rng, GOOD, BAD, 100), sample(rng, BAD, GOOD, 100))
    bad = QualityScorer(n_features=2**14).fit(sample(rng, BAD, GOOD, 100), sample(rng, GOOD, BAD, 100))
    good.save(tmp_path / "good.npz")
    docs = [{"id": str(i), "text": t, "source": "s"} for i, t in enumerate(sample(rng, GOOD, BAD, 20))]
    docs += [{"id": f"b{i}", "text": t, "source": "s"} for i, t in enumerate(sample(rng, BAD, GOOD, 20))]

    stage = QualityFilter(model_paths=[str(tmp_path / "good.npz")], threshold=0.5, bucket_edges=[0.75, 0.9])
    kept = list(stage(docs))
    assert {d["id"] for d in kept} <= {str(i) for i in range(20)} and len(kept) >= 18
    assert all(
        d["meta"]["quality_bucket"] == sum(d["meta"]["quality_score"] >= e for e in (0.75, 0.9)) for d in kept
    )
    assert sum(stage.report.extra["score_histogram"].values()) == 40
    # Two opposite scorers with equal weights cancel out on the normalized scale; weighting picks one.
    even = QualityFilter(scorers=[good, bad], threshold=None)
    assert np.std([even.combined_score(d["text"]) for d in docs]) < 0.5
    mostly_good = QualityFilter(scorers=[good, bad], weights=[0.9, 0.1], threshold=0.0)
    assert {d["id"] for d in mostly_good(docs)} <= {str(i) for i in range(20)}
