"""Learning-rate schedules as pure functions ``(step, total_steps) -> multiplier`` of the peak LR.

Warmup rises to 1 over ``warmup`` steps (an int) or that fraction of training (a float < 1), linearly
from 1/warmup (``warmup_shape="linear"``) or along a half cosine (``"cosine"``, slower at first).
Boundaries are unit-tested: multiplier 1 at the end of warmup, ``min_ratio`` at the end.
"""

from __future__ import annotations

import math


def _warmup_steps(warmup: float, total_steps: int) -> int:
    return int(round(warmup * total_steps)) if 0 < warmup < 1 else int(warmup)


_WARMUP_SHAPES = {
    "linear": lambda p: p,
    "cosine": lambda p: 0.5 * (1 - math.cos(math.pi * p)),
}


def _warmup(step: int, warmup_steps: int, shape: str = "linear") -> float:
    if shape not in _WARMUP_SHAPES:
        raise ValueError(f"schedule.warmup_shape must be one of {sorted(_WARMUP_SHAPES)}, not {shape!r}")
    return _WARMUP_SHAPES[shape](min(1.0, (step + 1) / warmup_steps)) if warmup_steps > 0 else 1.0


def constant(step: int, total_steps: int, *, warmup: float = 0, warmup_shape: str = "linear") -> float:
    return _warmup(step, _warmup_steps(warmup, total_steps), warmup_shape)


def cosine(
    step: int, total_steps: int, *, warmup: float = 0.02, min_ratio: float = 0.1, warmup_shape: str = "linear"
) -> float:
    """Cosine decay from 1 after warmup to ``min_ratio`` at the last step."""
    w = _warmup_steps(warmup, total_steps)
    if step < w:
        return _warmup(step, w, warmup_shape)
    progress = min(1.0, (step - w) / max(1, total_steps - 1 - w))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


_DECAY_SHAPES = {
    "linear": lambda p: 1 - p,
    "cosine": lambda p: 0.5 * (1 + math.cos(math.pi * p)),
    "sqrt": lambda p: 1 - math.sqrt(p),  # "1 - sqrt" (Hägele et al., 2024, arXiv:2405.18392)
    # exponential, rescaled to end exactly at 0: (r^p - r) / (1 - r) with r = 1% (a 100x decay)
    "exponential": lambda p: (0.01**p - 0.01) / (1 - 0.01),
}


def wsd(
    step: int,
    total_steps: int,
    *,
    warmup: float = 0.02,
    decay_frac: float = 0.2,
    shape: str = "linear",
    min_ratio: float = 0.0,
    decay_steps: int | None = None,
    warmup_shape: str = "linear",
) -> float:
    """Warmup-stable-decay (Hu et al., 2024, MiniCPM, arXiv:2404.06395): constant after warmup, then
    the last ``decay_frac`` of training (or exactly ``decay_steps`` steps, when set) decays to
    ``min_ratio`` with the given shape. Up to the decay the multiplier does not depend on
    ``total_steps`` (with ``warmup`` in steps), so a stable-phase checkpoint of a long run can branch
    into a decay of any length (``decay_from=``)."""
    if shape not in _DECAY_SHAPES:
        raise ValueError(f"schedule.shape must be one of {sorted(_DECAY_SHAPES)}, not {shape!r}")
    w = _warmup_steps(warmup, total_steps)
    n_decay = int(round(decay_frac * total_steps)) if decay_steps is None else int(decay_steps)
    if not 0 <= n_decay <= total_steps:
        raise ValueError(f"decay_steps={n_decay} must be between 0 and the {total_steps} training steps")
    decay_start = total_steps - n_decay
    if step < w:
        return _warmup(step, w, warmup_shape)
    if step < decay_start:
        return 1.0
    progress = min(1.0, (step - decay_start + 1) / max(1, total_steps - decay_start))
    return min_ratio + (1 - min_ratio) * _DECAY_SHAPES[shape](progress)
