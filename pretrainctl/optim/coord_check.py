"""µP coordinate check (Yang et al., 2022, "Tensor Programs V", arXiv:2203.03466, sec. D.1): train
the same model at several widths for a few AdamW steps and record, per width, the RMS of how much
each layer's output moved from its value at initialization. Under µP these stay roughly flat as width
grows; under the standard parametrization (SP) they grow with width (Adam's per-entry update size
does not shrink with fan-in, so a matrix's effect on its output grows ~ width).

Used by tests/test_mup.py (tiny, random tokens) and bench/mup_evidence.py (default data).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pretrainctl.arch.dense import DenseTransformer
from pretrainctl.optim.adamw import AdamWBuilder


def layer_outputs(model: DenseTransformer, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """Outputs of the embedding, each block, and the logits for ``tokens`` (B, T)."""
    out: dict[str, torch.Tensor] = {}
    x = model.embed(tokens)
    out["embed"] = x
    for i, block in enumerate(model.blocks):
        x = block(x, causal=True)
        out[f"block{i}"] = x
    out["logits"] = model.logits(model._output(model.norm(x)))
    return out


def coord_check(
    widths: list[int],
    batches: list[torch.Tensor],
    *,
    vocab_size: int,
    mup_base_width: int | None,
    lr: float,
    n_layers: int = 2,
    n_heads: int = 4,
    seed: int = 0,
    mup_output_mult: bool = True,
    tie_embeddings: bool = True,
) -> dict[int, dict[str, float]]:
    """-> {width: {layer: RMS(output after len(batches) steps - output at init)}} on batches[0].

    Every width trains on the same ``batches`` (each (B, T+1) token ids) with AdamW at ``lr`` (µP
    divides the hidden matrices' LR by width_mult). Same seed per width."""
    result: dict[int, dict[str, float]] = {}
    probe = batches[0][:, :-1]
    for width in widths:
        torch.manual_seed(seed)
        model = DenseTransformer(
            vocab_size, d_model=width, n_layers=n_layers, n_heads=n_heads, mup_base_width=mup_base_width,
            mup_output_mult=mup_output_mult, tie_embeddings=tie_embeddings,
        )  # fmt: skip
        opt = AdamWBuilder(lr=lr, weight_decay=0.0).build(model)
        with torch.no_grad():
            before = layer_outputs(model, probe)
        for batch in batches:
            hidden = model(batch[:, :-1])
            loss = F.cross_entropy(model.logits(hidden).flatten(0, 1), batch[:, 1:].flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            after = layer_outputs(model, probe)
        result[width] = {k: float((after[k] - before[k]).pow(2).mean().sqrt()) for k in after}
    return result


def growth(result: dict[int, dict[str, float]], layer: str) -> float:
    """How much ``layer``'s movement grows from the narrowest to the widest width (ratio)."""
    widths = sorted(result)
    return result[widths[-1]][layer] / result[widths[0]][layer]
