"""``pretrainctl generate run=<dir> prompt=... max_new_tokens=... temperature=... top_k=...``.

Sampling belongs to the objective (autoregressive and diffusion models generate differently); this
module loads the checkpoint and prints the samples. Objective-specific options live in their own node
of conf/generate.yaml (e.g. ``diffusion.steps``), named by the objective's ``sampling_options``.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from pretrainctl.errors import UserError
from pretrainctl.evaluate.checkpoint import load_trained


@torch.no_grad()
def generate(run: str, prompt: str, ckpt: str = "last", max_new_tokens: int = 200, temperature: float = 0.8,
             top_k: int | None = 50, seed: int = 0, num_samples: int = 1,
             options: dict[str, dict] | None = None) -> list[str]:  # fmt: skip
    """``options``: objective-specific sampling options by conf/generate.yaml node name."""
    trained = load_trained(run, ckpt)
    tok = trained.tokenizer
    ids = tok.encode(prompt)
    if not ids:
        ids = [tok.eos_id]  # an empty prompt starts a fresh document
    if max_new_tokens < 1:
        raise UserError(f"max_new_tokens must be at least 1, not {max_new_tokens}.")
    gen = torch.Generator().manual_seed(seed)
    node = trained.objective.sampling_options
    extra = dict((options or {}).get(node) or {}) if node else {}
    out = []
    for _ in range(num_samples):
        sample = trained.objective.generate(
            trained.model, torch.tensor([ids]), max_new_tokens=max_new_tokens, temperature=temperature,
            top_k=top_k, generator=gen, max_context=trained.cfg.data.seq_len, stop_id=tok.eos_id, **extra,
        )  # fmt: skip
        # The prompt is printed as typed; only the continuation is decoded (a byte-fallback piece the
        # model emits must not rewrite the prompt's last characters).
        new = sample[0, len(ids) :].tolist()
        out.append(prompt + tok.decode([i for i in new if i != tok.eos_id]))
    return out


def hydra_task(cfg: DictConfig) -> None:
    samples = generate(cfg.run, str(cfg.prompt), cfg.ckpt, cfg.max_new_tokens, cfg.temperature, cfg.top_k,
                       cfg.seed, cfg.num_samples, OmegaConf.to_container(cfg, resolve=True))  # fmt: skip
    for i, text in enumerate(samples):
        if len(samples) > 1:
            print(f"--- sample {i}")
        print(text)
