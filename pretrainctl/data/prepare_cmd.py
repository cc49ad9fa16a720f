"""``pretrainctl data prepare``: run a curation pipeline over a source and (optionally) pre-tokenize.

1. Documents stream from the data option's source (``Source.stream``: the stdlib files, local
   jsonl/parquet/txt read lazily, or a hub dataset in streaming mode), training split then
   validation split, each tagged ``meta.split``.
2. ``curation.run_pipeline`` cuts the stream into shards of ``shard_size`` documents; the per-document
   stages run in ``workers`` spawned processes, at most 2 x workers shards in flight, so memory is
   bounded by the shard size, not the corpus. Every finished shard leaves a ``.done`` marker and a
   rerun into the same ``out=`` skips it.
3. Deduplication needs a global view. Exact dedup keeps one 16-byte digest per distinct document.
   MinHash runs as a global pass over the staged shards on disk: pass 1 computes per-document
   signatures (128 x uint32, never the text), LSH banding over all signatures finds candidate pairs
   across shards, union-find clusters them and keeps one document per cluster; pass 2 re-reads the
   staged shards and writes the survivors. Memory grows with 0.5 KB of signature per document, which
   ``make bench`` measures at 1x and 10x input.
4. With ``tokenize=true`` the curated shards are tokenized in ``workers`` processes into
   ``tokens/part-NNNNN.{train,val}.bin`` plus ``tokens/index.json`` (``pretrainctl.data.shards``), each
   resumable: a token shard is redone only when its curated shard changed.
5. The command ends with a rich table per stage (documents and bytes in/out, removal reasons) and a
   table of removed examples; ``report.json`` holds the same and more (examples, stage extras).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
import time
from collections.abc import Iterator
from itertools import chain, islice
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from pretrainctl.build import build_curation
from pretrainctl.data.curation.base import Doc
from pretrainctl.data.curation.io import read_docs
from pretrainctl.data.curation.pipeline import PipelineReport, render_report, run_pipeline
from pretrainctl.data.shards import INDEX, token_dtype, write_tokens
from pretrainctl.errors import UserError
from pretrainctl.runs import write_json
from pretrainctl.tokenizer import Tokenizer, load_tokenizer

console = Console(width=None if sys.stdout.isatty() else 150)


def _documents(source, limit: int | None) -> Iterator[Doc]:
    splits = [source.stream(split) for split in ("train", "val")]
    return chain.from_iterable(islice(s, limit) if limit else s for s in splits)


def _train_texts(files: list[Path], max_bytes: int) -> list[str]:
    """Curated training documents up to ``max_bytes`` (what a SentencePiece spec trains on)."""
    texts, size = [], 0
    for f in files:
        for doc in read_docs(f):
            if (doc.get("meta") or {}).get("split", "train") != "train":
                continue
            texts.append(doc["text"])
            size += len(doc["text"].encode("utf-8", "replace"))
            if size >= max_bytes:
                return texts
    return texts


# ---- tokenizing (worker side) ------------------------------------------------------------------
_TOKENIZER: Tokenizer | None = None


def _init_tokenizer(directory: str) -> None:
    global _TOKENIZER
    _TOKENIZER = load_tokenizer(Path(directory))


def _tokenize_part(part: str, tokens_dir: str, dtype: str) -> dict[str, Any]:
    """Tokenize one curated shard into one token shard per split; writes a ``.done`` record last."""
    tok = _TOKENIZER
    ids: dict[str, list[list[int]]] = {"train": [], "val": []}
    for doc in read_docs(part):
        split = (doc.get("meta") or {}).get("split", "train")
        ids["val" if split == "val" else "train"].append(tok.encode(doc["text"]))
    stem = Path(part).stem
    record: dict[str, Any] = {"source": _stat(Path(part)), "splits": {}}
    for split, docs in ids.items():
        name = f"{stem}.{split}.bin"
        n = write_tokens(docs, tok.eos_id, Path(tokens_dir) / name, np.dtype(dtype))
        record["splits"][split] = {"file": name, "tokens": n, "docs": len(docs)}
    done = Path(tokens_dir) / f"{stem}.done"
    write_json(done, record)
    return record


def _stat(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def tokenize_shards(
    parts: list[Path], tokenizer: Tokenizer, out: Path, workers: int, resume: bool
) -> dict[str, Any]:
    """Token shards for every curated shard (skipping unchanged finished ones) and ``index.json``."""
    tok_dir, tokens_dir = out / "tokenizer", out / "tokens"
    tokenizer.save(tok_dir)
    tokens_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = tokenizer.fingerprint()
    dtype = token_dtype(tokenizer.vocab_size).name
    index_path = tokens_dir / INDEX
    if (
        index_path.is_file()
        and json.loads(index_path.read_text()).get("tokenizer_fingerprint") != fingerprint
    ):
        resume = False  # another tokenizer made the existing shards: redo them all
    records: dict[str, dict[str, Any]] = {}
    todo = []
    for part in parts:
        done = tokens_dir / f"{part.stem}.done"
        if resume and done.is_file():
            record = json.loads(done.read_text())
            if record["source"] == _stat(part):
                records[part.stem] = record
                continue
        todo.append(part)
    t0 = time.perf_counter()
    if workers > 1 and len(todo) > 1:
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers, initializer=_init_tokenizer, initargs=(str(tok_dir),)) as pool:
            results = pool.starmap(_tokenize_part, [(str(p), str(tokens_dir), dtype) for p in todo])
    else:
        _init_tokenizer(str(tok_dir))
        results = [_tokenize_part(str(p), str(tokens_dir), dtype) for p in todo]
    records.update({p.stem: r for p, r in zip(todo, results)})
    seconds = time.perf_counter() - t0
    splits = {s: [records[p.stem]["splits"][s] for p in parts] for s in ("train", "val")}
    index = {
        "dtype": dtype,
        "vocab_size": tokenizer.vocab_size,
        "eos_id": tokenizer.eos_id,
        "tokenizer_fingerprint": fingerprint,
        "tokenizer_dir": "tokenizer",
        "splits": splits,
        "tokens": {s: sum(e["tokens"] for e in v) for s, v in splits.items()},
        "docs": {s: sum(e["docs"] for e in v) for s, v in splits.items()},
        "shards_tokenized": len(todo),
        "shards_skipped": len(parts) - len(todo),
        "tokenize_seconds": round(seconds, 3),
    }
    write_json(index_path, index)
    return index


# ---- the command -------------------------------------------------------------------------------
def _examples_table(report: PipelineReport) -> Table:
    table = Table(title="removed documents (first example per stage and reason)", show_lines=True)
    for col in ("stage", "reason", "id", "text"):
        table.add_column(col, overflow="fold")
    for stage in report.stages:
        seen: set[str] = set()
        for ex in stage.examples:
            if ex["reason"] in seen:
                continue
            seen.add(ex["reason"])
            table.add_row(stage.name, ex["reason"], ex["id"], ex["text"][:160].replace("\n", "⏎"))
    return table


def run_prepare(cfg: DictConfig, progress: bool = True) -> dict[str, Any]:
    """Curate (and tokenize) into ``cfg.out``; returns {"report": ..., "index": ... or None}."""
    for key in ("workers", "shard_size"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise UserError(f"{key} must be a positive integer, not {cfg[key]!r}.")
    if cfg.format not in ("parquet", "jsonl"):
        raise UserError(f"format must be parquet or jsonl, not {cfg.format!r}.")
    source, stages, spec = build_curation(cfg)
    out = Path(str(cfg.out)).expanduser()
    try:
        report = run_pipeline(
            _documents(source, cfg.limit),
            stages,
            out,
            shard_size=cfg.shard_size,
            num_workers=cfg.workers,
            resume=bool(cfg.resume),
            output_format=cfg.format,
            progress=progress,
        )
    except ValueError as exc:
        if "resume=False" in str(exc):  # the directory holds a run with other stages
            raise UserError(
                f"{out} holds a curation run with other stages or shard settings; "
                "pass resume=false to overwrite it or choose another out=."
            ) from None
        raise
    console.print(render_report(report))
    if any(s.examples for s in report.stages):
        console.print(_examples_table(report))
    index = None
    if cfg.tokenize:
        parts = [Path(f) for f in report.files]
        texts = _train_texts(parts, int(getattr(spec, "train_bytes", 0) or 5_000_000))
        if not texts:
            raise UserError("curation kept no training documents, so there is nothing to tokenize.")
        tokenizer = spec.build(texts, Path(str(cfg.cache_dir)).expanduser())
        index = tokenize_shards(parts, tokenizer, out, cfg.workers, bool(cfg.resume))
        console.print(
            f"token shards: {index['tokens']['train']:,} train / {index['tokens']['val']:,} val tokens "
            f"({index['dtype']}, {len(parts)} shards, {index['shards_skipped']} reused) in {out / 'tokens'}; "
            f"train on them with: pretrainctl train data=shards data.path={out}"
        )
    console.print(f"curated documents: {out / 'curated'}   report: {out / 'report.json'}")
    return {"report": report, "index": index}


def hydra_task(cfg: DictConfig) -> None:
    run_prepare(cfg)
