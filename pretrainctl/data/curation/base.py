"""Document model, stage protocol and per-stage reports shared by every curation stage.

A document is a plain dict (`Doc`) with keys `id`, `text`, `source` and optionally `meta` (a dict),
so that it pickles cheaply to worker processes and round-trips through jsonl/parquet unchanged.

A stage is a callable `stage(docs) -> Iterator[Doc]` that streams the kept documents and records
what it saw and removed in `stage.report` (`StageReport`). Stages with `global_view = True` (the
deduplicators) must see the whole corpus before deciding; the pipeline runs them in its final,
single-process pass (see `pipeline.py`). All other stages are per-document and run inside workers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

Doc = dict[str, Any]

_MAX_LIST_EXTRA = 50  # cap on list-valued report extras after merging (e.g. contaminated doc ids)


def doc_bytes(doc: Doc) -> int:
    """UTF-8 size of a document's text (the unit of the bytes in/out columns)."""
    return len(doc["text"].encode("utf-8", errors="replace"))


def _merge_extra(into: dict[str, Any], other: dict[str, Any]) -> None:
    """Merge report extras: numbers add, dicts merge recursively, lists concatenate (capped)."""
    for key, value in other.items():
        if key not in into:
            into[key] = value if not isinstance(value, dict) else _copy_dict(value)
            continue
        mine = into[key]
        if isinstance(mine, dict) and isinstance(value, dict):
            _merge_extra(mine, value)
        elif isinstance(mine, bool) or isinstance(value, bool):
            continue
        elif isinstance(mine, (int, float)) and isinstance(value, (int, float)):
            into[key] = mine + value
        elif isinstance(mine, list) and isinstance(value, list):
            into[key] = (mine + value)[:_MAX_LIST_EXTRA]


def _copy_dict(d: dict[str, Any]) -> dict[str, Any]:
    return {
        k: _copy_dict(v) if isinstance(v, dict) else (list(v) if isinstance(v, list) else v)
        for k, v in d.items()
    }


@dataclass
class StageReport:
    """What one stage saw and removed: documents and bytes in/out, removal counts per reason,
    up to `max_examples` removed documents (text truncated to `example_chars`), and stage-specific
    `extra` figures (histograms, throughput, contaminated items). Reports from shards merge with
    `merge`, so a pipeline run over many workers yields one report per stage."""

    name: str
    docs_in: int = 0
    docs_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, str]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    max_examples: int = 5
    example_chars: int = 300

    @property
    def docs_removed(self) -> int:
        return sum(self.reasons.values())

    def record_in(self, doc: Doc) -> None:
        self.docs_in += 1
        self.bytes_in += doc_bytes(doc)

    def record_out(self, doc: Doc) -> None:
        self.docs_out += 1
        self.bytes_out += doc_bytes(doc)

    def record_removed(self, doc: Doc, reason: str) -> None:
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        if len(self.examples) < self.max_examples:
            text = doc["text"]
            if len(text) > self.example_chars:
                text = text[: self.example_chars] + "…"
            self.examples.append(
                {"id": str(doc["id"]), "source": str(doc.get("source", "")), "reason": reason, "text": text}
            )

    def merge(self, other: StageReport) -> None:
        """Add another report of the same stage (e.g. from another shard) into this one."""
        self.docs_in += other.docs_in
        self.docs_out += other.docs_out
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        for reason, count in other.reasons.items():
            self.reasons[reason] = self.reasons.get(reason, 0) + count
        room = self.max_examples - len(self.examples)
        if room > 0:
            self.examples.extend(other.examples[:room])
        _merge_extra(self.extra, other.extra)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageReport:
        return cls(**d)


class Stage:
    """Base class of every curation stage.

    Subclasses set `name` (used as the report key) and implement `__call__`, which must stream:
    it pulls documents one at a time and yields kept ones, holding only bounded state (the
    deduplicators keep per-document signatures, never texts).
    """

    name: str = "stage"
    #: True when the stage must see every document before deciding (runs in the pipeline's
    #: global pass, in the parent process, after the per-shard stages).
    global_view: bool = False

    def __init__(self, *, name: str | None = None, max_examples: int = 5) -> None:
        if name is not None:
            self.name = name
        self.max_examples = max_examples
        self.report = StageReport(self.name, max_examples=max_examples)

    def reset_report(self) -> StageReport:
        """Return the current report and start a fresh one (used per shard by the pipeline)."""
        report, self.report = self.report, StageReport(self.name, max_examples=self.max_examples)
        return report

    def __call__(self, docs: Iterable[Doc]) -> Iterator[Doc]:
        raise NotImplementedError


class FilterStage(Stage):
    """A per-document stage: `apply(doc)` returns the (possibly rewritten) document to keep, or a
    removal reason string to drop it."""

    def apply(self, doc: Doc) -> Doc | str:
        raise NotImplementedError

    def __call__(self, docs: Iterable[Doc]) -> Iterator[Doc]:
        report = self.report
        for doc in docs:
            report.record_in(doc)
            result = self.apply(doc)
            if isinstance(result, str):
                report.record_removed(doc, result)
            else:
                report.record_out(result)
                yield result
