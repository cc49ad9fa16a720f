"""Parameter groups: which parameters get weight decay.

Decoupled weight decay (Loshchilov & Hutter, 2019) applies to matrix weights of linear layers only;
norm gains, biases and embeddings are not decayed. The partition is asserted to cover every
trainable parameter exactly once.
"""

from __future__ import annotations

from torch import nn


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and id(p) not in embeddings else no_decay).append(p)
    check_partition(model, [decay, no_decay])
    return [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]


def check_partition(model: nn.Module, groups: list[list[nn.Parameter]]) -> None:
    """Every trainable parameter in exactly one group (tied weights count once)."""
    seen: dict[int, int] = {}
    for group in groups:
        for p in group:
            seen[id(p)] = seen.get(id(p), 0) + 1
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    twice = [k for k, n in seen.items() if n > 1]
    assert not twice, f"{len(twice)} parameters are in more than one optimizer group"
    assert set(seen) == trainable, f"{len(trainable - set(seen))} parameters are in no optimizer group"
