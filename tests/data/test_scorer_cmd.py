"""`pretrainctl data train_scorer` and the `curation=quality` pipeline that uses its scorer."""

from __future__ import annotations

import json
import random

import pytest

from pretrainctl.data.curation.quality import QualityScorer
from pretrainctl.data.prepare_cmd import run_prepare
from pretrainctl.data.scorer_cmd import train_scorer
from pretrainctl.errors import UserError
from tests.helpers import compose_config

WORDS = ["the", "model", "reads", "data", "and", "learns", "which", "tokens", "follow", "from", "context"]


def _good(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(40)) + "."


def _bad(rng: random.Random) -> str:  # boilerplate-like: symbols and digits, no prose
    return " ".join(f"{rng.randint(0, 999)}{rng.choice('#$%&|~')}" for _ in range(40))


@pytest.fixture(scope="module")
def example_files(tmp_path_factory):
    tmp, rng = tmp_path_factory.mktemp("scorer"), random.Random(0)
    pos, neg = tmp / "good.jsonl", tmp / "bad.txt"
    pos.write_text("".join(json.dumps({"text": _good(rng)}) + "\n" for _ in range(60)))
    neg.write_text("".join(_bad(rng) + "\n" for _ in range(60)))
    return tmp, pos, neg


def test_train_scorer_separates_held_out_examples_and_saves_a_loadable_scorer(example_files):
    tmp, pos, neg = example_files
    out = tmp / "scorer.npz"
    cfg = compose_config("data_train_scorer", [f"positive={pos}", f"negative={neg}", f"out={out}",
                                               "n_features=4096", "holdout=0.25"])  # fmt: skip
    report = train_scorer(cfg)
    assert report["heldout"] == {"positive": 15, "negative": 15}
    assert report["heldout_accuracy"] == 1.0
    assert json.loads(out.with_suffix(".json").read_text())["scorer"] == str(out)
    rng = random.Random(1)
    scorer = QualityScorer.load(out)
    assert scorer.score(_good(rng)) > 0.5 > scorer.score(_bad(rng))


def test_quality_pipeline_drops_low_scoring_documents(example_files, cache_dir, tmp_path):
    tmp, pos, neg = example_files
    out = tmp / "scorer-for-prepare.npz"
    train_scorer(compose_config("data_train_scorer", [f"positive={pos}", f"negative={neg}", f"out={out}",
                                                      "n_features=4096"]))  # fmt: skip
    docs = tmp_path / "docs.jsonl"
    rng = random.Random(2)
    texts = [_good(rng) for _ in range(8)] + [_bad(rng) for _ in range(4)]
    docs.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    cfg = compose_config(
        "data_prepare",
        ["data=files", f"data.source.paths=[{docs}]", "curation=quality",
         f"curation.stages.quality.model_paths=[{out}]", "curation.stages.code_quality=null",
         "tokenizer=bytes", "workers=1", f"out={tmp_path / 'prep'}"],
        cache_dir,
    )  # fmt: skip
    run_prepare(cfg, progress=False)
    report = json.loads((tmp_path / "prep" / "report.json").read_text())
    quality = next(s for s in report["stages"] if s["name"] == "quality")
    assert quality["docs_in"] == 12 and quality["docs_out"] == 8
    assert quality["reasons"] == {"quality_low": 4}
    assert sum(quality["extra"]["score_histogram"].values()) == 12


def test_train_scorer_names_a_missing_file(tmp_path):
    cfg = compose_config("data_train_scorer", [f"positive={tmp_path}/nope.jsonl", f"negative={tmp_path}/x",
                                               f"out={tmp_path}/s.npz"])  # fmt: skip
    with pytest.raises(UserError, match="positive=.*does not exist"):
        train_scorer(cfg)
