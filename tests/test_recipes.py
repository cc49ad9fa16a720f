"""Training recipes end to end on tiny runs: a WSD decay branched from a stable-phase checkpoint equals
a fresh run that decays at the same step; EMA and soup checkpoints equal their definitions and load
for eval; the spike guard skips or rewinds an injected spike; per-group gradient norms are logged."""

import lightning as L
import pytest
import torch

from pretrainctl.evaluate.checkpoint import load_trained
from pretrainctl.optim.averaging import soup, step_checkpoints
from pretrainctl.runs import RunDir
from pretrainctl.train import run_train
from tests.helpers import tiny_config

WSD = ["schedule=wsd", "schedule.warmup=2", "tokenizer=bytes"]  # warmup in steps: same in every branch


def train_losses(run: RunDir) -> dict[int, float]:
    return {r["step"]: r["train_loss"] for r in run.read_metrics() if "train_loss" in r}


def weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def test_decay_from_stable_checkpoint_equals_fresh_wsd_run(tmp_path, cache_dir):
    # a long stable run (30 steps, decay only over its last 6) keeps step checkpoints every 10 steps
    long = [*WSD, "trainer.max_steps=30", "checkpoint.every_n_steps=10"]
    run_train(tiny_config(long, cache_dir), tmp_path / "long", long)
    assert [p.name for p in step_checkpoints(RunDir(tmp_path / "long"))] == [
        "step-000010.ckpt", "step-000020.ckpt", "step-000030.ckpt"
    ]  # fmt: skip
    # branch: decay for 6 steps from step 10 -> steps 11..16 at the same peak LR
    ckpt = tmp_path / "long" / "checkpoints" / "step-000010.ckpt"
    branch = [f"decay_from={ckpt}", "trainer.max_steps=16"]
    out = run_train(tiny_config([*WSD, *branch], cache_dir), tmp_path / "branch", branch)
    assert out["status"] == "completed" and out["step"] == 16
    # fresh run of 16 steps whose decay starts at step 10
    fresh = [*WSD, "trainer.max_steps=16", "schedule.decay_steps=6"]
    ref = run_train(tiny_config(fresh, cache_dir), tmp_path / "fresh", fresh)
    a, b = train_losses(RunDir(tmp_path / "branch")), train_losses(RunDir(tmp_path / "fresh"))
    assert sorted(a) == list(range(11, 17))
    assert [a[s] for s in a] == [b[s] for s in a]  # bitwise: same weights, optimizer state and data
    assert out["val_bpb"] == ref["val_bpb"]
    lr_a, lr_b = ({r["step"]: r["lr"] for r in RunDir(tmp_path / p).read_metrics() if "lr" in r}
                  for p in ("branch", "fresh"))  # fmt: skip
    assert [lr_a[s] for s in range(11, 17)] == [lr_b[s] for s in range(11, 17)]
    assert lr_a[11] < lr_b[9] and lr_a[16] == pytest.approx(0.0, abs=1e-12)  # decaying from the peak
    wa = weights(tmp_path / "branch/checkpoints/last.ckpt")
    wb = weights(tmp_path / "fresh/checkpoints/last.ckpt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


class Record(L.Callback):
    """Keeps a copy of the module's state after every optimizer step."""

    def __init__(self) -> None:
        self.states: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.states[trainer.global_step] = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


def test_ema_and_soup_match_their_definitions(tmp_path, cache_dir):
    overrides = ["tokenizer=bytes", "trainer.max_steps=12", "ema.decay=0.8", "checkpoint.every_n_steps=4"]
    rec = Record()
    run_train(tiny_config(overrides, cache_dir), tmp_path / "r", overrides, callbacks=[rec])
    run = RunDir(tmp_path / "r")
    expected = {k: v.double() for k, v in rec.states[1].items()}
    for t in range(2, 13):  # ema_t = d_t ema + (1 - d_t) w_t, d_t = min(decay, (1 + t) / (10 + t)), t from 0
        d = min(0.8, (t) / (9 + t))
        expected = {k: d * expected[k] + (1 - d) * rec.states[t][k].double() for k in expected}
    ema = weights(run.checkpoint("ema"))
    for k, v in ema.items():
        torch.testing.assert_close(v.double(), expected[k], rtol=1e-5, atol=1e-6)
    assert not torch.equal(ema["model.embed.weight"], rec.states[12]["model.embed.weight"])
    mixed = soup(step_checkpoints(run)[-2:])["state_dict"]  # steps 8 and 12
    for k, v in mixed.items():
        torch.testing.assert_close(v, (rec.states[8][k] + rec.states[12][k]) / 2, rtol=1e-5, atol=1e-6)
    trained = load_trained(str(run.path), "ema")  # eval/generate take ckpt=ema
    torch.testing.assert_close(trained.model.embed.weight, ema["model.embed.weight"])
    # per-group gradient norms: their root-sum-square is the global (pre-clip) norm
    rec0 = [r for r in run.read_metrics() if "grad_norm" in r][-1]
    groups = [v for k, v in rec0.items() if k.startswith("grad_norm/")]
    assert len(groups) >= 3 and sum(g * g for g in groups) ** 0.5 == pytest.approx(
        rec0["grad_norm"], rel=1e-4
    )


class Spike(L.Callback):
    """Replaces batch ``at``'s tokens with uniform random ids (a corrupted batch) and records the
    module's state just before and just after that batch."""

    def __init__(self, at: int) -> None:
        self.at, self.before, self.after, self.states = at, None, None, Record()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.at:
            batch["tokens"].random_(0, 256)
            self.before = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.states.on_train_batch_end(trainer, pl_module)
        if batch_idx == self.at:
            self.after = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


GUARD = ["tokenizer=bytes", "trainer.max_steps=30", "guard.window=8", "guard.min_history=8"]


def test_skip_guard_skips_the_spiking_batch(tmp_path, cache_dir):
    spike = Spike(at=20)
    overrides = [*GUARD, "guard=skip"]
    out = run_train(tiny_config(overrides, cache_dir), tmp_path / "s", overrides, callbacks=[spike])
    assert out["status"] == "completed" and out["step"] == 30  # one more batch consumed, not a step less
    assert all(torch.equal(spike.before[k], spike.after[k]) for k in spike.before)  # no update applied
    metrics = RunDir(tmp_path / "s").read_metrics()
    assert metrics[-2]["guard/spikes"] == 1 and metrics[-2]["guard/lr_scale"] == 1.0
    assert [r["step"] for r in metrics if "train_loss" in r] == list(range(1, 31))  # no duplicate rows


def test_no_spike_without_corruption(tmp_path, cache_dir):
    overrides = [*GUARD, "guard=skip"]
    run_train(tiny_config(overrides, cache_dir), tmp_path / "n", overrides)
    assert [r for r in RunDir(tmp_path / "n").read_metrics() if "train_loss" in r][-1]["guard/spikes"] == 0


def test_rewind_guard_restores_last_good_state_and_lowers_lr(tmp_path, cache_dir):
    spike = Spike(at=22)  # batch 22 would be step 23; snapshots every 5 steps -> back to step 20
    overrides = [*GUARD, "guard=rewind", "guard.snapshot_every=5", "guard.lr_factor=0.5", "schedule=constant"]
    out = run_train(tiny_config(overrides, cache_dir), tmp_path / "w", overrides, callbacks=[spike])
    assert out["status"] == "completed"
    good = spike.states.states[20]
    assert all(torch.equal(spike.after[k], good[k]) for k in good)  # weights of step 20 again
    metrics = [r for r in RunDir(tmp_path / "w").read_metrics() if "lr" in r]
    assert metrics[-1]["guard/lr_scale"] == 0.5
    assert metrics[-1]["lr"] == pytest.approx(0.5 * metrics[18]["lr"])  # constant schedule, halved
