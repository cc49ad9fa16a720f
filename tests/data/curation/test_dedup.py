"""Exact dedup, MinHash signatures against a plain reference, LSH clustering and keep policies."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

from pretrainctl.data.curation.base import Doc
from pretrainctl.data.curation.dedup import ExactDedup, MinHashDedup

WORDS = [f"w{i}" for i in range(2000)]


def text_of(rng: random.Random, n: int = 300) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def test_exact_dedup_normalizes_case_whitespace_and_nfkc() -> None:
    docs: list[Doc] = [
        {"id": "a", "text": "Hello   World\n", "source": "s"},
        {"id": "b", "text": "hello world", "source": "s"},
        {"id": "c", "text": "ＨＥＬＬＯ world", "source": "s"},  # full-width letters: NFKC -> HELLO
        {"id": "d", "text": "hello there world", "source": "s"},
    ]
    stage = ExactDedup()
    assert [d["id"] for d in stage(docs)] == ["a", "d"]
    assert stage.report.reasons == {"exact_duplicate": 2}
    assert [d["id"] for d in ExactDedup(normalize_text=False)(docs)] == ["a", "b", "c", "d"]


def test_minhash_estimate_matches_reference_jaccard() -> None:
    """The signature agreement rate is an unbiased estimate of the true shingle Jaccard."""
    rng = random.Random(0)
    stage = MinHashDedup(num_perm=512, bands=64, rows=8)
    errors = []
    for _ in range(20):
        a = text_of(rng).split()
        b = list(a)
        for i in rng.sample(range(len(b)), rng.randint(5, 60)):
            b[i] = rng.choice(WORDS)
        ga = {tuple(a[i : i + 5]) for i in range(len(a) - 4)}
        gb = {tuple(b[i : i + 5]) for i in range(len(b) - 4)}
        true = len(ga & gb) / len(ga | gb)
        est = stage.estimated_jaccard(stage.signature(" ".join(a)), stage.signature(" ".join(b)))
        errors.append(est - true)
    # std of the estimate is <= sqrt(0.25 / 512) = 0.022; the mean error over 20 pairs is ~0.005.
    assert np.max(np.abs(errors)) < 0.09
    assert abs(np.mean(errors)) < 0.02


def test_minhash_clusters_and_keep_policies() -> None:
    rng = random.Random(1)
    base = [text_of(rng) for _ in range(30)]
    docs: list[Doc] = [{"id": f"d{i:02d}", "text": t, "source": "a"} for i, t in enumerate(base)]
    # Near copies of docs 3 and 7 (two word substitutions each), the longer one first for doc 3.
    w3 = base[3].split()
    w3[100] = "zzz"
    dup3 = " ".join(w3) + " extra words appended here"
    w7 = base[7].split()
    w7[50] = "yyy"
    docs.insert(0, {"id": "x3", "text": dup3, "source": "b"})
    docs.append({"id": "a7", "text": " ".join(w7), "source": "b"})

    first = MinHashDedup()
    assert {d["id"] for d in docs} - {d["id"] for d in first(docs)} == {"d03", "a7"}
    assert first.report.reasons == {"near_duplicate": 2}
    assert first.report.extra["clusters_with_duplicates"] == 2
    min_id = MinHashDedup(keep="min_id")
    assert {d["id"] for d in docs} - {d["id"] for d in min_id(docs)} == {"x3", "d07"}
    longest = MinHashDedup(keep="longest", cross_source=True)
    kept = {d["id"]: d for d in longest(iter(docs))}  # one-shot iterator: spilled to disk
    assert "x3" in kept and "d03" not in kept
    assert kept["x3"]["meta"]["sources"] == ["a", "b"] and kept["d00"]["meta"]["sources"] == ["a"]


def test_minhash_char_shingles_and_dissimilar_docs_survive() -> None:
    rng = random.Random(2)
    docs: list[Doc] = [{"id": str(i), "text": text_of(rng), "source": "s"} for i in range(50)]
    stage = MinHashDedup(shingle="char", ngram=8)
    assert len(list(stage(docs))) == 50


def test_minhash_second_pass_must_match_first() -> None:
    stage = MinHashDedup()
    stage.fit([{"id": "a", "text": "x y z", "source": "s"}])
    with pytest.raises(RuntimeError, match="different documents"):
        list(stage.filter([{"id": "b", "text": "x y z", "source": "s"}]))


def test_minhash_rejects_bad_banding() -> None:
    with pytest.raises(ValueError, match="num_perm"):
        MinHashDedup(num_perm=64, bands=16, rows=8)


def test_word_tokenization_matches_regex_reference() -> None:
    from pretrainctl.data.curation.hashing import words

    text = "Déjà vu: self.x_1 = foo(BAR) + ﬁ"  # the ligature ﬁ becomes "fi" under NFKC
    assert words(text) == re.findall(r"\w+", "déjà vu: self.x_1 = foo(bar) + fi")
