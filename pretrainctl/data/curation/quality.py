"""Learned quality scoring with no downloads: hashed n-gram features + logistic regression.

- Features: word n-grams and byte n-grams hashed into `n_features` (2^18) buckets with a sign bit
  (the "hashing trick", Weinberger et al. 2009), log(1 + count) values, rows L2-normalized. This is
  the feature space of fastText-style quality classifiers (GPT-3's / DCLM's fastText filter, Li et
  al. 2024) without the embedding layer.
- Model: L2-regularized logistic regression fitted with scipy's L-BFGS on the sparse matrix.
- Several scorers combine by a weighted mean of normalized scores, as in Meta-rater (Zhuang et
  al. 2025, "Meta-rater: A Multi-dimensional Data Selection Method for Pre-training Language
  Models"): each scorer's logit is standardized with the mean/std it had on its own training set,
  so scorers trained on different data share one scale before weighting.

`QualityFilter` drops documents below a threshold and/or writes `meta["quality_score"]` and
`meta["quality_bucket"]`; its report holds a histogram of the scores.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.optimize
import scipy.sparse as sp

from pretrainctl.data.curation.base import Doc, FilterStage
from pretrainctl.data.curation.contamination import read_eval_items
from pretrainctl.data.curation.hashing import char_ngram_hashes, ngram_hashes, token_hashes, words

_CHAR_SALT = np.uint64(0x9E3779B97F4A7C15)


class QualityScorer:
    """Hashed n-gram logistic regression. `fit(positive, negative)`, then `score(text)` is the
    probability of the positive class and `logit(texts)` the raw decision values."""

    def __init__(
        self,
        *,
        n_features: int = 2**18,
        word_ngrams: Sequence[int] = (1, 2),
        char_ngrams: Sequence[int] = (4,),
        l2: float = 1e-3,
        max_iter: int = 100,
    ) -> None:
        self.n_features = n_features
        self.word_ngrams, self.char_ngrams = list(word_ngrams), list(char_ngrams)
        self.l2, self.max_iter = l2, max_iter
        self.w = np.zeros(n_features, dtype=np.float64)
        self.b = 0.0
        self.logit_mean, self.logit_std = 0.0, 1.0

    # ---- features ---------------------------------------------------------------------------
    def _hashes(self, text: str) -> np.ndarray:
        parts = []
        if self.word_ngrams:
            th = token_hashes(words(text))
            parts += [ngram_hashes(th, n) for n in self.word_ngrams if len(th) >= n]
        parts += [char_ngram_hashes(text, n) ^ _CHAR_SALT for n in self.char_ngrams]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.uint64)

    def features(self, texts: Sequence[str]) -> sp.csr_matrix:
        """(len(texts), n_features) CSR matrix of signed log-counts, rows L2-normalized."""
        indptr = [0]
        indices: list[np.ndarray] = []
        values: list[np.ndarray] = []
        for text in texts:
            h = self._hashes(text)
            signed = (h % np.uint64(self.n_features)).astype(np.int64) * np.where(h >> np.uint64(63), -1, 1)
            uniq, counts = np.unique(signed, return_counts=True)
            # Buckets reached with both signs keep their own entries; summed by the CSR constructor.
            col = np.abs(uniq)
            val = np.sign(uniq + 0.5) * np.log1p(counts)
            norm = np.sqrt(np.sum(val**2)) or 1.0
            indices.append(col)
            values.append(val / norm)
            indptr.append(indptr[-1] + len(col))
        x = sp.csr_matrix(
            (
                np.concatenate(values) if values else np.empty(0),
                np.concatenate(indices) if indices else np.empty(0, int),
                indptr,
            ),
            shape=(len(texts), self.n_features),
        )
        x.sum_duplicates()
        return x

    # ---- training ---------------------------------------------------------------------------
    def fit(self, positive: Sequence[str], negative: Sequence[str]) -> QualityScorer:
        if not positive or not negative:
            raise ValueError("quality scorer: need at least one positive and one negative example")
        x = self.features(list(positive) + list(negative))
        y = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
        n = len(y)
        xt = x.T.tocsr()

        def loss_grad(params: np.ndarray) -> tuple[float, np.ndarray]:
            w, b = params[:-1], params[-1]
            z = x @ w + b
            # log(1 + e^z) - y z, computed stably.
            loss = np.sum(np.logaddexp(0.0, z) - y * z) / n + 0.5 * self.l2 * w @ w
            r = (1.0 / (1.0 + np.exp(-z)) - y) / n
            return loss, np.r_[xt @ r + self.l2 * w, r.sum()]

        res = scipy.optimize.minimize(
            loss_grad,
            np.zeros(self.n_features + 1),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": self.max_iter},
        )
        self.w, self.b = res.x[:-1], float(res.x[-1])
        train_logits = x @ self.w + self.b
        self.logit_mean = float(train_logits.mean())
        self.logit_std = float(train_logits.std()) or 1.0
        return self

    @classmethod
    def train_from_files(
        cls, positive: str, negative: str, *, text_field: str = "text", **kwargs: object
    ) -> QualityScorer:
        """Fit from two local files (jsonl with `text_field`, or one example per line)."""
        return cls(**kwargs).fit(read_eval_items(positive, text_field), read_eval_items(negative, text_field))  # type: ignore[arg-type]

    # ---- scoring ----------------------------------------------------------------------------
    def logit(self, texts: Sequence[str]) -> np.ndarray:
        return self.features(texts) @ self.w + self.b

    def normalized(self, texts: Sequence[str]) -> np.ndarray:
        """Logits standardized by the training-set logit mean/std (comparable across scorers)."""
        return (self.logit(texts) - self.logit_mean) / self.logit_std

    def score(self, text: str) -> float:
        return float(1.0 / (1.0 + np.exp(-self.logit([text])[0])))

    # ---- persistence ------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        config = {
            "n_features": self.n_features,
            "word_ngrams": self.word_ngrams,
            "char_ngrams": self.char_ngrams,
        }
        config |= {"l2": self.l2, "max_iter": self.max_iter}
        stats = np.array([self.b, self.logit_mean, self.logit_std])
        with open(path, "wb") as f:
            np.savez_compressed(
                f, w=self.w.astype(np.float32), stats=stats, config=np.array(json.dumps(config))
            )

    @classmethod
    def load(cls, path: str | Path) -> QualityScorer:
        with np.load(path) as data:
            scorer = cls(**json.loads(str(data["config"])))
            scorer.w = data["w"].astype(np.float64)
            scorer.b, scorer.logit_mean, scorer.logit_std = (float(v) for v in data["stats"])
        return scorer


class QualityFilter(FilterStage):
    """Score documents with one or more `QualityScorer`s and filter and/or bucket them.

    Args:
        model_paths: saved scorers (`QualityScorer.save`), or pass `scorers` directly.
        weights: one weight per scorer (default equal); the combined score is the weighted mean.
        normalize: combine standardized logits (Meta-rater style) instead of probabilities;
            default True when there are several scorers, False for one (score = probability).
        threshold: drop documents whose combined score is below it (reason "quality_low");
            None keeps everything.
        bucket_edges: ascending edges; `meta["quality_bucket"]` = number of edges <= score.
        hist_bins: bins of the score histogram in the report, over [0, 1] for probabilities or
            [-4, 4] for normalized scores (values outside are clipped into the end bins).
    """

    name = "quality"

    def __init__(
        self,
        *,
        model_paths: list[str] | None = None,
        scorers: list[QualityScorer] | None = None,
        weights: list[float] | None = None,
        normalize: bool | None = None,
        threshold: float | None = 0.5,
        bucket_edges: list[float] | None = None,
        hist_bins: int = 20,
        name: str | None = None,
        max_examples: int = 5,
    ) -> None:
        super().__init__(name=name, max_examples=max_examples)
        self.scorers = list(scorers or []) + [QualityScorer.load(p) for p in (model_paths or [])]
        if not self.scorers:
            raise ValueError("quality: give model_paths (saved QualityScorer files) or scorers")
        self.weights = np.asarray(
            weights if weights is not None else [1.0] * len(self.scorers), dtype=np.float64
        )
        if len(self.weights) != len(self.scorers) or self.weights.sum() <= 0:
            raise ValueError("quality: weights must have one positive-sum entry per scorer")
        self.normalize = len(self.scorers) > 1 if normalize is None else normalize
        self.threshold = threshold
        self.bucket_edges = sorted(bucket_edges) if bucket_edges else None
        self.hist_range = (-4.0, 4.0) if self.normalize else (0.0, 1.0)
        self.hist_bins = hist_bins

    def combined_score(self, text: str) -> float:
        if self.normalize:
            scores = [s.normalized([text])[0] for s in self.scorers]
        else:
            scores = [s.score(text) for s in self.scorers]
        return float(np.dot(self.weights, scores) / self.weights.sum())

    def _histogram(self, score: float) -> None:
        lo, hi = self.hist_range
        width = (hi - lo) / self.hist_bins
        k = min(max(int((score - lo) // width), 0), self.hist_bins - 1)
        key = f"[{lo + k * width:+.2f},{lo + (k + 1) * width:+.2f})"
        hist = self.report.extra.setdefault("score_histogram", {})
        hist[key] = hist.get(key, 0) + 1
        self.report.extra["score_sum"] = self.report.extra.get("score_sum", 0.0) + score
        self.report.extra["score_count"] = self.report.extra.get("score_count", 0) + 1

    def apply(self, doc: Doc) -> Doc | str:
        score = self.combined_score(doc["text"])
        self._histogram(score)
        if self.threshold is not None and score < self.threshold:
            return "quality_low"
        meta = {**(doc.get("meta") or {}), "quality_score": round(score, 5)}
        if self.bucket_edges is not None:
            meta["quality_bucket"] = int(np.searchsorted(self.bucket_edges, score, side="right"))
        return {**doc, "meta": meta}
