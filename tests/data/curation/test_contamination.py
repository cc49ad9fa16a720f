"""Contamination index: n-gram matches against a plain-Python reference."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pretrainctl.data.curation.contamination import ContaminationFilter, ContaminationIndex, read_eval_items

ITEMS = [
    "What is the boiling point of water at sea level in degrees Celsius under standard pressure?",
    "Name the largest planet in the solar system and describe its great red spot in one sentence.",
    "too short to index",
]


def grams(text: str, n: int) -> set[tuple[str, ...]]:
    w = re.findall(r"\w+", text.lower())
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


def test_index_agrees_with_reference() -> None:
    index = ContaminationIndex(n=8)
    index.add("qa", ITEMS)
    assert index.too_short == {"qa": 1}
    docs = [
        "Intro text. " + ITEMS[0].upper() + " trailing words",
        "what is the boiling point of water at sea",  # 9 words: one 8-gram overlap
        "Name the largest planet in the solar system",  # 8 words
        "An unrelated document about cooking pasta with garlic and olive oil at home.",
    ]
    for doc in docs:
        expected = sorted(i for i, item in enumerate(ITEMS) if grams(doc, 8) & grams(item, 8))
        assert index.find(doc).get("qa", []) == expected


def test_filter_reads_jsonl_and_txt(tmp_path: Path) -> None:
    jl = tmp_path / "bench_a.jsonl"
    jl.write_text("".join(json.dumps({"question": q, "answer": "x"}) + "\n" for q in ITEMS))
    txt = tmp_path / "bench_b.txt"
    txt.write_text(ITEMS[1] + "\n\n")
    assert read_eval_items(txt) == [ITEMS[1]]
    stage = ContaminationFilter(eval_files=[str(jl), str(txt)], n=8, text_field="question")
    docs = [
        {"id": "1", "text": "prefix " + ITEMS[1], "source": "s"},
        {"id": "2", "text": "clean text " * 20, "source": "s"},
    ]
    assert [d["id"] for d in stage(docs)] == ["2"]
    assert stage.report.reasons == {"contamination:bench_a": 1}
    assert stage.report.extra["items_hit"] == {"bench_a": {"1": 1}, "bench_b": {"0": 1}}
    tagger = ContaminationFilter(eval_files=[str(txt)], n=8, drop=False)
    out = list(tagger(docs))
    assert len(out) == 2 and out[0]["meta"]["contamination"] == {"bench_b": [0]}


def test_missing_eval_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list(
            ContaminationFilter(eval_files=[str(tmp_path / "nope.jsonl")])(
                [{"id": "1", "text": "a", "source": "s"}]
            )
        )
