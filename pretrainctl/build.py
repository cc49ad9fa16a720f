"""The only place that turns config into objects (``hydra.utils.instantiate``).

Order: data source -> tokenizer -> data module -> model -> objective -> optimizer + schedule -> plan
-> PretrainModule -> Trainer. Values known only at run time (vocabulary size, token byte lengths,
parameter and FLOP counts) are passed explicitly from one step to the next.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from pretrainctl.arch.base import LanguageModel
from pretrainctl.data.datamodule import PackedDataModule
from pretrainctl.errors import UserError
from pretrainctl.module import PretrainModule
from pretrainctl.objective.base import Objective
from pretrainctl.runs import RunDir
from pretrainctl.scaling.plan import ModelFacts, Plan, override_steps
from pretrainctl.tokenizer import Tokenizer, load_tokenizer


def _make(node: DictConfig, where: str, **kwargs):
    """instantiate() with user mistakes (a bad key or value) turned into one clear sentence."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        if isinstance(cause, TypeError) and "argument" in str(cause):
            raise UserError(f"bad setting in {where}: {cause}") from None
        raise


@dataclass
class Experiment:
    tokenizer: Tokenizer
    datamodule: PackedDataModule
    model: LanguageModel
    objective: Objective
    plan: Plan
    module: PretrainModule


def build_tokenizer(cfg: DictConfig, datamodule: PackedDataModule) -> Tokenizer:
    if cfg.get("init_from"):
        return load_tokenizer(RunDir(cfg.init_from).tokenizer)
    carried = getattr(datamodule, "tokenizer_dir", None)  # pre-tokenized data (data=shards) fixes it
    if carried is not None:
        return load_tokenizer(carried)
    return build_tokenizer_spec(cfg).build(datamodule.train_texts(), Path(cfg.cache_dir))


def build_tokenizer_spec(cfg: DictConfig):
    """The tokenizer option's spec: ``build(texts, cache_dir)`` (path, cache or train) or ``train(texts)``."""
    return _make(cfg.tokenizer, "tokenizer")


def build_datamodule(cfg: DictConfig, tokenizer: Tokenizer | None = None) -> PackedDataModule:
    """With ``tokenizer=None`` the module is built first and the tokenizer attached afterwards (the
    tokenizer trains on the module's training texts)."""
    # data=shards and data=mixture have no single `source` (a prepared directory; several sources).
    extra = {"source": _make(cfg.data.source, "data.source")} if "source" in cfg.data else {}
    return _make(cfg.data, "data", **extra, tokenizer=tokenizer, seed=cfg.seed, cache_dir=cfg.cache_dir)


def build_curation(cfg: DictConfig) -> tuple[object, list, object]:
    """``pretrainctl data prepare``: the document source, the curation stages in order (``curation.stages``,
    a mapping or list of ``_target_`` nodes; a null entry is switched off) and the tokenizer spec."""
    if "source" not in cfg.data:
        raise UserError("data prepare reads one document source; choose data=stdlib, files, hf or synthetic.")
    nodes = cfg.curation.stages
    items = list(nodes.items()) if isinstance(nodes, DictConfig) else list(enumerate(nodes or []))
    stages = []
    for key, node in items:
        if node is None:
            continue
        missing = OmegaConf.missing_keys(node)
        if missing:
            raise UserError(f"set {sorted(missing)[0]} (it has no default).")
        try:
            stage = _make(node, f"curation.stages.{key}")
        except InstantiationException as exc:  # a stage's own check of its settings (ValueError)
            raise UserError(f"bad setting in curation.stages.{key}: {exc.__cause__ or exc}") from None
        for path in getattr(stage, "eval_files", None) or []:
            if not Path(path).is_file():
                raise UserError(f"curation.stages.{key}.eval_files: {path} does not exist.")
        stages.append(stage)
    return _make(cfg.data.source, "data.source"), stages, build_tokenizer_spec(cfg)


def build_model(cfg: DictConfig, tokenizer: Tokenizer) -> LanguageModel:
    return _make(cfg.arch, "arch", vocab_size=tokenizer.vocab_size)


def build_objective(cfg: DictConfig, tokenizer: Tokenizer, with_teacher: bool = True) -> Objective:
    """``with_teacher=False`` (eval, generate) skips loading a distillation teacher."""
    node = cfg.objective
    extra = {}
    objective_cls = get_class(cfg.objective._target_)
    if objective_cls.uses_mask_token:  # masked diffusion, MLM
        if tokenizer.mask_id is None:
            raise UserError(
                f"objective {objective_cls.__name__} masks tokens, but this tokenizer has no MASK token; "
                "use tokenizer=bpe, unigram or bytes, which define one."
            )
        extra["mask_id"] = tokenizer.mask_id
    if objective_cls.uses_teacher:  # distillation: the teacher is a trained run, loaded here
        if with_teacher and not node.get("teacher"):
            raise UserError(
                f"objective {objective_cls.__name__} needs objective.teacher=<run directory of a trained "
                "teacher>."
            )
        extra["teacher"] = (
            load_teacher(str(node.teacher), str(node.get("teacher_ckpt") or "last"), tokenizer)
            if with_teacher
            else None
        )
        settings = OmegaConf.to_container(node, resolve=True)
        node = OmegaConf.create({k: v for k, v in settings.items() if k not in ("teacher", "teacher_ckpt")})
    return _make(node, "objective", token_bytes=tokenizer.token_bytes(), **extra)


def build_plan(cfg: DictConfig, model: LanguageModel) -> Plan:
    tokens_per_step = cfg.data.batch_size * cfg.data.seq_len * cfg.trainer.accumulate_grad_batches
    count = model.num_params()
    facts = ModelFacts(
        count.total, count.active, count.non_embedding, model.flops_per_token(cfg.data.seq_len)
    )
    plan = _make(cfg.scaling, "scaling").resolve(facts, tokens_per_step * _world_size(cfg))
    if cfg.trainer.max_steps is not None:
        plan = override_steps(plan, int(cfg.trainer.max_steps))
    return plan


def _world_size(cfg: DictConfig) -> int:
    devices = cfg.trainer.devices
    return devices if isinstance(devices, int) and devices > 0 else 1


def build_schedule(cfg: DictConfig, total_steps: int):
    schedule = _make(cfg.schedule, "schedule")
    try:  # check the options now rather than at the first step
        for step in (0, total_steps - 1):
            value = schedule(step, total_steps)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"it gives LR multiplier {value} at step {step}")
    except ValueError as exc:
        raise UserError(f"bad schedule settings: {exc}") from None
    return schedule


def load_weights(model: LanguageModel, checkpoint: Path, objective: Objective | None = None) -> None:
    """Model weights from a Lightning checkpoint of a PretrainModule; with ``objective``, also the
    objective's own weights (e.g. MTP modules, saved under ``objective.``) when the checkpoint has them."""
    if not checkpoint.is_file():
        raise UserError(f"checkpoint {checkpoint} does not exist.")
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    weights = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise UserError(
            f"the weights in {checkpoint} do not fit this architecture: {str(exc)[:300]}"
        ) from None
    extra = {k.removeprefix("objective."): v for k, v in state.items() if k.startswith("objective.")}
    if objective is not None and extra:
        try:
            objective.load_state_dict(extra)
        except RuntimeError as exc:
            raise UserError(f"the objective weights in {checkpoint} do not fit: {str(exc)[:300]}") from None


def open_run(path: str, ckpt: str, setting: str = "run", ckpt_setting: str = "ckpt") -> tuple:
    """-> (RunDir, checkpoint file, saved config, tokenizer) of a trained run; ``setting`` and
    ``ckpt_setting`` name the options in error messages."""
    run = RunDir(path)
    if not run.is_run():
        raise UserError(f"{setting}={path} is not a run directory (it has no config.yaml).")
    checkpoint = run.checkpoint(ckpt)
    if not checkpoint.is_file():
        raise UserError(f"{ckpt_setting}={ckpt}: {checkpoint} does not exist; runs keep last and best.")
    return run, checkpoint, OmegaConf.load(run.config), load_tokenizer(run.tokenizer)


def load_teacher(path: str, ckpt: str, tokenizer: Tokenizer) -> LanguageModel:
    """A distillation teacher from its run directory, in eval mode; it must share ``tokenizer``."""
    run, checkpoint, cfg, teacher_tokenizer = open_run(
        path, ckpt, "objective.teacher", "objective.teacher_ckpt"
    )
    if teacher_tokenizer.fingerprint() != tokenizer.fingerprint():
        raise UserError(
            f"objective.teacher={path} uses a different tokenizer than this run, and distillation needs "
            f"the same one: train the student with tokenizer.path={run.tokenizer} (or the teacher's "
            "tokenizer settings and data)."
        )
    teacher = build_model(cfg, teacher_tokenizer)
    load_weights(teacher, checkpoint)
    return teacher.eval()


def build_experiment(cfg: DictConfig) -> Experiment:
    datamodule = build_datamodule(cfg)
    tokenizer = build_tokenizer(cfg, datamodule)
    datamodule.tokenizer = tokenizer
    model = build_model(cfg, tokenizer)
    if cfg.get("init_from"):
        load_weights(model, RunDir(cfg.init_from).checkpoint("last"))
    objective = build_objective(cfg, tokenizer)
    plan = build_plan(cfg, model)
    # Data phases and the MeCo cooldown switch at fractions of the run's global batches.
    datamodule.set_horizon(plan.steps * cfg.trainer.accumulate_grad_batches * _world_size(cfg))
    schedule = build_schedule(cfg, plan.steps)
    optimizer = _make(cfg.optim, "optim")
    guard = _make(cfg.guard, "guard") if cfg.get("guard") else None
    module = PretrainModule(model, objective, optimizer, schedule, plan.steps, guard=guard)
    return Experiment(tokenizer, datamodule, model, objective, plan, module)


def build_trainer(cfg: DictConfig, run: RunDir, max_steps: int, callbacks: list[L.Callback]) -> L.Trainer:
    options = OmegaConf.to_container(cfg.trainer, resolve=True)
    options.pop("max_steps")
    logger = _make(cfg.logger, "logger", save_dir=str(run.path))
    return L.Trainer(
        **options,
        max_steps=max_steps,
        max_epochs=-1,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        logger=logger,
        callbacks=callbacks,
        log_every_n_steps=cfg.log_every,
        default_root_dir=str(run.path),
    )
