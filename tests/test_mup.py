"""µP: at width_mult 1 the model is the standard one; the hidden-matrix LR scales as 1/width_mult;
and the coordinate check passes: layer outputs move by a width-independent amount under µP while
they grow with width under the standard parametrization (SP)."""

import pytest
import torch

from pretrainctl.arch.dense import DenseTransformer
from pretrainctl.optim.adamw import AdamWBuilder
from pretrainctl.optim.coord_check import coord_check, growth
from pretrainctl.optim.muon import MuonBuilder, NewtonSchulz


def test_width_mult_one_is_the_standard_model():
    torch.manual_seed(0)
    sp = DenseTransformer(50, d_model=32, n_layers=2, n_heads=4)
    torch.manual_seed(0)
    mup = DenseTransformer(50, d_model=32, n_layers=2, n_heads=4, mup_base_width=32)
    tokens = torch.randint(0, 50, (2, 9))
    for p, q in zip(sp.parameters(), mup.parameters(), strict=True):
        assert torch.equal(p, q)
    torch.testing.assert_close(sp(tokens), mup(tokens))


def test_mup_scales_init_output_and_hidden_lr():
    torch.manual_seed(0)
    model = DenseTransformer(50, d_model=128, n_layers=2, n_heads=4, mup_base_width=32)  # width_mult 4
    assert model.mup_width_mult == 4.0
    q = model.blocks[0].attn.q.weight
    assert float(q.std()) == pytest.approx(0.02 / 2, rel=0.05)  # init_std / sqrt(4)
    assert float(model.embed.weight.std()) == pytest.approx(0.02, rel=0.05)
    groups = {g["name"]: g["lr"] for g in AdamWBuilder(lr=4e-3).build(model).param_groups}
    assert groups["hidden"] == pytest.approx(1e-3) and groups["embedding"] == groups["vector"] == 4e-3
    # Muon's own per-shape rule handles width: its LR is not divided again
    muon = MuonBuilder(NewtonSchulz(), lr=0.02).build(model).param_groups[0]
    assert muon["name"] == "muon" and muon["lr"] == 0.02


def test_mup_without_output_multiplier_keeps_the_other_rules():
    torch.manual_seed(0)
    mup = DenseTransformer(50, d_model=128, n_layers=2, n_heads=4, mup_base_width=32)
    torch.manual_seed(0)
    plain = DenseTransformer(50, d_model=128, n_layers=2, n_heads=4, mup_base_width=32, mup_output_mult=False)
    for p, q in zip(mup.parameters(), plain.parameters(), strict=True):
        assert torch.equal(p, q)  # same µP init
    assert plain.blocks[0].attn.scale == mup.blocks[0].attn.scale
    tokens = torch.randint(0, 50, (2, 9))
    torch.testing.assert_close(plain(tokens), mup(tokens) * 4)  # only the 1/width_mult is gone
    groups = {g["name"]: g["lr"] for g in AdamWBuilder(lr=4e-3).build(plain).param_groups}
    assert groups["hidden"] == pytest.approx(1e-3) and groups["embedding"] == 4e-3


@pytest.mark.parametrize("tied", [True, False])
def test_coordinate_check_flat_under_mup_growing_under_sp(tied):
    torch.manual_seed(1)
    batches = [torch.randint(0, 64, (4, 33)) for _ in range(4)]
    widths = [32, 64, 128, 256]
    sp = coord_check(widths, batches, vocab_size=64, mup_base_width=None, lr=1e-2, tie_embeddings=tied)
    mup = coord_check(widths, batches, vocab_size=64, mup_base_width=32, lr=1e-2, tie_embeddings=tied)
    for layer in ("block0", "block1", "logits"):
        assert 0.5 < growth(mup, layer) < 2.0, (layer, mup)  # measured 0.85-1.14x tied, 0.61-0.82x untied
    assert growth(sp, "block1") > 5 and growth(sp, "logits") > 2, sp  # measured 223x/67x and 4.5x/4.4x


def test_untied_mup_head_keeps_init_and_lr_and_takes_the_multiplier():
    torch.manual_seed(0)
    model = DenseTransformer(50, d_model=128, n_layers=2, n_heads=4, mup_base_width=32, tie_embeddings=False)
    head = model.head_weight()
    assert head is not model.embed.weight
    assert float(head.std()) == pytest.approx(0.02, rel=0.05)  # readout init is not / sqrt(width_mult)
    groups = {g["name"]: g["lr"] for g in AdamWBuilder(lr=4e-3).build(model).param_groups}
    assert groups["head"] == groups["embedding"] == 4e-3 and groups["hidden"] == pytest.approx(1e-3)
    tokens = torch.randint(0, 50, (2, 9))
    hidden = model(tokens)
    unscaled = model.norm(model.blocks[1](model.blocks[0](model.embed(tokens), causal=True), causal=True))
    torch.testing.assert_close(model.logits(hidden), unscaled @ head.T / 4)  # 1/width_mult on the readout


def test_tied_mup_prints_its_notice_once(capsys):
    from pretrainctl.arch import decoder

    decoder._notice_tied_mup.cache_clear()
    DenseTransformer(50, d_model=64, n_layers=1, n_heads=4, mup_base_width=32, tie_embeddings=False)
    assert "tied head" not in capsys.readouterr().err
    for _ in range(2):
        DenseTransformer(50, d_model=64, n_layers=1, n_heads=4, mup_base_width=32)
    assert capsys.readouterr().err.count("arch.tie_embeddings=false") == 1
