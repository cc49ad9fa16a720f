"""`pretrainctl tokenizer train|eval`, training with tokenizer=superbpe and tokenizer.path=<dir>, and the
bits-per-byte denominator of a SuperBPE run."""

import json
import re

import pytest

from pretrainctl.build import build_experiment
from pretrainctl.errors import UserError
from pretrainctl.runs import RunDir
from pretrainctl.tokenizer import load_tokenizer
from pretrainctl.tokenizer.eval_cmd import run_tokenizer_eval
from pretrainctl.tokenizer.train_cmd import run_tokenizer_train
from pretrainctl.train import run_train
from tests.helpers import compose_config, tiny_config
from tests.test_cli import cli

SMALL = ["data.source.max_files=40", "tokenizer.train_bytes=200000"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A SuperBPE directory written by the train command (in-process)."""
    out = tmp_path_factory.mktemp("tok") / "superbpe"
    cfg = compose_config(
        "tokenizer_train", [*SMALL, "tokenizer=superbpe", "tokenizer.vocab_size=500", f"out={out}"]
    )
    report = run_tokenizer_train(cfg)
    return out, report


def test_train_command_writes_a_tokenizer_directory(trained):
    out, report = trained
    assert {p.name for p in out.iterdir()} == {"tokenizer.json", "merges.json", "report.json"}
    saved = json.loads((out / "report.json").read_text())
    assert saved == report
    assert report["vocab_size"] == 500 and report["train_bytes_seen"] == 200_000
    assert report["options"]["kind"] == "superbpe" and report["train_wall_s"] > 0
    assert report["val_bytes_per_token"] > 2  # code compresses well past one byte per token
    tok = load_tokenizer(out)
    assert tok.vocab_size == 500 and tok.fingerprint() == report["fingerprint"]


@pytest.mark.parametrize("option", ["superbpe", "bpe", "bytes"])
def test_train_runs_use_a_trained_directory_by_path(trained, option, cache_dir, tmp_path):
    out, report = trained
    cfg = tiny_config([f"tokenizer={option}", f"tokenizer.path={out}"], cache_dir)
    exp = build_experiment(cfg)
    assert exp.tokenizer.fingerprint() == report["fingerprint"] and exp.model.vocab_size == 500


def test_superbpe_run_trains_end_to_end(cache_dir, tmp_path):
    cfg = tiny_config(["tokenizer=superbpe", "trainer.max_steps=30", "optim.lr=1e-2"], cache_dir)
    summary = run_train(cfg, tmp_path / "run", [])
    losses = [r["train_loss"] for r in RunDir(tmp_path / "run").read_metrics() if "train_loss" in r]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5
    assert 0 < summary["val_bpb"] < 8
    assert load_tokenizer(RunDir(tmp_path / "run").tokenizer).vocab_size == 400


def test_superbpe_bits_per_byte_denominator_is_the_validation_text(cache_dir):
    """As for BPE (test_training), bits per byte divides by the UTF-8 bytes of the validation text."""
    cfg = tiny_config(["tokenizer=superbpe", "trainer.limit_val_batches=null"], cache_dir)
    exp = build_experiment(cfg)
    exp.datamodule.setup()
    rows = exp.datamodule.val_rows
    nll = exp.objective.nll(exp.model, {"tokens": rows})
    sizes = exp.tokenizer.token_bytes()
    assert int(nll.bytes) == int(sizes[rows[:, 1:]].sum())
    val = exp.datamodule.source.documents("val")
    encoded = exp.tokenizer.encode_batch(val)
    assert [int(sizes[ids].sum()) for ids in encoded] == [len(d.encode("utf-8")) for d in val]
    packed = int(sizes[rows].sum())
    assert packed <= exp.datamodule.text_bytes("val") and packed > 0.9 * exp.datamodule.text_bytes("val")


def test_eval_command_table_json_and_plot(trained, cache_dir, tmp_path):
    out, _ = trained
    cfg = compose_config(
        "tokenizer_eval",
        [
            *SMALL,
            f"tokenizers=[{out},bytes,superbpe]",
            "vocab_sizes=[400,600]",
            "max_bytes=100000",
            f"out={tmp_path}/eval.json",
            f"plot={tmp_path}/eval.png",
        ],  # fmt: skip
        cache_dir,
    )
    report = run_tokenizer_eval(cfg)
    rows = {r["tokenizer"]: r for r in report["results"]}
    assert set(rows) == {"superbpe", "bytes", "superbpe-400", "superbpe-600"}
    assert rows["bytes"]["held-out"]["bytes_per_token"] == 1.0
    big, small = rows["superbpe-600"]["held-out"], rows["superbpe-400"]["held-out"]
    assert big["bytes_per_token"] > small["bytes_per_token"] > 1.0
    assert big["tokens_per_word"] < small["tokens_per_word"]
    assert 0 < big["words_split_3plus"] <= small["words_split_3plus"] < 1
    par = rows["bytes"]["parallel"]
    assert par["en"]["parity"] == 1.0
    assert par["ru"]["parity"] == par["ru"]["bytes"] / par["en"]["bytes"]  # bytes: parity = byte ratio
    assert json.loads((tmp_path / "eval.json").read_text()) == report
    assert (tmp_path / "eval.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "args,expected",
    [
        (["tokenizer", "train", "tokenizer=superbpe"], "out is required"),
        (["train", "tokenizer=superbpe", "tokenizer.path=/no/such/tok"], "not a tokenizer directory"),
    ],
)
def test_user_errors_exit_2(args, expected, tmp_path, cache_dir):
    env = {"PRETRAINCTL_RUNS": str(tmp_path / "runs"), "PRETRAINCTL_CACHE": str(cache_dir)}
    res = cli(*args, env=env)
    assert res.returncode == 2 and expected in res.stderr and "Traceback" not in res.stderr, res.stderr


@pytest.mark.parametrize(
    "overrides,expected",
    [
        ([], "tokenizers is required"),
        (["tokenizers=[/no/such/tok]"], "neither a tokenizer directory nor an option"),
        (["tokenizers=[bytes]", "texts=[/no/such.txt]"], "is not a file"),
    ],
)
def test_eval_user_errors(overrides, expected, cache_dir):
    with pytest.raises(UserError, match=re.escape(expected)):
        run_tokenizer_eval(compose_config("tokenizer_eval", [*SMALL, *overrides], cache_dir))


def test_train_user_errors(tmp_path, cache_dir):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    cfg = compose_config("tokenizer_train", [*SMALL, f"out={tmp_path}/full"], cache_dir)
    with pytest.raises(UserError, match="is not empty"):
        run_tokenizer_train(cfg)
    cfg = compose_config("tokenizer_train", [*SMALL, "tokenizer=superbpe", "tokenizer.transition_vocab=9000",
                                             f"out={tmp_path}/t"], cache_dir)  # fmt: skip
    with pytest.raises(UserError, match="transition_vocab=9000"):
        run_tokenizer_train(cfg)
