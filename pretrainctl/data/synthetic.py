"""Procedural synthetic data as a training source (``data=synthetic``, or one source of a mixture).

The generators live in ``pretrainctl.data.curation.synthetic`` (Dyck languages, copy / reverse / sort,
modular arithmetic, elementary cellular automata; see that module for the papers). The config picks
one by ``_target_``; the short names below (``dyck``, ``copy``, ...) are aliases so a user can write
``data.source.task=modarith`` and the config builds ``_target_: pretrainctl.data.synthetic.modarith``.
Validation documents come from the same generator with another seed, so they are fresh examples of
the same task and difficulty.
"""

from __future__ import annotations

import copy as _copy
import hashlib
from collections.abc import Iterator
from typing import Any

from pretrainctl.data.curation.synthetic import (
    CellularAutomaton,
    CopyTask,
    DyckSequences,
    ModularArithmetic,
    ReverseTask,
    SortTask,
)
from pretrainctl.data.curation.synthetic import (
    SyntheticSource as Generator,
)
from pretrainctl.data.sources import Source
from pretrainctl.errors import UserError

# Aliases: the names `data.source.task` accepts (each is a `_target_`).
dyck = DyckSequences
copy = CopyTask
reverse = ReverseTask
sort = SortTask
modarith = ModularArithmetic
eca = CellularAutomaton

_VAL_SEED_OFFSET = 1_000_003  # validation examples come from an unrelated seed of the same generator


class SyntheticSource(Source):
    """Args:
    generator: a procedural generator (built from its ``_target_``), with its ``difficulty``,
        ``num_docs`` (training documents), ``examples_per_doc`` and ``seed``.
    val_docs: validation documents, generated with seed + 1,000,003.
    task, difficulty: the names the config builds the generator from (recorded, not re-read).
    """

    def __init__(
        self,
        generator: Generator,
        val_docs: int = 100,
        task: str | None = None,
        difficulty: int | None = None,
    ) -> None:
        if not isinstance(generator, Generator):
            raise UserError(
                f"data.source.generator must be a synthetic generator, not {type(generator).__name__}."
            )
        if val_docs < 1:
            raise UserError(f"data.source.val_docs must be at least 1, not {val_docs}.")
        self.generator, self.val_docs = generator, val_docs
        self.label = f"synthetic/{generator.name}"

    def _generator(self, split: str) -> Generator:
        if split == "train":
            return self.generator
        val = _copy.copy(self.generator)
        val.seed, val.num_docs = self.generator.seed + _VAL_SEED_OFFSET, self.val_docs
        return val

    def stream(self, split: str) -> Iterator[dict[str, Any]]:
        for doc in self._generator(split):
            yield {**doc, "meta": {**doc.get("meta", {}), "split": split, "url": self.label}}

    def _load(self) -> tuple[list[str], list[str]]:
        return [d["text"] for d in self._generator("train")], [d["text"] for d in self._generator("val")]

    def fingerprint(self) -> str:
        g = self.generator
        state = sorted((k, v) for k, v in vars(g).items() if isinstance(v, (int, float, str)))
        return hashlib.sha256(repr((type(g).__qualname__, state, self.val_docs)).encode()).hexdigest()[:16]
