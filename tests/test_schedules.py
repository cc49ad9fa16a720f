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


@pytest.mark.parametrize("shape", ["linear", "cosine", "sqrt", "exponential"])
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


def test_wsd_exponential_shape_value():
    # halfway through the decay: (0.01**0.5 - 0.01) / 0.99
    assert wsd(89, 100, warmup=0, decay_frac=0.2, shape="exponential") == pytest.approx(0.09 / 0.99)


def test_wsd_decay_steps_fix_the_decay_start_whatever_the_length():
    # a stable-phase checkpoint at step 60 of a long run branches into a 20-step decay
    for total in (80, 200, 1000):
        assert wsd(59, total, warmup=5, decay_steps=total - 60) == 1.0
        assert wsd(60, total, warmup=5, decay_steps=total - 60) < 1.0
    long = [wsd(s, 1000, warmup=5, decay_steps=20) for s in range(60)]
    assert long == [wsd(s, 80, warmup=5, decay_steps=20) for s in range(60)]
    with pytest.raises(ValueError, match="decay_steps"):
        wsd(0, 10, decay_steps=11)


def test_cosine_warmup_shape():
    assert cosine(0, 100, warmup=10, warmup_shape="cosine") == pytest.approx(
        0.5 * (1 - math.cos(math.pi / 10))
    )
    assert cosine(4, 100, warmup=10, warmup_shape="cosine") == pytest.approx(0.5)
    assert cosine(9, 100, warmup=10, warmup_shape="cosine") == pytest.approx(1.0)
    assert wsd(4, 100, warmup=10, warmup_shape="cosine") == constant(4, 100, warmup=10, warmup_shape="cosine")
    assert cosine(4, 100, warmup=10, warmup_shape="cosine") < cosine(4, 100, warmup=10)  # slower start
    with pytest.raises(ValueError, match="warmup_shape"):
        constant(0, 10, warmup=2, warmup_shape="square")
