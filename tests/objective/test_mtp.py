"""Multi-token prediction: gradients reach every MTP module, the main head is exactly the AR
objective, MTP targets are never visible to their own prediction, a short run's losses fall, and a
trained run's MTP weights load back for eval/generate while inference uses the main model only."""

import math

import pytest
import torch

from pretrainctl.arch.dense import DenseTransformer
from pretrainctl.errors import UserError
from pretrainctl.evaluate.checkpoint import load_trained
from pretrainctl.evaluate.generate import generate
from pretrainctl.evaluate.run_eval import evaluate
from pretrainctl.objective.ar import NextTokenObjective
from pretrainctl.objective.mtp import MultiTokenObjective
from pretrainctl.runs import RunDir
from pretrainctl.train import run_train
from tests.helpers import tiny_config

V = 50


def setup(depth: int = 2, weight: float = 0.3, seed: int = 0):
    torch.manual_seed(seed)
    model = DenseTransformer(V, d_model=32, n_layers=2, n_heads=4)
    obj = MultiTokenObjective(
        torch.ones(V, dtype=torch.long), d_model=32, n_heads=4, depth=depth, weight=weight
    )
    return model, obj


def test_gradients_reach_every_mtp_parameter():
    model, obj = setup(depth=2)
    tokens = torch.randint(0, V, (3, 20))
    out = obj.loss(model, {"tokens": tokens})
    out.loss.backward()
    for name, p in obj.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert set(out.metrics) >= {"ntp_loss", "mtp_loss_1", "mtp_loss_2"}
    expected = out.metrics["ntp_loss"] + 0.3 / 2 * (out.metrics["mtp_loss_1"] + out.metrics["mtp_loss_2"])
    torch.testing.assert_close(out.loss.detach(), expected)


def test_main_head_is_the_ar_objective():
    model, obj = setup()
    b = {"tokens": torch.randint(0, V, (3, 20)), "loss_mask": torch.rand(3, 20) > 0.3}
    ar = NextTokenObjective(torch.ones(V, dtype=torch.long))
    torch.testing.assert_close(obj.loss(model, b).metrics["ntp_loss"], ar.loss(model, b).loss)
    torch.testing.assert_close(obj.nll(model, b).bits, ar.nll(model, b).bits)
    _, obj0 = setup(weight=0.0)
    torch.testing.assert_close(obj0.loss(model, b).loss, ar.loss(model, b).loss)


def test_mtp_targets_stay_unpredictable_on_random_tokens():
    """On i.i.d. uniform tokens no prediction can beat log V; a module that saw its own target (an
    off-by-one in the shifts) would drive its loss far below that within these steps."""
    model, obj = setup(depth=2, weight=1.0)
    opt = torch.optim.AdamW([*model.parameters(), *obj.parameters()], lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        out = obj.loss(model, {"tokens": torch.randint(0, V, (8, 24), generator=g)})
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    for key in ("ntp_loss", "mtp_loss_1", "mtp_loss_2"):
        assert out.metrics[key] > math.log(V) - 0.25, (key, float(out.metrics[key]))


def test_depth_needs_long_enough_rows():
    model, obj = setup(depth=3)
    with pytest.raises(UserError, match="objective.depth=3"):
        obj.loss(model, {"tokens": torch.randint(0, V, (1, 4))})
    with pytest.raises(UserError, match="objective.depth"):
        setup(depth=0)


@pytest.mark.slow
def test_mtp_run_losses_fall(tmp_path, cache_dir):
    overrides = ["objective=mtp", "trainer.max_steps=40", "optim.lr=1e-2", "trainer.val_check_interval=40"]
    summary = run_train(tiny_config(overrides, cache_dir), tmp_path / "run")
    rows = [r for r in RunDir(tmp_path / "run").read_metrics() if "ntp_loss" in r]
    assert len(rows) == 40 and all("mtp_loss_1" in r for r in rows)
    for key in ("ntp_loss", "mtp_loss_1"):
        first, last = (sum(r[key] for r in part) / 5 for part in (rows[:5], rows[-5:]))
        assert last < first - 0.5, (key, first, last)
    assert 0 < summary["val_bpb"] < 8


def test_mtp_checkpoint_serves_eval_and_generate(tmp_path, cache_dir):
    overrides = ["objective=mtp", "objective.depth=2", "trainer.max_steps=3", "trainer.val_check_interval=3"]
    summary = run_train(tiny_config(overrides, cache_dir), tmp_path / "run")
    run = RunDir(tmp_path / "run")
    trained = load_trained(str(run.path))
    state = torch.load(run.checkpoint("last"), weights_only=False)["state_dict"]
    names = [name for name, _ in trained.objective.named_parameters()]
    assert any(name.startswith("mtp.1.") for name in names)
    for name, p in trained.objective.named_parameters():
        torch.testing.assert_close(p, state[f"objective.{name}"], msg=name)
    assert evaluate(str(run.path), limit_batches=4)["val_bpb"] == pytest.approx(summary["val_bpb"], rel=1e-5)
    text = generate(str(run.path), "def ", max_new_tokens=8, temperature=0.0)
    assert text[0].startswith("def ") and len(text[0]) > 4
    fast = generate(
        str(run.path), "def ", max_new_tokens=8, temperature=0.0, options={"mtp": {"speculative": True}}
    )
    assert fast == text


def greedy(obj, model, prompt, speculative, n=30, stop_id=None):
    return obj.generate(
        model, prompt, speculative=speculative, max_new_tokens=n, temperature=0.0, top_k=None,
        generator=torch.Generator(), max_context=64, stop_id=stop_id,
    )  # fmt: skip


def test_speculative_greedy_equals_plain_greedy():
    model, obj = setup(depth=2, weight=1.0, seed=1)
    prompt = torch.tensor([[3, 4, 5]])
    untrained = greedy(obj, model, prompt, False)
    assert torch.equal(greedy(obj, model, prompt, True), untrained)
    # Train on a counting pattern (t_{i+1} = t_i + 1 mod 10) so the MTP drafts get accepted.
    opt = torch.optim.AdamW([*model.parameters(), *obj.parameters()], lr=1e-2)
    torch.manual_seed(0)
    for _ in range(60):
        start = torch.randint(0, 10, (8, 1))
        tokens = (start + torch.arange(24)) % 10
        loss = obj.loss(model, {"tokens": tokens}).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    plain = greedy(obj, model, prompt, False)
    spec = greedy(obj, model, prompt, True)
    assert torch.equal(spec, plain) and spec.shape[1] == 3 + 30
    stats = obj.last_decode
    assert stats["accepted"] > 0 and stats["forwards"] < 30, stats
    # a stop token ends both at the same place
    stop = int(plain[0, 10])
    assert torch.equal(
        greedy(obj, model, prompt, True, stop_id=stop), greedy(obj, model, prompt, False, stop_id=stop)
    )
    with pytest.raises(UserError, match="temperature=0"):
        obj.generate(model, prompt, speculative=True, max_new_tokens=4, temperature=0.8, top_k=None,
                     generator=torch.Generator(), max_context=64)  # fmt: skip
