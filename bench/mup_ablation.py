"""µP ablation: `pretrainctl train` with one µP ingredient switched back to the standard
parametrization, to find which one hurts a wide model (README "µP LR transfer").

    MUP_ABLATE=attn .venv/bin/python bench/mup_ablation.py train arch.mup_base_width=64 \\
        arch.d_model=256 optim.lr=0.016 arch.n_layers=2 trainer.max_steps=250 threads=1

MUP_ABLATE (comma-separated): ``attn`` attention scale 1/sqrt(head_dim) instead of 1/head_dim;
``mult`` no 1/width_mult logit multiplier (now also ``arch.mup_output_mult=false``); ``emblr``
embedding, vector and head LRs also divided by width_mult; ``init`` hidden matrices at the SP init
std (not / sqrt(width_mult)). The patches wrap the model's constructor and the AdamW groups of this
process only; nothing in the package changes.
"""

from __future__ import annotations

import math
import os
import sys

import torch

from pretrainctl.arch import decoder
from pretrainctl.optim import adamw, groups

ABLATE = set(filter(None, os.environ.get("MUP_ABLATE", "").split(",")))
KNOWN = {"attn", "mult", "emblr", "init"}


def _patched_init(original):
    def init(self, *args, **kwargs) -> None:
        original(self, *args, **kwargs)
        mult = self.mup_width_mult
        if "attn" in ABLATE:
            for module in self.modules():
                if hasattr(module, "head_dim") and hasattr(module, "scale"):
                    module.scale = 1.0 / math.sqrt(module.head_dim)
        if "init" in ABLATE:
            with torch.no_grad():
                for p in self.parameters():
                    if p.dim() >= 2 and p is not self.embed.weight and p is not self.head_weight():
                        p.mul_(math.sqrt(mult))  # undo µP's 1/sqrt(width_mult)
        if "mult" in ABLATE:
            self.output_mult = 1.0

    return init


def _patched_groups(original):
    def decay_groups(model, weight_decay, lr=None):
        result = original(model, weight_decay, lr)
        if "emblr" in ABLATE and lr is not None:
            for g in result:
                if g["name"] in ("embedding", "vector", "head"):
                    g["lr"] = lr / groups.width_mult(model)
        print("AdamW group LRs:", [(g["name"], g.get("lr")) for g in result], flush=True)
        return result

    return decay_groups


def main() -> None:
    if not ABLATE <= KNOWN:
        sys.exit(f"MUP_ABLATE={','.join(sorted(ABLATE))}: choose from {', '.join(sorted(KNOWN))}")
    decoder.Decoder.__init__ = _patched_init(decoder.Decoder.__init__)
    adamw.decay_groups = _patched_groups(adamw.decay_groups)
    from pretrainctl.cli import main as cli_main

    cli_main(sys.argv[1:])


if __name__ == "__main__":
    main()
