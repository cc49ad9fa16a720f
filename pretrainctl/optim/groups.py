"""Parameter roles and groups: which parameters get weight decay, which get Muon, which LR scale.

Every trainable parameter gets exactly one role:
  embedding  token embeddings (``nn.Embedding``; a tied output head is the embedding)
  head       an untied output projection (``LanguageModel.head_weight()``)
  hidden     every other 2-D matrix (attention and MLP projections, routers, MTP modules)
  vector     norm gains, biases and every parameter that is not 2-D (e.g. stacked MoE experts)

Decoupled weight decay (Loshchilov & Hutter, 2019) applies to matrix weights only: hidden, head
and stacked expert weights; norm gains, biases and embeddings are not decayed. Under µP (Yang et
al., 2022, "Tensor Programs V", arXiv:2203.03466, Table 3) Adam's LR for hidden matrices scales as
1/width_mult; the model says its width multiplier (``mup_width_mult``, 1.0 = standard
parametrization). The partition is asserted to cover every trainable parameter exactly once.
"""

from __future__ import annotations

from torch import nn

ROLES = ("hidden", "head", "embedding", "vector")


def width_mult(module: nn.Module) -> float:
    """The µP width multiplier of the language model inside ``module`` (1.0 when it has none)."""
    mults = {float(getattr(m, "mup_width_mult", 1.0)) for m in module.modules() if hasattr(m, "head_weight")}
    assert len(mults) <= 1, f"models with different width multipliers in one module: {mults}"
    return mults.pop() if mults else 1.0


def param_roles(module: nn.Module) -> dict[str, list[nn.Parameter]]:
    embeddings = {id(m.weight) for m in module.modules() if isinstance(m, nn.Embedding)}
    heads = {id(m.head_weight()) for m in module.modules() if hasattr(m, "head_weight")}
    roles: dict[str, list[nn.Parameter]] = {r: [] for r in ROLES}
    seen: set[int] = set()
    for p in module.parameters():  # parameters() yields a tied weight once
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        if id(p) in embeddings:
            roles["embedding"].append(p)
        elif id(p) in heads:
            roles["head"].append(p)
        elif p.dim() == 2:
            roles["hidden"].append(p)
        else:
            roles["vector"].append(p)
    check_partition(module, list(roles.values()))
    return roles


def decay_groups(model: nn.Module, weight_decay: float, lr: float | None = None) -> list[dict]:
    """AdamW groups. With ``lr`` given, each group carries its own LR: hidden matrices get
    lr / width_mult (µP); otherwise every group uses the optimizer's LR."""
    roles = param_roles(model)
    hidden_lr = None if lr is None else lr / width_mult(model)
    stacked = [p for p in roles["vector"] if p.dim() >= 2]  # e.g. (experts, in, out) weights
    vectors = [p for p in roles["vector"] if p.dim() < 2]
    groups = [
        {"params": roles["hidden"], "weight_decay": weight_decay, "name": "hidden", "lr": hidden_lr},
        {"params": roles["head"] + stacked, "weight_decay": weight_decay, "name": "head", "lr": lr},
        {"params": roles["embedding"], "weight_decay": 0.0, "name": "embedding", "lr": lr},
        {"params": vectors, "weight_decay": 0.0, "name": "vector", "lr": lr},
    ]
    groups = [g for g in groups if g["params"]]
    for g in groups:
        if g["lr"] is None:
            del g["lr"]
    return groups


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
