"""Parameter and FLOP accounting for scaling studies, the model-shape rule, and law loading.

FLOPs per training token (forward + backward = 3 x forward), two conventions:

- ``chinchilla`` (Hoffmann et al., 2022, Appendix F): the architecture's own ``flops_per_token``:
  6 x (active weight-matrix parameters, output head included, embedding lookup excluded)
  + 3 x the attention forward FLOPs, 2 x seq_len x d_attn x 2 per layer (scores QK^T and the
  weighted sum of values; no discount for causal masking). MoE/MLA/SSM layers report their own terms.
- ``kaplan`` (Kaplan et al., 2020, Table 1): C = 6 N + 6 n_layers n_ctx d_attn, where N is the
  active *non-embedding* parameter count (no embedding, no output head) and the attention term
  counts only the QK^T logits (2 n_layers n_ctx d_attn forward), i.e. half of Chinchilla's attention
  term. Computed here as 6 x (active - embedding params) + 3 x (architecture attention FLOPs) / 2.

Shape rule (``Shape.from_width``): d_model is a multiple of ``width_multiple`` (default 64),
n_layers = max(1, round(d_model / aspect)) with aspect = d_model / n_layers = 64 by default, and
n_heads = d_model / head_dim with head_dim = 64 (GQA presets keep their query/KV group size; an
explicit ``mlp_hidden`` is reset to the architecture's default 8/3 d_model rule so it scales).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from omegaconf import DictConfig, open_dict

from pretrainctl.build import build_model
from pretrainctl.errors import UserError
from pretrainctl.scaling.laws import PUBLISHED_LAWS, ChinchillaLaw

CONVENTIONS = ("chinchilla", "kaplan")


@dataclass(frozen=True)
class Shape:
    d_model: int
    n_layers: int
    n_heads: int

    @classmethod
    def from_width(cls, d_model: int, aspect: float = 64.0, head_dim: int = 64) -> Shape:
        if d_model % head_dim:
            raise UserError(f"d_model={d_model} is not a multiple of head_dim={head_dim}.")
        return cls(d_model, max(1, round(d_model / aspect)), d_model // head_dim)

    def overrides(self) -> list[str]:
        return [
            f"arch.d_model={self.d_model}",
            f"arch.n_layers={self.n_layers}",
            f"arch.n_heads={self.n_heads}",
        ]


@dataclass(frozen=True)
class SizeFacts:
    """What a scaling plan needs to know about one model size."""

    shape: Shape
    params_total: int
    params_active: int
    params_non_embedding: int
    flops_per_token: int  # in the chosen convention
    convention: str

    def as_dict(self) -> dict:
        return {**asdict(self), "shape": asdict(self.shape)}


def shaped_arch(arch: DictConfig, shape: Shape) -> DictConfig:
    """A copy of an arch config node resized to ``shape`` (see the module docstring)."""
    node = copy.deepcopy(arch)
    with open_dict(node):
        group = None
        if node.get("n_kv_heads"):
            group = max(1, int(node.n_heads) // int(node.n_kv_heads))
        node.d_model, node.n_layers, node.n_heads = shape.d_model, shape.n_layers, shape.n_heads
        if group is not None:
            node.n_kv_heads = max(1, shape.n_heads // group) if shape.n_heads % group == 0 else shape.n_heads
        if "mlp_hidden" in node:
            node.mlp_hidden = None
    return node


def arch_overrides(arch: DictConfig, shape: Shape) -> list[str]:
    """Train overrides that resize ``arch`` exactly as ``shaped_arch`` does."""
    sized = shaped_arch(arch, shape)
    keys = ["d_model", "n_layers", "n_heads"] + [
        k for k in ("n_kv_heads", "mlp_hidden") if arch.get(k) is not None
    ]
    return [f"arch.{k}={'null' if sized.get(k) is None else sized[k]}" for k in keys]


def size_facts(
    cfg: DictConfig, shape: Shape, vocab_size: int, seq_len: int, convention: str = "chinchilla"
) -> SizeFacts:
    """Parameter counts and FLOPs/token of ``cfg.arch`` at ``shape``, from the built model itself
    (built on the meta device: no memory, no initialisation cost)."""
    if convention not in CONVENTIONS:
        raise UserError(f"unknown convention {convention!r}; choose one of: {', '.join(CONVENTIONS)}.")
    sized = copy.deepcopy(cfg)
    with open_dict(sized):
        sized.arch = shaped_arch(cfg.arch, shape)
    with torch.device("meta"):
        model = build_model(sized, SimpleNamespace(vocab_size=vocab_size))  # type: ignore[arg-type]
    count = model.num_params()
    return SizeFacts(
        shape, count.total, count.active, count.non_embedding,
        flops_per_token(model, seq_len, convention), convention,
    )  # fmt: skip


def flops_per_token(model, seq_len: int, convention: str = "chinchilla") -> int:
    """Training FLOPs per token of a built model in ``convention`` (module docstring)."""
    if convention == "chinchilla":
        return int(model.flops_per_token(seq_len))
    count = model.num_params()
    embedding = count.total - count.non_embedding
    attention = sum(b.attn.flops_per_token(seq_len) for b in getattr(model, "blocks", []))
    return int(6 * (count.active - embedding) + 3 * attention // 2)


def vocab_size_of(cfg: DictConfig) -> int:
    """The vocabulary the plan assumes: ``vocab_size`` if set, else the tokenizer config's target size
    (a trained BPE/Unigram hits it exactly), else 260 (the byte tokenizer)."""
    if cfg.get("vocab_size"):
        return int(cfg.vocab_size)
    return int(cfg.tokenizer.get("vocab_size") or 260)


def load_law(name: str) -> tuple[ChinchillaLaw, str]:
    """A published law by name, or the Approach 3 law in a fit.json written by ``scaling fit``."""
    if name in PUBLISHED_LAWS:
        return PUBLISHED_LAWS[name], name
    path = Path(name)
    if not path.is_file():
        raise UserError(
            f"unknown law {name!r}; choose one of: {', '.join(PUBLISHED_LAWS)}, or the path of a fit.json."
        )
    import json

    try:
        coeffs = json.loads(path.read_text())["approach3"]["coefficients"]
        return ChinchillaLaw.from_dict(coeffs), str(path)
    except (ValueError, KeyError, TypeError):
        raise UserError(f"law={name} is not a fit.json with an Approach 3 (chinchilla) fit.") from None


def width_ladder(max_width: int, width_multiple: int = 64) -> list[int]:
    return list(range(width_multiple, max_width + 1, width_multiple))


def nearest_window(values: list[float], target: float, n: int) -> int:
    """Start index of the ``n`` consecutive ``values`` (increasing) whose log-centre is nearest ``target``."""
    if len(values) <= n:
        return 0
    centres = [sum(math.log(v) for v in values[i : i + n]) / n for i in range(len(values) - n + 1)]
    return min(range(len(centres)), key=lambda i: abs(centres[i] - math.log(target)))
