import math

import pytest

from pretrainctl.optim.schedules import constant, cosine, wsd


def test_cosine_boundaries():
    total = 100
    assert cosine(0, total, warmup=10, min_ratio=0.1) == pytest.approx(0.1)  # (0 + 1) / 10
    assert cosine(9, total, warmup=10, min_ratio=0.1) == pytest.approx(1.0)
    assert cosine(10, total, warmup=10, min_ratio=0.1) == pytest.approx(1.0)
    assert cosine(99, total, warmup=10, min_ratio=0.1) == pytest.approx(0.1)
    mid = 10 + (99 - 10) / 2
    assert cosine(int(mid), total, warmup=10, min_ratio=0.0) == pytest.approx(0.5, abs=0.02)
    values = [cosine(s, total, warmup=10) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_warmup_fraction_and_steps_agree():
    assert cosine(4, 200, warmup=0.025) == cosine(4, 200, warmup=5)


@pytest.mark.parametrize("shape", ["linear", "cosine", "sqrt"])
def test_wsd_boundaries(shape):
    total, decay = 100, 0.2
    assert wsd(0, total, warmup=5, decay_frac=decay, shape=shape) == pytest.approx(0.2)
    for step in range(4, 80):
        assert wsd(step, total, warmup=5, decay_frac=decay, shape=shape) == 1.0
    assert wsd(80, total, warmup=5, decay_frac=decay, shape=shape) < 1.0
    assert wsd(99, total, warmup=5, decay_frac=decay, shape=shape, min_ratio=0.05) == pytest.approx(0.05)
    tail = [wsd(s, total, warmup=5, decay_frac=decay, shape=shape) for s in range(80, 100)]
    assert all(a > b for a, b in zip(tail, tail[1:]))


def test_wsd_sqrt_shape_value():
    # halfway through a 20-step decay: 1 - sqrt(10/20)
    assert wsd(89, 100, warmup=0, decay_frac=0.2, shape="sqrt") == pytest.approx(1 - math.sqrt(0.5))


def test_wsd_rejects_unknown_shape():
    with pytest.raises(ValueError, match="shape"):
        wsd(0, 10, shape="zigzag")


def test_constant():
    assert constant(0, 10, warmup=0) == 1.0
    assert constant(0, 100, warmup=4) == 0.25
    assert constant(50, 100, warmup=4) == 1.0
