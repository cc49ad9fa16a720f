"""The Lightning data modules: tokenize a source, pack it, serve shuffled training batches forever and
the validation split in order.

The training stream is a pure function of (seed, global batch index), and the index to start from is
the number of batches the trainer has consumed, which the module stores in every checkpoint: a
resumed run sees exactly the batches an uninterrupted run would have seen. ``StreamDataModule`` holds
that contract (rank sharding, resume state, validation loader); subclasses only say what global batch
``i`` is (``train_batch``): ``PackedDataModule`` here, ``ShardsDataModule`` (pre-tokenized shards) and
``MixtureDataModule`` (weighted sources with phases) in their own files.

Metadata conditioning then cooldown (MeCo, Gao et al. 2025, "Metadata Conditioning Accelerates
Language Model Pre-training"): with ``meco_cooldown=f`` every document is prefixed with its source
string (``meco_template``, e.g. the stdlib module path) for the first ``1 - f`` of training, and the
batch's ``loss_mask`` is False on the prefix tokens so they are read but never predicted; the last
``f`` of training sees the plain documents. The switch needs the plan's horizon (``set_horizon``,
called by build.py). Validation always uses the plain documents, as MeCo evaluates without metadata.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from pretrainctl.data.packing import batch_rows, pack_documents, pack_with_prefixes
from pretrainctl.data.sources import Source
from pretrainctl.errors import UserError
from pretrainctl.tokenizer.base import Tokenizer


class _TrainStream(IterableDataset):
    """Yields whole (B, L) batches, starting at ``owner.start_batch``."""

    def __init__(self, owner: StreamDataModule) -> None:
        self.owner = owner

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        owner = self.owner
        trainer = owner.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        local = owner.start_batch  # batches this rank has consumed
        while True:
            # Rank r of w takes global batches r, r + w, r + 2w, ...: disjoint data under DDP.
            yield owner.train_batch(local * world + rank)
            local += 1


class StreamDataModule(L.LightningDataModule):
    """Shared contract: ``train_batch(i)`` is global batch ``i`` as a pure function of (seed, i);
    ``val_rows`` (N, seq_len + 1) is the validation split in order; ``train_rows`` has a length."""

    def __init__(self, seq_len: int, batch_size: int, eval_batch_size: int, seed: int) -> None:
        super().__init__()
        if seq_len < 2:
            raise UserError(f"data.seq_len must be at least 2, not {seq_len}.")
        if batch_size < 1:
            raise UserError(f"data.batch_size must be at least 1, not {batch_size}.")
        self.seq_len, self.batch_size, self.eval_batch_size = seq_len, batch_size, eval_batch_size
        self.seed = seed
        self.start_batch = 0
        self.total_batches: int | None = None
        self.train_rows: Any = None
        self.val_rows: torch.Tensor | None = None

    def set_horizon(self, total_batches: int) -> None:
        """Global batches the whole run will consume (plan steps x accumulation x ranks), for schedules
        of the data itself (phases, MeCo cooldown). build.py passes it."""
        self.total_batches = int(total_batches)

    def switch_batch(self, fraction: float) -> int:
        """The first global batch at or after ``fraction`` of the horizon."""
        if self.total_batches is None:
            raise RuntimeError(
                "this data option switches during training; call set_horizon() first (build.py)"
            )
        return int(round(fraction * self.total_batches))

    def train_batch(self, index: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def data_summary(self, consumed_batches: int) -> dict[str, Any]:
        """Figures for summary.json about what the stream served in the first ``consumed_batches``."""
        return {}

    def _meco_summary(self, cooldown: float, consumed_batches: int) -> dict[str, Any]:
        """The ``data_meco`` figures shared by the modules that support MeCo."""
        switch = self.switch_batch(1.0 - cooldown)
        return {
            "cooldown": cooldown,
            "switch_batch": switch,
            "metadata_batches": min(switch, consumed_batches),
            "plain_batches": max(0, consumed_batches - switch),
        }

    def train_texts(self) -> list[str]:
        return []

    def check_sizes(self) -> None:
        if len(self.train_rows) < self.batch_size:
            raise UserError(
                f"the training split packs into {len(self.train_rows)} rows of {self.seq_len + 1} tokens, "
                f"fewer than data.batch_size={self.batch_size}; lower data.batch_size or data.seq_len."
            )
        if len(self.val_rows) == 0:
            raise UserError(
                f"the validation split is shorter than one row of data.seq_len={self.seq_len} tokens; "
                "lower data.seq_len or add validation text."
            )

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_TrainStream(self), batch_size=None)

    def val_dataloader(self) -> DataLoader:
        val = [{"tokens": r} for r in self.val_rows]
        return DataLoader(val, batch_size=self.eval_batch_size, shuffle=False)

    # -- resume ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, int]:
        trainer = self.trainer
        consumed = trainer.global_step * trainer.accumulate_grad_batches if trainer else self.start_batch
        return {"consumed_batches": int(consumed), "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("seed", self.seed) != self.seed:
            raise UserError(f"the checkpoint was trained with seed {state['seed']}, not {self.seed}.")
        self.start_batch = int(state["consumed_batches"])


class PackedDataModule(StreamDataModule):
    """Args:
    source: where documents come from (built from ``data.source``).
    tokenizer: the run's tokenizer (built by build.py).
    seq_len: tokens per training row the model sees (rows hold seq_len + 1 tokens).
    batch_size: rows per training batch; eval_batch_size: rows per validation batch.
    seed: shuffling seed; cache_dir: where tokenized splits are cached.
    meco_cooldown: MeCo's final fraction of training without metadata (None: no metadata at all).
    meco_template: the prefix, ``{meta}`` replaced by the document's source string.
    """

    def __init__(
        self,
        source: Source,
        tokenizer: Tokenizer,
        seq_len: int = 256,
        batch_size: int = 16,
        eval_batch_size: int = 16,
        seed: int = 0,
        cache_dir: str | Path | None = None,
        meco_cooldown: float | None = None,
        meco_template: str = "{meta}\n\n",
    ) -> None:
        super().__init__(seq_len, batch_size, eval_batch_size, seed)
        if meco_cooldown is not None and not 0 <= meco_cooldown <= 1:
            raise UserError(f"data.meco_cooldown must be in [0, 1] (or null), not {meco_cooldown}.")
        if "{meta}" not in meco_template:
            raise UserError(f"data.meco_template must contain {{meta}}, not {meco_template!r}.")
        self.source, self.tokenizer = source, tokenizer
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.meco_cooldown, self.meco_template = meco_cooldown, meco_template
        self.meco_rows: torch.Tensor | None = None
        self.meco_mask: torch.Tensor | None = None

    # -- data ---------------------------------------------------------------------------------
    def _cached(self, name: str, make):
        key = hashlib.sha256(
            f"{self.source.fingerprint()} {self.tokenizer.fingerprint()} {self.seq_len} {name}".encode()
        )
        path = (
            self.cache_dir / "tokens" / f"{name.split()[0]}-{key.hexdigest()[:20]}.pt"
            if self.cache_dir
            else None
        )
        if path is not None and path.is_file():
            return torch.load(path, weights_only=True)
        value = make()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{id(value)}")
            torch.save(value, tmp)
            tmp.replace(path)
        return value

    def _rows(self, split: str) -> torch.Tensor:
        def make() -> torch.Tensor:
            docs = self.source.documents(split)
            return pack_documents(self.tokenizer.encode_batch(docs), self.tokenizer.eos_id, self.seq_len + 1)

        return self._cached(split, make)

    def _meco(self) -> tuple[torch.Tensor, torch.Tensor]:
        def make() -> tuple[torch.Tensor, torch.Tensor]:
            tok = self.tokenizer
            prefixes = [self.meco_template.format(meta=m) for m in self.source.metadata("train")]
            docs = tok.encode_batch(self.source.documents("train"))
            return pack_with_prefixes(docs, tok.encode_batch(prefixes), tok.eos_id, self.seq_len + 1)

        return self._cached(f"meco {self.meco_template!r}", make)

    def setup(self, stage: str | None = None) -> None:
        if self.train_rows is not None:
            return
        self.train_rows, self.val_rows = self._rows("train"), self._rows("val")
        self.check_sizes()
        if self.meco_cooldown is not None:
            self.meco_rows, self.meco_mask = self._meco()

    def train_batch(self, index: int) -> dict[str, torch.Tensor]:
        if self.meco_cooldown is None:
            return {
                "tokens": self.train_rows[batch_rows(len(self.train_rows), self.batch_size, index, self.seed)]
            }
        switch = self.switch_batch(1.0 - self.meco_cooldown)
        if index < switch:  # metadata phase: prefixes are context, not targets
            rows = batch_rows(len(self.meco_rows), self.batch_size, index, self.seed)
            return {"tokens": self.meco_rows[rows], "loss_mask": self.meco_mask[rows]}
        rows = batch_rows(len(self.train_rows), self.batch_size, index - switch, self.seed)
        tokens = self.train_rows[rows]
        return {"tokens": tokens, "loss_mask": torch.ones_like(tokens, dtype=torch.bool)}

    def data_summary(self, consumed_batches: int) -> dict[str, Any]:
        if self.meco_cooldown is None:
            return {}
        masked = int((~self.meco_mask).sum())
        meco = self._meco_summary(self.meco_cooldown, consumed_batches)
        return {"data_meco": {**meco, "metadata_token_fraction": masked / self.meco_mask.numel()}}

    def text_bytes(self, split: str) -> int:
        """UTF-8 bytes of a split's text, for checking the bits-per-byte accounting."""
        return sum(len(d.encode("utf-8")) for d in self.source.documents(split))

    def train_texts(self) -> list[str]:
        return self.source.documents("train")
