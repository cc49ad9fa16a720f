"""Sharded, resumable curation pipeline runner and its report.

Design (the shape of datatrove/Dolma pipelines, reduced to one machine):

1. The input stream is cut into shards of `shard_size` documents, read lazily.
2. The per-document stages before the first stage with `global_view` (heuristics, contamination,
   quality) run per shard in `num_workers` spawned worker processes (stages are pickled once per
   worker). At most `2 * num_workers` shards are in flight, so memory stays bounded whatever the
   input size. Each finished shard writes its documents (`staged/` or, without global stages,
   `curated/`), its per-stage report (`.report.json`) and finally a `.done` marker; all writes are
   atomic (temp file + rename). A rerun with `resume=True` skips shards whose marker exists (the
   input is still read to advance past them, since an arbitrary iterator cannot seek).
3. Stages that need a global view (exact and near dedup) and every stage after them run in one
   final pass in the parent process over the staged shards, which are re-iterable from disk, so
   MinHash's two passes read the files twice instead of holding texts in memory. The final pass
   writes `curated/part-NNNNN.{parquet,jsonl}` of `shard_size` documents each, then `_SUCCESS`.
   It is skipped on resume when `_SUCCESS` exists and no shard was recomputed.
4. `report.json` holds one entry per stage (documents/bytes in and out, removal reasons, examples,
   stage extras) plus run totals; `render_report` turns it into a rich table.

Global stages run after the per-shard stages that precede them in the list; the order of the
list is preserved otherwise. Running cheap filters before dedup is also what FineWeb/Dolma do.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Literal

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pretrainctl.data.curation.base import Doc, Stage, StageReport
from pretrainctl.data.curation.io import ShardReader, write_docs

OutputFormat = Literal["parquet", "jsonl"]


@dataclass
class PipelineReport:
    """Per-stage reports (in pipeline order) and run totals."""

    stages: list[StageReport]
    out_dir: str
    num_shards: int = 0
    shards_skipped: int = 0
    docs_in: int = 0
    docs_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    wall_s: float = 0.0
    files: list[str] = field(default_factory=list)

    def stage(self, name: str) -> StageReport:
        for report in self.stages:
            if report.name == name:
                return report
        raise KeyError(f"no stage named {name!r}; stages are {[r.name for r in self.stages]}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stages"] = [s.to_dict() for s in self.stages]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PipelineReport:
        return cls(**{**d, "stages": [StageReport.from_dict(s) for s in d["stages"]]})


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _unique_names(stages: list[Stage]) -> None:
    seen: dict[str, int] = {}
    for stage in stages:
        count = seen.get(stage.name, 0)
        seen[stage.name] = count + 1
        if count:
            stage.name = f"{stage.name}_{count + 1}"
            stage.report.name = stage.name


# ---- worker side ------------------------------------------------------------------------------
_WORKER_STAGES: list[Stage] = []


def _init_worker(stages: list[Stage]) -> None:
    global _WORKER_STAGES
    _WORKER_STAGES = stages


def _run_shard(
    stages: list[Stage], docs: list[Doc], out_path: Path, fmt: OutputFormat
) -> list[dict[str, Any]]:
    for stage in stages:
        stage.reset_report()
    stream: Iterable[Doc] = docs
    for stage in stages:
        stream = stage(stream)
    write_docs(stream, out_path, fmt)
    reports = [stage.reset_report().to_dict() for stage in stages]
    _atomic_write_text(out_path.with_suffix(".report.json"), json.dumps(reports))
    _atomic_write_text(out_path.with_suffix(".done"), "")
    return reports


def _worker_shard(docs: list[Doc], out_path: Path, fmt: OutputFormat) -> list[dict[str, Any]]:
    return _run_shard(_WORKER_STAGES, docs, out_path, fmt)


# ---- parent side ------------------------------------------------------------------------------
def _shards(docs: Iterable[Doc], size: int) -> Iterator[list[Doc]]:
    it = iter(docs)
    while chunk := list(islice(it, size)):
        yield chunk


def _fingerprint(stages: list[Stage], shard_size: int, fmt: str) -> dict[str, Any]:
    return {
        "stages": [f"{type(s).__module__}.{type(s).__qualname__}:{s.name}" for s in stages],
        "shard_size": shard_size,
        "format": fmt,
    }


def run_pipeline(
    docs: Iterable[Doc],
    stages: list[Stage],
    out_dir: Path | str,
    *,
    shard_size: int = 1000,
    num_workers: int = 1,
    resume: bool = True,
    output_format: OutputFormat = "parquet",
    progress: bool = True,
) -> PipelineReport:
    """Run `stages` over `docs`, write curated shards and `report.json` under `out_dir`, and return
    the report. See the module docstring for the layout and the parallel/global design."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if output_format not in ("parquet", "jsonl"):
        raise ValueError(f"output_format must be 'parquet' or 'jsonl', got {output_format!r}")
    t0 = time.perf_counter()
    out = Path(out_dir)
    _unique_names(stages)
    first_global = next((i for i, s in enumerate(stages) if s.global_view), len(stages))
    local, rest = stages[:first_global], stages[first_global:]
    staged_dir = out / ("staged" if rest else "curated")
    final_dir = out / "curated"
    fingerprint = _fingerprint(stages, shard_size, output_format)
    fp_path = out / "pipeline.json"
    if resume and fp_path.exists() and json.loads(fp_path.read_text()) != fingerprint:
        raise ValueError(
            f"{out} holds a pipeline run with other stages or shard settings; "
            "use resume=False or another out_dir"
        )
    if not resume:
        for d in (out / "staged", final_dir):
            shutil.rmtree(d, ignore_errors=True)
    staged_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(fp_path, json.dumps(fingerprint))

    merged = {s.name: StageReport(s.name, max_examples=s.max_examples) for s in stages}
    num_shards = skipped = 0
    docs_in = bytes_in = 0
    suffix = ".parquet" if output_format == "parquet" else ".jsonl"
    total = -(-len(docs) // shard_size) if hasattr(docs, "__len__") else None  # type: ignore[arg-type]
    pool = None
    if num_workers > 1 and local:
        pool = mp.get_context("spawn").Pool(num_workers, initializer=_init_worker, initargs=(local,))
    pending: deque[Any] = deque()

    def collect(reports: list[dict[str, Any]]) -> None:
        for r in reports:
            merged[r["name"]].merge(StageReport.from_dict(r))

    columns = (
        TextColumn("[bold]curation"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("shards"),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, disable=not progress, transient=False) as bar:
            task = bar.add_task("shards", total=total)
            for shard in _shards(docs, shard_size):
                path = staged_dir / f"shard-{num_shards:05d}{suffix}"
                num_shards += 1
                docs_in += len(shard)
                bytes_in += sum(len(d["text"].encode("utf-8", "replace")) for d in shard)
                if resume and path.with_suffix(".done").exists():
                    skipped += 1
                    collect(json.loads(path.with_suffix(".report.json").read_text()))
                    bar.advance(task)
                    continue
                if pool is None:
                    collect(_run_shard(local, shard, path, output_format))
                    bar.advance(task)
                    continue
                pending.append(pool.apply_async(_worker_shard, (shard, path, output_format)))
                while len(pending) >= 2 * num_workers or (pending and pending[0].ready()):
                    collect(pending.popleft().get())
                    bar.advance(task)
            while pending:
                collect(pending.popleft().get())
                bar.advance(task)
    finally:
        if pool is not None:
            pool.close()
            pool.join()

    staged_files = [staged_dir / f"shard-{i:05d}{suffix}" for i in range(num_shards)]
    if rest:
        files = _global_pass(
            rest, staged_files, final_dir, merged, shard_size, output_format, recompute=skipped < num_shards
        )
    else:
        files = staged_files
    reports = [merged[s.name] for s in stages]
    last = reports[-1] if reports else None
    report = PipelineReport(
        stages=reports,
        out_dir=str(out),
        num_shards=num_shards,
        shards_skipped=skipped,
        docs_in=docs_in,
        docs_out=last.docs_out if last else docs_in,
        bytes_in=bytes_in,
        bytes_out=last.bytes_out if last else bytes_in,
        wall_s=round(time.perf_counter() - t0, 3),
        files=[str(f) for f in files],
    )
    _atomic_write_text(out / "report.json", json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    return report


def _global_pass(
    stages: list[Stage],
    staged_files: list[Path],
    final_dir: Path,
    merged: dict[str, StageReport],
    shard_size: int,
    fmt: OutputFormat,
    *,
    recompute: bool,
) -> list[Path]:
    success = final_dir / "_SUCCESS"
    report_path = final_dir / "_global_reports.json"
    suffix = ".parquet" if fmt == "parquet" else ".jsonl"
    if not recompute and success.exists():
        for r in json.loads(report_path.read_text()):
            merged[r["name"]] = StageReport.from_dict(r)
        return sorted(final_dir.glob(f"part-*{suffix}"))
    shutil.rmtree(final_dir, ignore_errors=True)
    final_dir.mkdir(parents=True)
    for stage in stages:
        stage.reset_report()
    stream: Iterable[Doc] = ShardReader(staged_files)
    for stage in stages:
        stream = stage(stream)
    files: list[Path] = []
    for i, chunk in enumerate(_shards(stream, shard_size)):
        path = final_dir / f"part-{i:05d}{suffix}"
        write_docs(chunk, path, fmt)
        files.append(path)
    for stage in stages:
        merged[stage.name] = stage.reset_report()
    _atomic_write_text(report_path, json.dumps([merged[s.name].to_dict() for s in stages]))
    _atomic_write_text(success, "")
    return files


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


def render_report(report: PipelineReport | dict[str, Any]) -> Table:
    """One rich table: a row per stage (documents and bytes in/out, % removed) with its removal
    reasons, most frequent first."""
    if isinstance(report, dict):
        report = PipelineReport.from_dict(report)
    table = Table(title=f"curation report: {report.out_dir}", show_lines=True)
    for col in ("stage", "docs in", "docs out", "removed", "bytes in", "bytes out", "reasons"):
        table.add_column(col, justify="left" if col in ("stage", "reasons") else "right")
    for s in report.stages:
        removed = s.docs_in - s.docs_out
        pct = f"{100 * removed / s.docs_in:.2f}%" if s.docs_in else "-"
        reasons = "\n".join(f"{k}: {v}" for k, v in sorted(s.reasons.items(), key=lambda kv: -kv[1])) or "-"
        table.add_row(
            s.name,
            f"{s.docs_in:,}",
            f"{s.docs_out:,}",
            pct,
            _fmt_bytes(s.bytes_in),
            _fmt_bytes(s.bytes_out),
            reasons,
        )
    table.caption = (
        f"{report.docs_in:,} → {report.docs_out:,} docs, {report.num_shards} shards "
        f"({report.shards_skipped} resumed), {report.wall_s:.1f} s"
    )
    return table
