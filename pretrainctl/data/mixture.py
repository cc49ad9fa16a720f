"""Data mixtures with phases: several sources, sampled by weight, with per-source epoch caps and
mixture changes at fractions of training.

- Weights: given per source (``sampling=weights``), or from the sources' token counts:
  ``temperature`` sampling (w_s proportional to n_s^(1/T); T = 1 is proportional, larger T flattens,
  as in multilingual pretraining, Arivazhagan et al. 2019) or UniMax (Chung et al. 2023, "UniMax:
  Fairer and More Effective Language Sampling"): the run's row budget is split uniformly over the
  sources, a source whose ``epochs`` cap binds gets only that much, and the rest is re-split.
- Epoch caps (``epochs``): a source stops being sampled after that many passes over its rows and its
  weight is shared among the others (no source is repeated more than its cap).
- Phases: ``phases: [{until: 0.8, weights: {...}}, {until: 1.0, weights: {...}}]`` switches the
  weights at fractions of training, e.g. annealing on a high-quality mix during the WSD decay (OLMo 2
  mid-training) or replaying some general data during continued pretraining. ``until`` is a fraction
  of the run's global batches, which build.py passes as the horizon.

Sampling is deterministic: each row slot of global batch i is assigned a source by smooth weighted
round-robin (the nginx scheduler: every slot, each source earns its weight and the richest one, less
the total, is picked), so the sampled fractions track the weights to within one row per source at
every point. The k-th row drawn from a source is row ``k mod n`` of that source's (seed, epoch)
permutation. Both are pure functions of (seed, batch index): ``train_batch(i)`` replays the cheap
assignment from the start when asked for an earlier batch, so resume and rank sharding are exact.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Literal

import torch

from pretrainctl.data.datamodule import PackedDataModule, StreamDataModule
from pretrainctl.data.packing import epoch_order
from pretrainctl.data.sources import Source
from pretrainctl.errors import UserError
from pretrainctl.tokenizer.base import Tokenizer


def temperature_weights(sizes: dict[str, int], temperature: float) -> dict[str, float]:
    raw = {s: n ** (1.0 / temperature) for s, n in sizes.items()}
    total = sum(raw.values())
    return {s: v / total for s, v in raw.items()}


def unimax_weights(sizes: dict[str, int], budget: int, epochs: dict[str, float]) -> dict[str, float]:
    """UniMax: uniform shares of ``budget`` rows, capped at epochs x size, remainder re-split."""
    alloc: dict[str, float] = {}
    left, remaining = float(budget), sorted(sizes, key=lambda s: sizes[s] * epochs.get(s, 1.0))
    while remaining:
        share = left / len(remaining)
        s = remaining[0]
        cap = sizes[s] * epochs.get(s, 1.0)
        if cap >= share:  # the smallest capacity fits: every remaining source gets an equal share
            alloc.update({r: share for r in remaining})
            break
        alloc[s] = cap
        left -= cap
        remaining.pop(0)
    total = sum(alloc.values())
    return {s: alloc[s] / total for s in sizes}


class _Sampler:
    """Sequential smooth weighted round-robin over row slots; ``counts`` per phase and source."""

    def __init__(self, owner: MixtureDataModule) -> None:
        self.owner = owner
        self.batch = 0  # next global batch to assign
        self.credit = {s: 0.0 for s in owner.names}
        self.drawn = {s: 0 for s in owner.names}  # rows drawn so far per source
        self.counts: list[dict[str, int]] = [{s: 0 for s in owner.names} for _ in owner.phase_weights]

    def assign(self, index: int) -> list[tuple[str, int]]:
        """(source, k) for every row of global batch ``index`` (k: that source's k-th draw)."""
        while True:
            out = self._next()
            if self.batch - 1 == index:
                return out

    def _next(self) -> list[tuple[str, int]]:
        owner = self.owner
        phase = owner.phase_of(self.batch)
        weights = owner.phase_weights[phase]
        out = []
        for _ in range(owner.batch_size):
            live = {s: w for s, w in weights.items() if w > 0 and self.drawn[s] < owner.caps[s]}
            if not live:
                raise UserError(
                    f"every source of the mixture reached its epoch cap at batch {self.batch}; "
                    "raise data.epochs, add sources, or train for fewer steps."
                )
            total = sum(live.values())
            for s, w in live.items():
                self.credit[s] += w / total
            pick = max(live, key=lambda s: (self.credit[s], -owner.names.index(s)))
            self.credit[pick] -= 1.0
            out.append((pick, self.drawn[pick]))
            self.drawn[pick] += 1
            self.counts[phase][pick] += 1
        self.batch += 1
        return out


class MixtureDataModule(StreamDataModule):
    """Args:
    sources: name -> document source (each packed and cached like ``data=stdlib``).
    weights: name -> sampling weight (``sampling=weights``; normalized; missing names get 0).
    sampling: ``weights`` | ``temperature`` | ``unimax`` (the last two from token counts).
    temperature: T of temperature sampling.
    epochs: name -> maximum passes over that source (default: unlimited; UniMax's default cap is 1).
    phases: list of ``{until: fraction, weights: {...}}`` in increasing ``until`` ending at 1.0; a
        phase without ``weights`` uses the base weights.
    meco_cooldown, meco_template: metadata conditioning, as in ``PackedDataModule``.
    """

    def __init__(
        self,
        sources: dict[str, Source],
        tokenizer: Tokenizer | None = None,
        weights: dict[str, float] | None = None,
        sampling: Literal["weights", "temperature", "unimax"] = "weights",
        temperature: float = 1.0,
        epochs: dict[str, float] | None = None,
        phases: list[dict[str, Any]] | None = None,
        seq_len: int = 256,
        batch_size: int = 16,
        eval_batch_size: int = 16,
        seed: int = 0,
        cache_dir: str | Path | None = None,
        meco_cooldown: float | None = None,
        meco_template: str = "{meta}\n\n",
    ) -> None:
        super().__init__(seq_len, batch_size, eval_batch_size, seed)
        if not sources:
            raise UserError("data.sources must name at least one source.")
        if sampling not in ("weights", "temperature", "unimax"):
            raise UserError(f"data.sampling must be weights, temperature or unimax, not {sampling!r}.")
        if sampling == "temperature" and not temperature > 0:
            raise UserError(f"data.temperature must be > 0, not {temperature}.")
        self.names = list(sources)
        # Each source is packed and cached by its own module (batch_size 1: only its rows are used).
        meco = {"meco_cooldown": meco_cooldown, "meco_template": meco_template}
        self.parts = {
            name: PackedDataModule(src, tokenizer, seq_len, 1, eval_batch_size, seed, cache_dir, **meco)
            for name, src in sources.items()
        }
        self.tokenizer, self.sampling, self.temperature = tokenizer, sampling, temperature
        self.meco_cooldown = meco_cooldown
        self.epochs = {k: float(v) for k, v in (epochs or {}).items()}
        self.weights = self._check_weights(weights, "data.weights") if weights else None
        if sampling == "weights" and self.weights is None and not phases:
            raise UserError("data.sampling=weights needs data.weights (or phases with weights).")
        self.phases = [dict(p) for p in (phases or [{"until": 1.0}])]
        ends = [float(p.get("until", 1.0)) for p in self.phases]
        if ends != sorted(ends) or ends[-1] != 1.0 or ends[0] <= 0:
            raise UserError(f"data.phases must have increasing `until` fractions ending at 1.0, not {ends}.")
        for i, p in enumerate(self.phases):
            if p.get("weights") is not None:
                p["weights"] = self._check_weights(p["weights"], f"data.phases[{i}].weights")
        unknown = set(self.epochs) - set(self.names)
        if unknown:
            raise UserError(f"data.epochs names unknown sources {sorted(unknown)}; sources: {self.names}.")
        self.phase_weights: list[dict[str, float]] = []
        self.caps: dict[str, float] = {}
        self.seeds = {s: seed + int(hashlib.sha256(s.encode()).hexdigest()[:8], 16) for s in self.names}
        self._sampler: _Sampler | None = None

    def _check_weights(self, weights: dict[str, float], where: str) -> dict[str, float]:
        weights = {k: float(v) for k, v in dict(weights).items()}
        unknown = set(weights) - set(self.names)
        if unknown:
            raise UserError(f"{where} names unknown sources {sorted(unknown)}; sources: {self.names}.")
        total = sum(weights.values())
        if any(w < 0 for w in weights.values()) or not total > 0:
            raise UserError(f"{where} must be non-negative with a positive sum, not {weights}.")
        return {s: weights.get(s, 0.0) / total for s in self.names}

    # -- data ---------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.train_rows is not None:
            return
        for part in self.parts.values():
            part.tokenizer = self.tokenizer
            part.setup(stage)
        sizes = {s: len(p.train_rows) for s, p in self.parts.items()}
        if self.sampling == "temperature":
            base = temperature_weights(sizes, self.temperature)
        elif self.sampling == "unimax":
            budget = (self.total_batches or sum(sizes.values())) * self.batch_size
            base = unimax_weights(sizes, budget, {s: self.epochs.get(s, 1.0) for s in self.names})
        else:
            base = self.weights
        self.phase_weights = [p.get("weights") or base for p in self.phases]
        if any(w is None for w in self.phase_weights):
            raise UserError("a phase without weights needs data.weights (or sampling=temperature|unimax).")
        caps = {s: self.epochs.get(s, 1.0 if self.sampling == "unimax" else math.inf) for s in self.names}
        self.caps = {s: caps[s] * sizes[s] for s in self.names}
        self.train_rows = range(sum(sizes.values()))  # only its length is read (the plan printout)
        self.val_rows = torch.cat([p.val_rows for p in self.parts.values()])
        self.check_sizes()

    def phase_of(self, index: int) -> int:
        if len(self.phases) == 1:
            return 0
        for i, p in enumerate(self.phases):
            if index < self.switch_batch(float(p["until"])):
                return i
        return len(self.phases) - 1

    def _row(self, name: str, k: int, meco: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        part = self.parts[name]
        rows = part.meco_rows if meco else part.train_rows
        n = len(rows)
        r = epoch_order(n, k // n, self.seeds[name])[k % n]
        return rows[r], (part.meco_mask[r] if meco else None)

    def train_batch(self, index: int) -> dict[str, torch.Tensor]:
        if self._sampler is None or self._sampler.batch > index:
            self._sampler = _Sampler(self)  # an earlier batch (resume, another rank): replay
        picks = self._sampler.assign(index)
        # The metadata phase is decided once per batch, not per row.
        meco = self.meco_cooldown is not None and index < self.switch_batch(1.0 - self.meco_cooldown)
        rows = [self._row(name, k, meco) for name, k in picks]
        batch = {"tokens": torch.stack([r for r, _ in rows])}
        if self.meco_cooldown is not None:
            batch["loss_mask"] = torch.stack(
                [m if m is not None else torch.ones_like(r, dtype=torch.bool) for r, m in rows]
            )
        return batch

    def data_summary(self, consumed_batches: int) -> dict[str, Any]:
        """Per phase: the configured weights and the rows actually sampled in the first batches."""
        sampler = _Sampler(self)
        if consumed_batches:
            sampler.assign(consumed_batches - 1)
        phases = []
        start = 0
        for i, (p, counts) in enumerate(zip(self.phases, sampler.counts)):
            end = self.switch_batch(float(p["until"])) if len(self.phases) > 1 else self.total_batches
            rows = sum(counts.values())
            phases.append({
                "phase": i, "until": float(p["until"]), "start_batch": start, "end_batch": end,
                "weights": self.phase_weights[i], "rows": counts,
                "sampled": {s: c / rows for s, c in counts.items()} if rows else None,
            })  # fmt: skip
            start = end
        out: dict[str, Any] = {"data_mixture": {"sampling": self.sampling, "phases": phases}}
        if self.meco_cooldown is not None:
            out["data_meco"] = self._meco_summary(self.meco_cooldown, consumed_batches)
        return out

    def train_texts(self) -> list[str]:
        return [t for p in self.parts.values() for t in p.train_texts()]
