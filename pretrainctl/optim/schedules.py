"""Learning-rate schedules as pure functions ``(step, total_steps) -> multiplier`` of the peak LR.

Warmup is linear from 1/warmup to 1 over ``warmup`` steps (an int) or that fraction of training (a
float < 1). Boundaries are unit-tested: multiplier 1 at the end of warmup, ``min_ratio`` at the end.
"""

from __future__ import annotations

import math


def _warmup_steps(warmup: float, total_steps: int) -> int:
    return int(round(warmup * total_steps)) if 0 < warmup < 1 else int(warmup)


def _warmup(step: int, warmup_steps: int) -> float:
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


def constant(step: int, total_steps: int, *, warmup: float = 0) -> float:
    return _warmup(step, _warmup_steps(warmup, total_steps))


def cosine(step: int, total_steps: int, *, warmup: float = 0.02, min_ratio: float = 0.1) -> float:
    """Cosine decay from 1 after warmup to ``min_ratio`` at the last step."""
    w = _warmup_steps(warmup, total_steps)
    if step < w:
        return _warmup(step, w)
    progress = min(1.0, (step - w) / max(1, total_steps - 1 - w))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


_DECAY_SHAPES = {
    "linear": lambda p: 1 - p,
    "cosine": lambda p: 0.5 * (1 + math.cos(math.pi * p)),
    "sqrt": lambda p: 1 - math.sqrt(p),  # "1 - sqrt" (Hägele et al., 2024)
}


def wsd(
    step: int,
    total_steps: int,
    *,
    warmup: float = 0.02,
    decay_frac: float = 0.2,
    shape: str = "linear",
    min_ratio: float = 0.0,
) -> float:
    """Warmup-stable-decay (Hu et al., 2024, MiniCPM): constant after warmup, then the last
    ``decay_frac`` of training decays to ``min_ratio`` with the given shape."""
    if shape not in _DECAY_SHAPES:
        raise ValueError(f"schedule.shape must be one of {sorted(_DECAY_SHAPES)}, not {shape!r}")
    w = _warmup_steps(warmup, total_steps)
    decay_start = total_steps - int(round(decay_frac * total_steps))
    if step < w:
        return _warmup(step, w)
    if step < decay_start:
        return 1.0
    progress = min(1.0, (step - decay_start + 1) / max(1, total_steps - decay_start))
    return min_ratio + (1 - min_ratio) * _DECAY_SHAPES[shape](progress)
