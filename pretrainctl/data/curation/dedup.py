"""Exact and MinHash near-duplicate removal.

- `ExactDedup`: keeps the first document of every group with identical normalized content
  (NFKC, lower case, whitespace collapsed), hashed with blake2b-128. One streaming pass; memory is
  one 16-byte digest per distinct document.
- `MinHashDedup`: MinHash signatures (Broder 1997, "On the resemblance and containment of
  documents") over word or byte n-gram shingles, locality-sensitive hashing with `bands` x `rows`
  banding (Leskovec, Rajaraman & Ullman, "Mining of Massive Datasets", ch. 3), candidate pairs
  verified by the signature-estimated Jaccard >= `threshold`, clusters built with union-find, one
  document kept per cluster. This is the recipe of Lee et al. 2022 ("Deduplicating training data
  makes language models better") and of the FineWeb/datatrove near-dedup.

Near-dedup needs every signature before it can decide, so it runs in two passes over the input:
pass 1 computes and stores only signatures (`num_perm` uint32 per document, i.e. memory
O(num_docs x num_perm x 4 bytes) plus the ids), pass 2 re-reads the documents and yields the kept
ones. Given a one-shot iterator, `__call__` spills the documents to a temporary jsonl file for the
second pass; given a re-iterable (a list, or the pipeline's shard reader), it simply iterates twice.

Hashing is vectorized: one uint64 hash per shingle, then all `num_perm` permutations at once with
multiply-shift hashing `(a * x + b) >> 32` (a odd, uint64 wrap-around), minimum over shingles.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from typing import Literal

import numpy as np

from pretrainctl.data.curation.base import Doc, Stage
from pretrainctl.data.curation.hashing import char_ngram_hashes, mix64, normalize, word_ngram_hashes

_BLOCK = 4096  # signatures per storage block in pass 1
_ROWS_PER_CHUNK = 4096  # shingles hashed at once: bounds the (shingles x num_perm) temporary to ~4 MB


class ExactDedup(Stage):
    """Drop documents whose normalized content was already seen (keeps the first; reason
    "exact_duplicate"). Runs in the pipeline's global pass so duplicates across shards are found."""

    name = "exact_dedup"
    global_view = True

    def __init__(
        self, *, normalize_text: bool = True, name: str | None = None, max_examples: int = 5
    ) -> None:
        super().__init__(name=name, max_examples=max_examples)
        self.normalize_text = normalize_text

    def digest(self, text: str) -> bytes:
        content = normalize(text) if self.normalize_text else text
        return hashlib.blake2b(content.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def __call__(self, docs: Iterable[Doc]) -> Iterator[Doc]:
        seen: set[bytes] = set()
        report = self.report
        for doc in docs:
            report.record_in(doc)
            key = self.digest(doc["text"])
            if key in seen:
                report.record_removed(doc, "exact_duplicate")
                continue
            seen.add(key)
            report.record_out(doc)
            yield doc


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # The smaller index becomes the root, so roots are deterministic.
            self.parent[max(ra, rb)] = min(ra, rb)


class MinHashDedup(Stage):
    """MinHash + LSH near-duplicate removal (reason "near_duplicate").

    Args:
        ngram: shingle size (words for `shingle="word"`, UTF-8 bytes for `shingle="char"`).
        shingle: "word" (normalized `\\w+` tokens) or "char".
        num_perm: number of hash permutations (signature length); `bands * rows <= num_perm`, the
            LSH uses the first `bands * rows` entries, verification all of them.
        bands, rows: LSH banding. A pair with Jaccard s becomes a candidate with probability
            1 - (1 - s^rows)^bands; the default 21 x 6 gives 0.998 at s = 0.8, 0.93 at s = 0.7 and
            0.28 at s = 0.5 (16 x 8 would give only 0.96 at s = 0.8).
        threshold: candidates are merged when their estimated Jaccard (share of equal signature
            entries) is >= threshold. The estimate has standard deviation sqrt(s(1-s)/num_perm),
            0.035 at s = 0.8 with 128 permutations, so a threshold equal to the target Jaccard finds
            only about half of the pairs sitting at the target: the default 0.75 (target 0.8 minus
            ~1.5 sigma) found 98-100% of injected pairs with true Jaccard >= 0.8 (the test in
            tests/data/curation/test_pipeline.py; median true Jaccard 0.85).
        keep: which document of a cluster survives: "first" (earliest in the stream), "min_id"
            (lexicographically smallest id) or "longest" (most characters; ties -> earliest).
        cross_source: record in the kept document's `meta["sources"]` the sorted sources of all
            documents of its cluster (cross-source overlap as a quality signal).
        max_compare: a document colliding in a large bucket is verified against at most this many
            earlier members of the bucket (bounds work on degenerate buckets).
        seed: seed of the permutation parameters.
        spill_dir: where a one-shot input is spilled for the second pass (default: system temp).
    """

    name = "minhash_dedup"
    global_view = True

    def __init__(
        self,
        *,
        ngram: int = 5,
        shingle: Literal["word", "char"] = "word",
        num_perm: int = 128,
        bands: int = 21,
        rows: int = 6,
        threshold: float = 0.75,
        keep: Literal["first", "min_id", "longest"] = "first",
        cross_source: bool = False,
        max_compare: int = 64,
        seed: int = 1,
        spill_dir: str | None = None,
        name: str | None = None,
        max_examples: int = 5,
    ) -> None:
        super().__init__(name=name, max_examples=max_examples)
        if bands * rows > num_perm:
            raise ValueError(
                f"minhash_dedup: bands * rows ({bands} * {rows}) must be <= num_perm ({num_perm})"
            )
        if shingle not in ("word", "char"):
            raise ValueError(f"minhash_dedup: shingle must be 'word' or 'char', got {shingle!r}")
        if keep not in ("first", "min_id", "longest"):
            raise ValueError(f"minhash_dedup: keep must be 'first', 'min_id' or 'longest', got {keep!r}")
        self.ngram, self.shingle, self.num_perm = ngram, shingle, num_perm
        self.bands, self.rows, self.threshold = bands, rows, threshold
        self.keep, self.cross_source, self.max_compare = keep, cross_source, max_compare
        self.spill_dir = spill_dir
        rng = np.random.default_rng(seed)
        self._a = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self._b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
        self._keep_mask: np.ndarray | None = None
        self._ids: list[str] = []
        self._cluster_sources: dict[int, list[str]] = {}
        self._root: np.ndarray | None = None

    # ---- signatures -------------------------------------------------------------------------
    def shingles(self, text: str) -> np.ndarray:
        if self.shingle == "word":
            return np.unique(word_ngram_hashes(text, self.ngram))
        return np.unique(char_ngram_hashes(text, self.ngram))

    def signature(self, text: str) -> np.ndarray:
        """MinHash signature, (num_perm,) uint32. An empty document gets all-ones."""
        sh = self.shingles(text)
        sig = np.full(self.num_perm, np.iinfo(np.uint32).max, dtype=np.uint32)
        for start in range(0, len(sh), _ROWS_PER_CHUNK):
            x = sh[start : start + _ROWS_PER_CHUNK, None]
            hashed = ((x * self._a[None, :] + self._b[None, :]) >> np.uint64(32)).astype(np.uint32)
            np.minimum(sig, hashed.min(axis=0), out=sig)
        return sig

    @staticmethod
    def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
        return float(np.mean(sig_a == sig_b))

    # ---- pass 1 -----------------------------------------------------------------------------
    def fit(self, docs: Iterable[Doc]) -> None:
        """First pass: compute signatures (only) and decide which documents survive."""
        t0 = time.perf_counter()
        blocks: list[np.ndarray] = []  # (_BLOCK, num_perm) uint32 blocks: no per-document array objects
        block = np.empty((_BLOCK, self.num_perm), dtype=np.uint32)
        filled = 0
        ids: list[str] = []
        lengths: list[int] = []
        source_idx: list[int] = []
        source_names: dict[str, int] = {}
        nbytes = 0
        for doc in docs:
            text = doc["text"]
            if filled == _BLOCK:
                blocks.append(block)
                block, filled = np.empty((_BLOCK, self.num_perm), dtype=np.uint32), 0
            block[filled] = self.signature(text)
            filled += 1
            ids.append(str(doc["id"]))
            lengths.append(len(text))
            nbytes += len(text.encode("utf-8", "replace"))
            if self.cross_source:
                source_idx.append(source_names.setdefault(str(doc.get("source", "")), len(source_names)))
        t_sig = time.perf_counter() - t0
        n = len(ids)
        sig = np.concatenate([*blocks, block[:filled]])
        del blocks, block
        uf, candidates, verified = self._cluster(sig)
        root = np.fromiter((uf.find(i) for i in range(n)), dtype=np.int64, count=n)
        keep = self._choose(root, ids, lengths)
        self._keep_mask, self._ids, self._root = keep, ids, root
        if self.cross_source:
            names = {i: s for s, i in source_names.items()}
            members: dict[int, set[str]] = {}
            for i in range(n):
                members.setdefault(int(root[i]), set()).add(names[source_idx[i]])
            self._cluster_sources = {r: sorted(s) for r, s in members.items()}
        elapsed = time.perf_counter() - t0
        self.report.extra.update(
            {
                "candidate_pairs": candidates,
                "verified_pairs": verified,
                "clusters_with_duplicates": int(np.sum(np.bincount(root) > 1)) if n else 0,
                "signature_seconds": round(t_sig, 3),
                "total_seconds": round(elapsed, 3),
                "docs_per_s": round(n / max(elapsed, 1e-9), 1),
                "mb_per_s": round(nbytes / 1e6 / max(elapsed, 1e-9), 2),
                "signature_mb": round(sig.nbytes / 1e6, 2),
            }
        )

    def _cluster(self, sig: np.ndarray) -> tuple[_UnionFind, int, int]:
        n = len(sig)
        uf = _UnionFind(n)
        candidates = verified = 0
        if n < 2:
            return uf, 0, 0
        for band in range(self.bands):
            block = sig[:, band * self.rows : (band + 1) * self.rows].astype(np.uint64)
            key = np.zeros(n, dtype=np.uint64)
            for j in range(self.rows):
                key = mix64(key ^ block[:, j])
            key = key + np.uint64(band)
            order = np.argsort(key, kind="stable")
            sorted_key = key[order]
            starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
            ends = np.r_[starts[1:], n]
            for s, e in zip(starts[ends - starts > 1], ends[ends - starts > 1]):
                members = order[s:e]  # ascending stream position (stable sort)
                for i in range(1, len(members)):
                    doc = int(members[i])
                    prev = members[max(0, i - self.max_compare) : i]
                    root = uf.find(doc)
                    prev = np.array([p for p in prev if uf.find(int(p)) != root], dtype=np.int64)
                    if len(prev) == 0:
                        continue
                    candidates += len(prev)
                    est = np.mean(sig[prev] == sig[doc][None, :], axis=1)
                    for p in prev[est >= self.threshold]:
                        verified += 1
                        uf.union(doc, int(p))
        return uf, candidates, verified

    def _choose(self, root: np.ndarray, ids: list[str], lengths: list[int]) -> np.ndarray:
        n = len(root)
        keep = np.ones(n, dtype=bool)
        counts = np.bincount(root, minlength=n) if n else np.zeros(0, dtype=np.int64)
        clusters: dict[int, list[int]] = {}
        for i in np.flatnonzero(counts[root] > 1):
            clusters.setdefault(int(root[i]), []).append(int(i))
        for members in clusters.values():
            if self.keep == "first":
                winner = members[0]
            elif self.keep == "min_id":
                winner = min(members, key=lambda i: (ids[i], i))
            else:
                winner = min(members, key=lambda i: (-lengths[i], i))
            keep[members] = False
            keep[winner] = True
        return keep

    # ---- pass 2 -----------------------------------------------------------------------------
    def filter(self, docs: Iterable[Doc]) -> Iterator[Doc]:
        """Second pass over the same documents in the same order: yield the kept ones."""
        if self._keep_mask is None or self._root is None:
            raise RuntimeError("minhash_dedup: call fit() before filter()")
        report = self.report
        count = 0
        for i, doc in enumerate(docs):
            count += 1
            if i >= len(self._ids) or str(doc["id"]) != self._ids[i]:
                raise RuntimeError("minhash_dedup: the second pass saw different documents than fit()")
            report.record_in(doc)
            if not self._keep_mask[i]:
                report.record_removed(doc, "near_duplicate")
                continue
            if self.cross_source:
                doc = {
                    **doc,
                    "meta": {**(doc.get("meta") or {}), "sources": self._cluster_sources[int(self._root[i])]},
                }
            report.record_out(doc)
            yield doc
        if count != len(self._ids):
            raise RuntimeError("minhash_dedup: the second pass saw fewer documents than fit()")

    def __call__(self, docs: Iterable[Doc]) -> Iterator[Doc]:
        if iter(docs) is not docs:  # re-iterable: read it twice
            self.fit(docs)
            yield from self.filter(docs)
            return
        fd, path = tempfile.mkstemp(prefix="minhash_spill_", suffix=".jsonl", dir=self.spill_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as spill:

                def tee() -> Iterator[Doc]:
                    for doc in docs:
                        spill.write(json.dumps(doc, ensure_ascii=False) + "\n")
                        yield doc

                self.fit(tee())
            yield from self.filter(_read_jsonl(path))
        finally:
            os.unlink(path)


def _read_jsonl(path: str) -> Iterator[Doc]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)
