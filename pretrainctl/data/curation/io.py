"""Reading and writing curated document shards (parquet via pyarrow, or jsonl).

Parquet shards have string columns `id`, `text`, `source` and `meta` (the meta dict as JSON, so
the schema is fixed whatever the stages put there). Writes are atomic: temp file, then rename.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq

from pretrainctl.data.curation.base import Doc

_SCHEMA = pa.schema(
    [("id", pa.string()), ("text", pa.string()), ("source", pa.string()), ("meta", pa.string())]
)


def write_docs(docs: Iterable[Doc], path: Path, fmt: Literal["parquet", "jsonl"]) -> int:
    """Write documents to `path` atomically; returns the number written."""
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    if fmt == "jsonl":
        with tmp.open("w", encoding="utf-8") as f:
            for doc in docs:
                f.write(json.dumps(doc, ensure_ascii=False) + "\n")
                count += 1
    else:
        cols: dict[str, list[str]] = {"id": [], "text": [], "source": [], "meta": []}
        for doc in docs:
            cols["id"].append(str(doc["id"]))
            cols["text"].append(doc["text"])
            cols["source"].append(str(doc.get("source", "")))
            cols["meta"].append(json.dumps(doc.get("meta") or {}, ensure_ascii=False))
            count += 1
        pq.write_table(pa.table(cols, schema=_SCHEMA), tmp)
    os.replace(tmp, path)
    return count


def read_docs(path: Path | str) -> Iterator[Doc]:
    """Documents of one shard file (.parquet or .jsonl)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)
        return
    pf = pq.ParquetFile(path)
    for batch in pf.iter_batches(batch_size=1024):
        d = batch.to_pydict()
        for i in range(batch.num_rows):
            doc: Doc = {"id": d["id"][i], "text": d["text"][i], "source": d["source"][i]}
            meta = json.loads(d["meta"][i]) if d["meta"][i] else {}
            if meta:
                doc["meta"] = meta
            yield doc


class ShardReader:
    """A re-iterable stream over shard files in order (each `iter()` starts from the first file)."""

    def __init__(self, files: list[Path]) -> None:
        self.files = list(files)

    def __iter__(self) -> Iterator[Doc]:
        for f in self.files:
            yield from read_docs(f)


def read_curated(out_dir: Path | str) -> ShardReader:
    """The curated documents of a pipeline output directory, in shard order."""
    final = Path(out_dir) / "curated"
    files = sorted(p for p in final.iterdir() if p.suffix in (".parquet", ".jsonl"))
    return ShardReader(files)
