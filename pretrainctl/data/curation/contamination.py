"""Benchmark contamination: word n-gram overlap between training documents and evaluation sets.

Follows the n-gram overlap test of GPT-3 (Brown et al. 2020, appendix C: 13-gram collisions after
normalization) as used in later decontamination work (e.g. OLMo/Dolma, Llama 2 section A.6): text
is NFKC-normalized, lower-cased and reduced to `\\w+` words; every word n-gram (default n = 13) of
every evaluation item is hashed (64-bit) into a sorted index; a training document is contaminated
when at least `min_hits` of its n-grams are in the index. Items shorter than n words cannot be
matched this way and are counted in `ContaminationIndex.too_short`.

Evaluation sets are local files: `.jsonl` (one JSON object per line, text in `text_field`; several
fields can be joined with `text_field="question,answer"`) or anything else read as text with one
item per non-empty line. The benchmark name is the file stem unless `names` is given.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from pretrainctl.data.curation.base import Doc, FilterStage
from pretrainctl.data.curation.hashing import word_ngram_hashes, words


def read_eval_items(path: str | Path, text_field: str = "text") -> list[str]:
    """Items of one evaluation file (jsonl with `text_field`, or one item per line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"contamination: evaluation file {str(path)!r} does not exist")
    items: list[str] = []
    fields = [f.strip() for f in text_field.split(",")]
    with path.open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            if path.suffix == ".jsonl":
                obj = json.loads(line)
                items.append("\n".join(str(obj[k]) for k in fields if k in obj))
            else:
                items.append(line.rstrip("\n"))
    return items


class ContaminationIndex:
    """Hashed word n-grams of evaluation items, with the items each n-gram came from."""

    def __init__(self, n: int = 13) -> None:
        self.n = n
        self.benchmarks: list[str] = []
        self.num_items: dict[str, int] = {}
        self.too_short: dict[str, int] = {}
        self._parts_keys: list[np.ndarray] = []
        self._parts_refs: list[np.ndarray] = []
        self._keys = np.empty(0, dtype=np.uint64)
        self._refs = np.empty(0, dtype=np.int64)

    def add(self, benchmark: str, items: Iterable[str]) -> None:
        bench_idx = len(self.benchmarks)
        self.benchmarks.append(benchmark)
        count = short = 0
        for item_idx, item in enumerate(items):
            count += 1
            if len(words(item)) < self.n:
                short += 1
                continue
            keys = np.unique(word_ngram_hashes(item, self.n))
            self._parts_keys.append(keys)
            self._parts_refs.append(np.full(len(keys), (bench_idx << 32) | item_idx, dtype=np.int64))
        self.num_items[benchmark] = count
        self.too_short[benchmark] = short
        keys = np.concatenate([self._keys, *self._parts_keys])
        refs = np.concatenate([self._refs, *self._parts_refs])
        order = np.argsort(keys, kind="stable")
        self._keys, self._refs = keys[order], refs[order]
        self._parts_keys, self._parts_refs = [], []

    @classmethod
    def from_files(
        cls, paths: list[str], *, n: int = 13, text_field: str = "text", names: list[str] | None = None
    ) -> ContaminationIndex:
        if names is not None and len(names) != len(paths):
            raise ValueError("contamination: names must have one entry per evaluation file")
        index = cls(n)
        for i, path in enumerate(paths):
            index.add(names[i] if names else Path(path).stem, read_eval_items(path, text_field))
        return index

    @property
    def num_ngrams(self) -> int:
        return len(self._keys)

    def find(self, text: str, min_hits: int = 1) -> dict[str, list[int]]:
        """Benchmark -> sorted item indices whose n-grams occur in `text` (at least `min_hits`
        distinct matching n-grams in total for the document to count)."""
        if not len(self._keys):
            return {}
        grams = np.unique(word_ngram_hashes(text, self.n))
        hits = grams[np.isin(grams, self._keys, assume_unique=False)]
        if len(hits) < min_hits or not len(hits):
            return {}
        lo = np.searchsorted(self._keys, hits, side="left")
        hi = np.searchsorted(self._keys, hits, side="right")
        refs = np.unique(np.concatenate([self._refs[a:b] for a, b in zip(lo, hi)]))
        out: dict[str, list[int]] = {}
        for ref in refs.tolist():
            out.setdefault(self.benchmarks[ref >> 32], []).append(ref & 0xFFFFFFFF)
        return out


class ContaminationFilter(FilterStage):
    """Drop (or, with `drop=False`, tag in `meta["contamination"]`) training documents that share
    an n-gram with an evaluation item. Removal reason: "contamination:<benchmark>" (the first
    benchmark in file order when a document hits several).

    The report's `extra` holds `items_hit` (benchmark -> item index -> documents hitting it),
    `contaminated_docs` (up to 50 `{id, items}` records) and `contaminated_docs_count`. The index is built
    lazily from `eval_files`, so each worker process builds its own copy (eval sets are small).
    """

    name = "contamination"

    def __init__(
        self,
        *,
        eval_files: list[str],
        n: int = 13,
        text_field: str = "text",
        names: list[str] | None = None,
        min_hits: int = 1,
        drop: bool = True,
        name: str | None = None,
        max_examples: int = 5,
    ) -> None:
        super().__init__(name=name, max_examples=max_examples)
        if not eval_files:
            raise ValueError("contamination: eval_files must list at least one evaluation file")
        self.eval_files = [str(p) for p in eval_files]
        self.n, self.text_field, self.names = n, text_field, names
        self.min_hits, self.drop = min_hits, drop
        self._index: ContaminationIndex | None = None

    @property
    def index(self) -> ContaminationIndex:
        if self._index is None:
            self._index = ContaminationIndex.from_files(
                self.eval_files, n=self.n, text_field=self.text_field, names=self.names
            )
        return self._index

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state["_index"] = None  # rebuilt in the worker rather than pickled
        return state

    def apply(self, doc: Doc) -> Doc | str:
        index = self.index
        extra = self.report.extra
        hits = index.find(doc["text"], self.min_hits)
        if not hits:
            return doc
        items_hit = extra.setdefault("items_hit", {})
        for bench, items in hits.items():
            per_bench = items_hit.setdefault(bench, {})
            for item in items:
                per_bench[str(item)] = per_bench.get(str(item), 0) + 1
        records = extra.setdefault("contaminated_docs", [])
        if len(records) < 50:
            records.append({"id": str(doc["id"]), "items": {b: list(v) for b, v in hits.items()}})
        extra["contaminated_docs_count"] = extra.get("contaminated_docs_count", 0) + 1
        if self.drop:
            first = next(b for b in index.benchmarks if b in hits)
            return f"contamination:{first}"
        return {**doc, "meta": {**(doc.get("meta") or {}), "contamination": hits}}
