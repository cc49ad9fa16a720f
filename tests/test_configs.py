"""Every option of every group composes, and instantiates through build.py."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pretrainctl import build
from pretrainctl.cli import GROUPS, options
from pretrainctl.data.prepare_cmd import run_prepare
from pretrainctl.module import PretrainModule
from pretrainctl.runs import RunDir
from pretrainctl.tokenizer.bytes import ByteTokenizer
from tests.helpers import compose_config, tiny_config
from tests.objective.teacher import untrained_run


def test_groups_are_the_documented_ones():
    for group in (
        "data",
        "tokenizer",
        "arch",
        "objective",
        "optim",
        "schedule",
        "scaling",
        "trainer",
        "logger",
    ):
        assert group in GROUPS and options(group)


@pytest.mark.parametrize("option", options("arch"))
def test_arch_options(option, cache_dir):
    cfg = tiny_config([f"arch={option}"], cache_dir)
    model = build.build_model(cfg, ByteTokenizer())
    count = model.num_params()
    assert count.total == sum(p.numel() for p in model.parameters())
    embedding = count.total - count.non_embedding  # sparse models: only active weights cost FLOPs
    assert model.flops_per_token(cfg.data.seq_len) > 6 * (count.active - embedding)
    hidden = model(torch.randint(0, 260, (1, 8)))
    assert model.logits(hidden).shape == (1, 8, 260)


@pytest.mark.parametrize("option", options("tokenizer"))
def test_tokenizer_options(option, cache_dir):
    cfg = tiny_config([f"tokenizer={option}"], cache_dir)
    dm = build.build_datamodule(cfg)
    tok = build.build_tokenizer(cfg, dm)
    text = dm.train_texts()[0][:2000]
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize("option", options("data"))
def test_data_options(option, cache_dir, tmp_path):
    docs = [f"line {i} of a local document\n" * 30 for i in range(60)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    (tmp_path / "hub" / "data").mkdir(parents=True)  # a dataset folder in hub layout
    pq.write_table(pa.table({"text": docs}), tmp_path / "hub" / "data" / "train-00000-of-00001.parquet")
    if option == "shards":  # a tiny prepared directory (pretrainctl data prepare ... tokenize=true)
        prep = compose_config(
            "data_prepare",
            ["data.source.max_files=12", "tokenizer=bytes", "curation=none", "workers=1", "tokenize=true",
             f"out={tmp_path}/prepared"],
            cache_dir,
        )  # fmt: skip
        run_prepare(prep, progress=False)
    extra = {
        "files": [f"data.source.paths=[{tmp_path}/d.jsonl]"],
        "hf": [f"data.source.path={tmp_path}/hub"],
        "stdlib": [],
        "shards": [f"data.path={tmp_path}/prepared"],
        "synthetic": ["data.source.task=modarith", "data.source.difficulty=2"],
        "mixture": ["data.sources.core.max_files=12", "data.sources.web.max_files=12"],
    }[option]
    cfg = tiny_config([f"data={option}", "tokenizer=bytes", *extra], cache_dir)
    dm = build.build_datamodule(cfg, ByteTokenizer())
    dm.set_horizon(100)  # build_experiment passes the plan's; mixture phases need one
    dm.setup()
    batch = next(iter(dm.train_dataloader()))["tokens"]
    assert batch.shape == (cfg.data.batch_size, cfg.data.seq_len + 1)


@pytest.mark.parametrize("group", ["objective", "optim", "schedule", "scaling", "guard"])
def test_training_options_build_a_module(group, cache_dir, tmp_path):
    for option in options(group):
        extra = []
        if option == "distill":  # reads a teacher run directory (an untrained one is enough to build)
            extra = [f"objective.teacher={untrained_run(tmp_path / 'teacher', [], cache_dir)}"]
        cfg = tiny_config([f"{group}={option}", "tokenizer=bytes", *extra], cache_dir)
        if option == "flops":
            cfg.scaling.flops = 1e12
        exp = build.build_experiment(cfg)
        assert isinstance(exp.module, PretrainModule)
        assert exp.plan.steps >= 1 and exp.plan.tokens == exp.plan.steps * exp.plan.tokens_per_step
        optimizer = exp.module.optimizer_builder.build(exp.module)
        # model and objective parameters (MTP modules), never a distillation teacher's
        trainable = [p for p in exp.module.parameters() if p.requires_grad]
        assert sum(len(g["params"]) for g in optimizer.param_groups) == len(trainable)


@pytest.mark.parametrize("option", options("experiment"))
def test_experiment_presets_compose_and_build(option, cache_dir):
    cfg = tiny_config([f"experiment={option}"], cache_dir)
    exp = build.build_experiment(cfg)
    optimizer = exp.module.optimizer_builder.build(exp.module)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(exp.module.parameters()))


@pytest.mark.parametrize("option", options("trainer"))
def test_trainer_and_logger_options(option, cache_dir, tmp_path):
    for logger in options("logger"):
        cfg = tiny_config([f"trainer={option}", f"logger={logger}"], cache_dir)
        if option == "gpu" and not torch.cuda.is_available():
            assert cfg.trainer.precision == "bf16-mixed"  # composes; instantiating needs a GPU
            continue
        trainer = build.build_trainer(cfg, RunDir(tmp_path), 5, [])
        assert trainer.max_steps == 5


def test_scaling_plans_derive_steps(cache_dir):
    cfg = tiny_config(["tokenizer=bytes", "scaling=tokens", "scaling.tokens_per_param=2"], cache_dir)
    exp = build.build_experiment(cfg)
    assert exp.plan.tokens >= 2 * exp.plan.params_active > exp.plan.tokens - exp.plan.tokens_per_step
    cfg = tiny_config(["tokenizer=bytes", "scaling=flops", "scaling.flops=1e12"], cache_dir)
    exp = build.build_experiment(cfg)
    assert (
        exp.plan.train_flops
        <= 1e12
        < exp.plan.train_flops + exp.plan.flops_per_token * exp.plan.tokens_per_step
    )
    cfg = tiny_config(
        ["tokenizer=bytes", "scaling=flops", "scaling.flops=1e12", "trainer.max_steps=7"], cache_dir
    )
    assert build.build_experiment(cfg).plan.steps == 7


def _tiny_scorer(tmp_path) -> Path:
    from pretrainctl.data.curation.quality import QualityScorer

    path = tmp_path / "scorer.npz"
    QualityScorer(n_features=256).fit(["good prose text"] * 2, ["%% 12 $$ 9"] * 2).save(path)
    return path


@pytest.mark.parametrize("option", options("curation"))
def test_curation_options_build_their_stages(option, cache_dir, tmp_path):
    evalset = tmp_path / "evalset.jsonl"
    evalset.write_text(json.dumps({"text": "an evaluation item " * 5}) + "\n")
    extra = {
        "decontaminate": [f"curation.stages.contamination.eval_files=[{evalset}]"],
        "quality": [f"curation.stages.quality.model_paths=[{_tiny_scorer(tmp_path)}]"],
    }.get(option, [])
    cfg = compose_config("data_prepare", [f"curation={option}", "tokenizer=bytes", *extra], cache_dir)
    source, stages, spec = build.build_curation(cfg)
    assert [s.name for s in stages] == [
        build._make(n, "test").name for n in cfg.curation.stages.values() if n is not None
    ]
    assert next(iter(source.stream("train")))["text"]
