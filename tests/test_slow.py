"""Long runs (make test-slow): the default experiment's quality bar and the 124M preset on CPU."""

import pytest

from pretrainctl.runs import RunDir
from pretrainctl.train import run_train
from tests.helpers import compose_config

pytestmark = pytest.mark.slow


def test_llama_124m_trains_two_steps_on_cpu(tmp_path, cache_dir):
    cfg = compose_config(
        "train",
        ["+arch=llama_124m", "trainer.max_steps=2", "data.seq_len=128", "trainer.limit_val_batches=2"],
        cache_dir,
    )
    summary = run_train(cfg, tmp_path / "run")
    assert summary["status"] == "completed" and summary["step"] == 2
    assert 80e6 < summary["params_total"] < 140e6
    assert RunDir(tmp_path / "run").checkpoint("last").is_file()


def test_default_run_beats_gzip(tmp_path, cache_dir):
    """ENV.md: gzip -9 reaches 1.94 bits per byte on the held-out stdlib files."""
    summary = run_train(compose_config("train", [], cache_dir), tmp_path / "run")
    assert summary["status"] == "completed"
    assert summary["val_bpb"] < 1.94, summary
