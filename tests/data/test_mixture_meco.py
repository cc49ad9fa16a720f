"""Mixtures with phases (data=mixture) and metadata conditioning then cooldown (MeCo)."""

from __future__ import annotations

import json
from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from pretrainctl import build
from pretrainctl.data.datamodule import PackedDataModule
from pretrainctl.data.mixture import MixtureDataModule, temperature_weights, unimax_weights
from pretrainctl.data.packing import batch_rows
from pretrainctl.data.sources import Source
from pretrainctl.tokenizer.bytes import ByteTokenizer
from pretrainctl.train import run_train
from tests.helpers import tiny_config


class Letters(Source):
    """Documents made of one letter, so every packed row tells which source it came from."""

    def __init__(self, letter: str, n_docs: int = 40) -> None:
        self.letter, self.n_docs = letter, n_docs

    def _load(self):
        docs = [self.letter * (20 + i % 7) for i in range(self.n_docs)]
        return docs[2:], docs[:2]

    def metadata(self, split):
        return [f"src.{self.letter}{i}" for i in range(len(self.documents(split)))]

    def fingerprint(self) -> str:
        return f"letters-{self.letter}-{self.n_docs}"


def row_source(row: torch.Tensor) -> str:
    letters = {chr(int(t)) for t in row if int(t) < 256}
    assert len(letters) == 1, letters
    return letters.pop()


def mixture(**kw) -> MixtureDataModule:
    sources = {s: Letters(s, kw.pop(f"n_{s}", 40)) for s in "abc"}
    dm = MixtureDataModule(sources, ByteTokenizer(), seq_len=15, batch_size=10, seed=7, **kw)
    dm.set_horizon(kw.pop("horizon", 40))
    dm.setup()
    return dm


def test_sampled_mixture_matches_weights_and_switches_at_the_phase():
    phases = [{"until": 0.5}, {"until": 1.0, "weights": {"a": 0, "b": 1, "c": 1}}]
    dm = mixture(weights={"a": 5, "b": 3, "c": 2}, phases=phases)
    seen = [Counter(row_source(r) for r in dm.train_batch(i)["tokens"]) for i in range(40)]
    first, second = sum(seen[:20], Counter()), sum(seen[20:], Counter())
    assert first == {"a": 100, "b": 60, "c": 40}  # 200 rows at 0.5 / 0.3 / 0.2
    assert second == {"b": 100, "c": 100}
    assert seen[19]["a"] > 0 and seen[20]["a"] == 0  # the switch is at batch 0.5 x 40
    summary = dm.data_summary(40)["data_mixture"]["phases"]
    assert [p["start_batch"] for p in summary] == [0, 20]
    assert summary[0]["rows"] == dict(first) and summary[1]["rows"] == {"a": 0, **second}
    assert summary[0]["sampled"] == pytest.approx(summary[0]["weights"])


def test_epoch_cap_stops_a_source_and_resume_and_ranks_are_exact():
    dm = mixture(weights={"a": 1, "b": 1, "c": 1}, epochs={"c": 1}, n_c=6)
    n_c = len(dm.parts["c"].train_rows)
    rows = [dm.train_batch(i)["tokens"] for i in range(12)]
    c_rows = [r for b in rows for r in b if row_source(r) == "c"]
    assert len(c_rows) == n_c  # one pass over c, then only a and b
    as_set = Counter(tuple(r.tolist()) for r in c_rows)  # each of c's rows exactly once
    assert as_set == Counter(tuple(r.tolist()) for r in dm.parts["c"].train_rows)
    other = mixture(weights={"a": 1, "b": 1, "c": 1}, epochs={"c": 1}, n_c=6)
    other.start_batch = 5
    other.trainer = SimpleNamespace(world_size=2, global_rank=1)
    stream = iter(other.train_dataloader())  # rank 1 of 2 after 5 batches: global 11, 13, ...
    torch.testing.assert_close(next(stream)["tokens"], rows[11])
    torch.testing.assert_close(other.train_batch(3)["tokens"], rows[3])  # replays from the start


def test_temperature_and_unimax_weights():
    w = temperature_weights({"a": 900, "b": 100}, temperature=2.0)
    assert w["a"] == pytest.approx(30 / 40) and w["b"] == pytest.approx(10 / 40)
    # budget 1000 rows: b's cap (2 epochs x 100) binds, the other two share the rest equally.
    u = unimax_weights({"a": 5000, "b": 100, "c": 800}, budget=1000, epochs={"b": 2.0})
    assert u == pytest.approx({"a": 0.4, "b": 0.2, "c": 0.4})


def test_meco_rows_mask_exactly_the_prefix_and_switch_at_cooldown():
    tok = ByteTokenizer()
    dm = PackedDataModule(Letters("a"), tok, seq_len=15, batch_size=4, seed=1, meco_cooldown=0.25)
    dm.set_horizon(20)
    dm.setup()
    # Plain reference: prefix (masked) + document + EOS per document, cut into rows of 16.
    flat, mask = [], []
    for doc, meta in zip(Letters("a").documents("train"), Letters("a").metadata("train")):
        prefix = tok.encode(f"{meta}\n\n")
        flat += prefix + tok.encode(doc) + [tok.eos_id]
        mask += [False] * len(prefix) + [True] * (len(doc) + 1)
    n = len(flat) // 16 * 16
    assert dm.meco_rows.flatten().tolist() == flat[:n] and dm.meco_mask.flatten().tolist() == mask[:n]
    for i in range(20):
        batch = dm.train_batch(i)
        if i < 15:  # 1 - 0.25 of 20 batches with metadata
            idx = batch_rows(len(dm.meco_rows), 4, i, 1)
            assert torch.equal(batch["tokens"], dm.meco_rows[idx]) and torch.equal(
                batch["loss_mask"], dm.meco_mask[idx]
            )
        else:
            idx = batch_rows(len(dm.train_rows), 4, i - 15, 1)
            assert torch.equal(batch["tokens"], dm.train_rows[idx]) and bool(batch["loss_mask"].all())
    assert dm.data_summary(20)["data_meco"]["switch_batch"] == 15


def test_masked_positions_do_not_contribute_to_the_loss(cache_dir):
    cfg = tiny_config(["tokenizer=bytes"], cache_dir)
    tok = ByteTokenizer()
    torch.manual_seed(0)
    model, objective = build.build_model(cfg, tok), build.build_objective(cfg, tok)
    tokens = torch.randint(0, 256, (3, 17))
    mask = torch.rand(3, 17) > 0.4
    out = objective.loss(model, {"tokens": tokens, "loss_mask": mask})
    logits = model.logits(model(tokens[:, :-1]))
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten(), reduction="none")
    keep = mask[:, 1:].flatten()
    torch.testing.assert_close(out.loss, ce[keep].mean(), rtol=1e-5, atol=1e-6)
    assert out.n_targets == int(keep.sum())
    # Changing what sits at masked target positions (which no later position sees as a target) leaves
    # the loss unchanged only through the mask: check the gradient of masked logits is zero instead.
    hidden = model(tokens[:, :-1]).detach().requires_grad_(True)
    loss = objective.head_loss(model, hidden, tokens[:, 1:], mask[:, 1:])[0]
    loss.backward()
    assert hidden.grad[~mask[:, 1:]].abs().max() == 0 and hidden.grad[mask[:, 1:]].abs().max() > 0


def test_training_on_a_mixture_with_meco_logs_the_sampled_mixture(tmp_path, cache_dir):
    overrides = ["data=mixture", "tokenizer=bytes", "data.sources.core.max_files=12",
                 "data.sources.web.max_files=12", "data.meco_cooldown=0.25",
                 "trainer.max_steps=12"]  # fmt: skip
    summary = run_train(tiny_config(overrides, cache_dir), tmp_path / "run")
    assert summary["status"] == "completed"
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    phases = on_disk["data_mixture"]["phases"]
    assert [p["start_batch"] for p in phases] == [0, round(0.8 * 12)]  # phases: until 0.8, 1.0
    rows = [sum(p["rows"].values()) for p in phases]
    assert rows == [round(0.8 * 12) * 4, (12 - round(0.8 * 12)) * 4]  # batch_size 4 (TINY)
    assert phases[0]["sampled"] == pytest.approx(phases[0]["weights"], abs=1 / rows[0] + 1e-9)
    assert phases[1]["rows"]["synthetic"] == 0
    meco = on_disk["data_meco"]  # metadata for the first 1 - 0.25 of the 12 batches
    assert meco["switch_batch"] == 9 and meco["metadata_batches"] == 9 and meco["plain_batches"] == 3
