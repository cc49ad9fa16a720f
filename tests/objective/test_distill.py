"""Distillation: the KL terms match their definitions (torch's kl_div), chunking changes nothing, the
teacher is frozen and absent from the optimizer and the checkpoint, tokenizer mismatches are user
errors, and a student distilled from a trained teacher through the CLI path learns and evaluates."""

import pytest
import torch
import torch.nn.functional as F

from pretrainctl import build
from pretrainctl.arch.dense import DenseTransformer
from pretrainctl.errors import UserError
from pretrainctl.evaluate.checkpoint import load_trained
from pretrainctl.objective.distill import DistillObjective
from pretrainctl.runs import RunDir
from pretrainctl.train import run_train
from tests.helpers import tiny_config
from tests.objective.teacher import untrained_run

V = 61


def models():
    torch.manual_seed(0)
    student = DenseTransformer(V, d_model=32, n_layers=1, n_heads=4)
    teacher = DenseTransformer(V, d_model=48, n_layers=2, n_heads=4, tie_embeddings=False)
    return student, teacher


def batch():
    g = torch.Generator().manual_seed(2)
    return {
        "tokens": torch.randint(0, V, (3, 13), generator=g),
        "loss_mask": torch.rand(3, 13, generator=g) > 0.2,
    }


@pytest.mark.parametrize("kl", ["forward", "reverse"])
def test_loss_matches_reference_kl(kl):
    student, teacher = models()
    b, T, alpha = batch(), 2.0, 0.3
    obj = DistillObjective(torch.ones(V, dtype=torch.long), teacher, kl=kl, temperature=T, alpha=alpha)
    tokens, keep = b["tokens"], b["loss_mask"][:, 1:]
    zs = student.logits(student(tokens[:, :-1]))[keep]  # (n, V)
    zt = teacher.logits(teacher(tokens[:, :-1]))[keep].detach()
    log_q, log_p = F.log_softmax(zs / T, -1), F.log_softmax(zt / T, -1)
    # kl_div(input, target) = KL(target || input), both given as log-probabilities
    ref_kl = F.kl_div(log_q, log_p, log_target=True, reduction="batchmean") if kl == "forward" else (
        F.kl_div(log_p, log_q, log_target=True, reduction="batchmean")
    )  # fmt: skip
    ce = F.cross_entropy(zs, tokens[:, 1:][keep])
    out = obj.loss(student, b)
    torch.testing.assert_close(out.loss, alpha * ce + (1 - alpha) * T**2 * ref_kl)
    torch.testing.assert_close(out.metrics["kl"], ref_kl)
    # chunked: same loss and student gradients; the teacher gets none
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in student.named_parameters()}
    student.zero_grad()
    chunked = DistillObjective(
        torch.ones(V, dtype=torch.long), teacher, kl=kl, temperature=T, alpha=alpha, chunk_size=5
    )
    out2 = chunked.loss(student, b)
    out2.loss.backward()
    torch.testing.assert_close(out2.loss, out.loss)
    for n, p in student.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], msg=n)
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())


def test_teacher_is_frozen_unsaved_and_not_optimized(tmp_path, cache_dir):
    teacher_run = untrained_run(tmp_path / "teacher", ["arch.n_layers=1"], cache_dir)
    cfg = tiny_config(["tokenizer=bytes", "objective=distill", f"objective.teacher={teacher_run}"], cache_dir)
    exp = build.build_experiment(cfg)
    teacher = exp.objective.teacher
    exp.module.train()
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert not any("teacher" in k for k in exp.module.state_dict())
    optimized = {
        id(p) for g in exp.module.optimizer_builder.build(exp.module).param_groups for p in g["params"]
    }
    assert optimized == {id(p) for p in exp.model.parameters()}
    assert not optimized & {id(p) for p in teacher.parameters()}


def test_teacher_settings_are_user_errors(tmp_path, cache_dir):
    bytes_teacher = untrained_run(tmp_path / "teacher", [], cache_dir)
    with pytest.raises(UserError, match="needs objective.teacher="):
        build.build_experiment(tiny_config(["tokenizer=bytes", "objective=distill"], cache_dir))
    with pytest.raises(UserError, match="objective.teacher=/no/run is not a run directory"):
        build.build_experiment(
            tiny_config(["tokenizer=bytes", "objective=distill", "objective.teacher=/no/run"], cache_dir)
        )
    with pytest.raises(UserError, match="objective.teacher_ckpt=best"):
        build.build_experiment(
            tiny_config(["tokenizer=bytes", "objective=distill", f"objective.teacher={bytes_teacher}",
                         "objective.teacher_ckpt=best"], cache_dir)
        )  # fmt: skip
    # a BPE student cannot learn from a byte-level teacher
    with pytest.raises(UserError, match="different tokenizer.*tokenizer.path="):
        build.build_experiment(
            tiny_config(["objective=distill", f"objective.teacher={bytes_teacher}"], cache_dir)
        )
    with pytest.raises(UserError, match="objective.kl='sideways'"):
        DistillObjective(torch.ones(V, dtype=torch.long), kl="sideways")


@pytest.mark.slow
def test_distilled_student_learns_from_a_trained_teacher(tmp_path, cache_dir):
    """Teacher and student through run_train with the same (default) tokenizer settings: the shared
    tokenizer cache gives both the same tokenizer, so no tokenizer setting is needed."""
    common = ["trainer.val_check_interval=30", "optim.lr=1e-2"]
    run_train(
        tiny_config([*common, "trainer.max_steps=30", "arch.d_model=48"], cache_dir), tmp_path / "teacher"
    )
    teacher = f"objective.teacher={tmp_path / 'teacher'}"
    student = [*common, "trainer.max_steps=30", "objective=distill", teacher, "objective.alpha=0.0"]
    summary = run_train(tiny_config(student, cache_dir), tmp_path / "student")
    rows = [r for r in RunDir(tmp_path / "student").read_metrics() if "kl" in r]
    first, last = sum(r["kl"] for r in rows[:5]) / 5, sum(r["kl"] for r in rows[-5:]) / 5
    assert last < 0.5 * first, (first, last)
    assert 0 < summary["val_bpb"] < 8
    # eval/generate rebuild the student without loading the teacher
    trained = load_trained(str(tmp_path / "student"))
    assert trained.objective.teacher is None
    with pytest.raises(UserError, match="without a teacher"):
        trained.objective.loss(trained.model, {"tokens": torch.zeros(1, 4, dtype=torch.long)})
