"""End-to-end curation: stdlib corpus + injected near-duplicates + injected benchmark passages."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from rich.console import Console

from pretrainctl.data.curation.base import Doc, FilterStage
from pretrainctl.data.curation.contamination import ContaminationFilter
from pretrainctl.data.curation.corpus import stdlib_docs
from pretrainctl.data.curation.dedup import ExactDedup, MinHashDedup
from pretrainctl.data.curation.io import read_curated
from pretrainctl.data.curation.pipeline import PipelineReport, render_report, run_pipeline

SEED = 1234


def reference_jaccard(a: str, b: str, n: int = 5) -> float:
    """Plain-Python Jaccard of word 5-gram sets (the quantity MinHash estimates)."""

    def grams(text: str) -> set[tuple[str, ...]]:
        w = re.findall(r"\w+", text.lower())
        return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}

    ga, gb = grams(a), grams(b)
    return len(ga & gb) / len(ga | gb)


def near_duplicate(text: str, rng: random.Random, rate: float = 0.05, span: int = 8) -> str:
    """Replace ~`rate` of the words in contiguous spans of `span` words with random words."""
    parts = re.split(r"(\s+)", text)
    word_pos = [i for i, p in enumerate(parts) if p and not p.isspace()]
    n_edit = max(1, round(rate * len(word_pos)))
    edited = 0
    while edited < n_edit:
        start = rng.randrange(0, max(1, len(word_pos) - span))
        for k in word_pos[start : start + min(span, n_edit - edited)]:
            parts[k] = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9)))
            edited += 1
    return "".join(parts)


def eval_passages(count: int) -> list[str]:
    from pydoc_data.topics import topics

    passages = []
    for key in sorted(topics):
        for para in topics[key].split("\n\n"):
            words = para.split()
            if len(words) >= 40 and all(w.isascii() for w in words):
                passages.append(" ".join(words[:60]))
                break
        if len(passages) == count:
            break
    return passages


@pytest.fixture(scope="module")
def corpus() -> list[Doc]:
    docs = list(stdlib_docs(excluded=("encodings", "pydoc_data")))
    rng = random.Random(SEED)
    return sorted(rng.sample(docs, 2000), key=lambda d: d["id"])


def test_pipeline_removes_injected_duplicates_and_contamination(corpus: list[Doc], tmp_path: Path) -> None:
    rng = random.Random(SEED)
    passages = eval_passages(50)
    assert len(passages) == 50
    eval_file = tmp_path / "evalset.jsonl"
    eval_file.write_text("".join(json.dumps({"text": p}) + "\n" for p in passages))

    docs = [dict(d) for d in corpus]
    picked = rng.sample(range(len(docs)), 120)
    contaminated, duplicated = picked[:20], picked[20:]
    injected_items = rng.sample(range(50), 20)
    for doc_i, item in zip(contaminated, injected_items):
        lines = docs[doc_i]["text"].split("\n")
        at = rng.randrange(len(lines))
        docs[doc_i]["text"] = "\n".join(lines[:at] + ["# " + passages[item]] + lines[at:])
    dups = []
    for doc_i in duplicated:
        text = near_duplicate(docs[doc_i]["text"], rng)
        jac = reference_jaccard(docs[doc_i]["text"], text)
        assert 0.8 <= jac < 1.0, f"injected near-duplicate has true Jaccard {jac:.3f}"
        dups.append({"id": docs[doc_i]["id"] + "#dup", "text": text, "source": "injected"})
    stream = list(docs)
    for dup in dups:
        stream.insert(rng.randrange(len(stream) + 1), dup)

    stages = [
        ContaminationFilter(eval_files=[str(eval_file)]),
        MinHashDedup(keep="min_id", cross_source=True),
    ]
    report = run_pipeline(
        iter(stream), stages, tmp_path / "out", shard_size=500, num_workers=2, progress=False
    )

    kept = {d["id"] for d in read_curated(tmp_path / "out")}
    dup_ids = {d["id"] for d in dups}
    contaminated_ids = {docs[i]["id"] for i in contaminated}
    clean_ids = {d["id"] for d in docs} - contaminated_ids
    removed_dups = len(dup_ids - kept)
    removed_clean = len(clean_ids - kept)
    print(
        f"removed {removed_dups}/100 injected near-duplicates, "
        f"{removed_clean}/{len(clean_ids)} clean documents"
    )
    assert removed_dups >= 95, f"only {removed_dups}/100 injected near-duplicates removed"
    assert removed_clean < 0.01 * len(clean_ids), f"{removed_clean} clean documents removed"
    # Every injected benchmark passage is flagged, and every contaminated document dropped.
    hit = report.stage("contamination").extra["items_hit"]["evalset"]
    assert {int(k) for k in hit} >= set(injected_items)
    assert not contaminated_ids & kept
    assert report.stage("contamination").reasons["contamination:evalset"] >= 20
    # The cross-source record of a kept original names the injected copy's source.
    kept_docs = {d["id"]: d for d in read_curated(tmp_path / "out")}
    orig = docs[duplicated[0]]["id"]
    if orig in kept_docs:
        assert kept_docs[orig]["meta"]["sources"] == ["injected", "stdlib"]
    # report.json mirrors the returned report.
    on_disk = PipelineReport.from_dict(json.loads((tmp_path / "out" / "report.json").read_text()))
    assert on_disk.docs_out == report.docs_out == len(kept)
    assert report.docs_in == len(stream)
    console = Console(record=True, width=160)
    console.print(render_report(report))
    assert "minhash_dedup" in console.export_text()


class CountingFilter(FilterStage):
    """Drops documents whose id ends in 7 and counts how many documents it processed."""

    name = "counting"

    def __init__(self, log: str) -> None:
        super().__init__()
        self.log = log

    def apply(self, doc: Doc) -> Doc | str:
        with open(self.log, "a") as f:
            f.write(doc["id"] + "\n")
        return "ends_in_7" if doc["id"].endswith("7") else doc


def _docs(n: int) -> list[Doc]:
    return [{"id": f"d{i:04d}", "text": f"document number {i} " * 5, "source": "t"} for i in range(n)]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_pipeline_resume_skips_finished_shards(tmp_path: Path, fmt: str) -> None:
    log = tmp_path / "seen.txt"
    out = tmp_path / "out"
    docs = _docs(250)
    first = run_pipeline(
        iter(docs[:120]), [CountingFilter(str(log))], out, shard_size=50, output_format=fmt, progress=False
    )
    assert first.num_shards == 3 and first.shards_skipped == 0
    # The last shard was partial (20 docs); a rerun over the full input redoes it and adds more.
    (out / "curated" / "shard-00002.done").unlink()
    log.write_text("")
    second = run_pipeline(
        iter(docs), [CountingFilter(str(log))], out, shard_size=50, output_format=fmt, progress=False
    )
    processed = log.read_text().split()
    assert second.shards_skipped == 2 and second.num_shards == 5
    assert processed == [d["id"] for d in docs[100:]]
    assert second.stage("counting").docs_in == 250
    assert second.stage("counting").reasons == {"ends_in_7": 25}
    assert [d["id"] for d in read_curated(out)] == [d["id"] for d in docs if not d["id"].endswith("7")]


def test_pipeline_global_exact_dedup_across_shards(tmp_path: Path) -> None:
    docs = _docs(30)
    docs.append(
        {"id": "copy", "text": "  DOCUMENT number 3 " * 5, "source": "t"}
    )  # normalizes equal to d0003
    report = run_pipeline(
        docs, [ExactDedup()], tmp_path / "o", shard_size=10, progress=False, output_format="jsonl"
    )
    assert report.stage("exact_dedup").reasons == {"exact_duplicate": 1}
    assert "copy" not in {d["id"] for d in read_curated(tmp_path / "o")}


def test_resume_refuses_other_stages(tmp_path: Path) -> None:
    run_pipeline(_docs(10), [ExactDedup()], tmp_path, shard_size=5, progress=False)
    with pytest.raises(ValueError, match="resume=False"):
        run_pipeline(_docs(10), [MinHashDedup()], tmp_path, shard_size=5, progress=False)
