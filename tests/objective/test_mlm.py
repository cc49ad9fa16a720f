"""Masked language modelling: BERT's 80/10/10 corruption, the loss on selected positions only, fixed
validation masks, and no bits per byte anywhere (summary, end-of-run and sweep tables)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from rich.console import Console

from pretrainctl.errors import UserError
from pretrainctl.evaluate.generate import generate
from pretrainctl.objective.mlm import MaskedLMObjective
from pretrainctl.runs import collect
from pretrainctl.sweep import sweep_table
from pretrainctl.tokenizer.bytes import ByteTokenizer
from pretrainctl.train import run_train
from tests.helpers import tiny_config

TOK = ByteTokenizer()


def objective(**kwargs) -> MaskedLMObjective:
    return MaskedLMObjective(TOK.token_bytes(), mask_id=TOK.mask_id, **kwargs)


def test_corruption_is_80_10_10_on_30_percent_of_the_scored_positions():
    torch.manual_seed(0)
    tokens = torch.randint(0, 256, (400, 250))
    keep = torch.rand(tokens.shape) < 0.7
    inputs, selected = objective().corrupt(tokens, keep)
    assert not (selected & ~keep).any() and torch.equal(inputs[~selected], tokens[~selected])
    n = int(selected.sum())
    assert selected.sum() / keep.sum() == pytest.approx(0.3, abs=0.005)
    to_mask = (inputs == TOK.mask_id) & selected
    changed = (inputs != tokens) & ~to_mask & selected
    assert int(to_mask.sum()) / n == pytest.approx(0.8, abs=0.01)
    # random replacements are ordinary byte tokens, never EOS/BOS/PAD/MASK; 1/256 of them equal the
    # original token by chance, so "changed" sees 255/256 of the 10%
    assert int(changed.sum()) / n == pytest.approx(0.1 * 255 / 256, abs=0.006)
    assert (inputs[selected & ~to_mask] < 256).all()


def test_loss_is_cross_entropy_on_the_selected_positions_only():
    class Spy(torch.nn.Module):
        """A bidirectional 'model' whose logits we know: a fixed random table per input token."""

        def __init__(self) -> None:
            super().__init__()
            self.table = torch.nn.Parameter(torch.randn(TOK.vocab_size, TOK.vocab_size))

        def forward(self, tokens, *, causal=True):
            assert not causal
            self.inputs = tokens
            return self.table[tokens]

        def logits(self, hidden):
            return hidden

    model, obj = Spy(), objective()
    tokens = torch.randint(0, 256, (8, 40))
    torch.manual_seed(1)
    out = obj.loss(model, {"tokens": tokens})
    torch.manual_seed(1)
    _, selected = obj.corrupt(tokens, torch.ones_like(tokens, dtype=torch.bool))
    logits = model.table[model.inputs][selected]
    assert out.n_targets == int(selected.sum())
    assert float(out.loss) == pytest.approx(float(F.cross_entropy(logits, tokens[selected])), rel=1e-5)
    acc = (logits.argmax(-1) == tokens[selected]).float().mean()
    assert float(out.metrics["masked_acc"]) == pytest.approx(float(acc))
    # validation: fixed masks per batch, the global RNG untouched, bits = the same cross-entropy
    state = torch.random.get_rng_state()
    a, b = obj.nll(model, {"tokens": tokens}), obj.nll(model, {"tokens": tokens})
    assert torch.equal(state, torch.random.get_rng_state()) and a.bits == b.bits
    assert float(a.bits) * math.log(2) / int(a.tokens) > 0 and not obj.has_bpb


def test_bad_settings_are_refused():
    with pytest.raises(UserError, match="mask_rate"):
        objective(mask_rate=0.0)
    with pytest.raises(UserError, match="replace_mask"):
        objective(replace_mask=0.9, replace_random=0.2)


@pytest.mark.slow
def test_mlm_run_reports_no_bpb_and_refuses_to_generate(tmp_path, cache_dir, capsys):
    cfg = tiny_config(["objective=mlm", "tokenizer=bytes", "trainer.max_steps=12"], cache_dir)
    summary = run_train(cfg, tmp_path / "sweep" / "0", ["objective=mlm"])
    assert summary["val_bpb"] is None and "not defined for mlm" in summary["bpb_note"]
    assert summary["val_loss"] > 0
    assert "not defined for mlm" in capsys.readouterr().err.replace("\n", " ").replace("│", "")
    console = Console(width=200, record=True)
    console.print(sweep_table(collect([tmp_path / "sweep"]), "sweep"))
    assert "not defined" in console.export_text()
    with pytest.raises(UserError, match="not a generator"):
        generate(str(tmp_path / "sweep" / "0"), "def ", max_new_tokens=4)
