"""The Lightning data module: tokenize a source, pack it, serve shuffled training batches forever and
the validation split in order.

The training stream is a pure function of (seed, batch index), and the index to start from is the
number of batches the trainer has consumed, which the module stores in every checkpoint: a resumed
run sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from pretrainctl.data.packing import batch_rows, pack_documents
from pretrainctl.data.sources import Source
from pretrainctl.errors import UserError
from pretrainctl.tokenizer.base import Tokenizer


class _TrainStream(IterableDataset):
    """Yields whole (B, L) batches, starting at ``owner.start_batch``."""

    def __init__(self, owner: PackedDataModule) -> None:
        self.owner = owner

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rows, owner = self.owner.train_rows, self.owner
        trainer = owner.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        local = owner.start_batch  # batches this rank has consumed
        while True:
            # Rank r of w takes global batches r, r + w, r + 2w, ...: disjoint data under DDP.
            index = local * world + rank
            yield {"tokens": rows[batch_rows(len(rows), owner.batch_size, index, owner.seed)]}
            local += 1


class PackedDataModule(L.LightningDataModule):
    """Args:
    source: where documents come from (built from ``data.source``).
    tokenizer: the run's tokenizer (built by build.py).
    seq_len: tokens per training row the model sees (rows hold seq_len + 1 tokens).
    batch_size: rows per training batch; eval_batch_size: rows per validation batch.
    seed: shuffling seed; cache_dir: where tokenized splits are cached.
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
    ) -> None:
        super().__init__()
        if seq_len < 2:
            raise UserError(f"data.seq_len must be at least 2, not {seq_len}.")
        if batch_size < 1:
            raise UserError(f"data.batch_size must be at least 1, not {batch_size}.")
        self.source, self.tokenizer = source, tokenizer
        self.seq_len, self.batch_size, self.eval_batch_size = seq_len, batch_size, eval_batch_size
        self.seed = seed
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.start_batch = 0
        self.train_rows: torch.Tensor | None = None
        self.val_rows: torch.Tensor | None = None

    # -- data ---------------------------------------------------------------------------------
    def _rows(self, split: str) -> torch.Tensor:
        key = hashlib.sha256(
            f"{self.source.fingerprint()} {self.tokenizer.fingerprint()} {self.seq_len} {split}".encode()
        )
        path = self.cache_dir / "tokens" / f"{split}-{key.hexdigest()[:20]}.pt" if self.cache_dir else None
        if path is not None and path.is_file():
            return torch.load(path, weights_only=True)
        docs = self.source.documents(split)
        rows = pack_documents(self.tokenizer.encode_batch(docs), self.tokenizer.eos_id, self.seq_len + 1)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{id(rows)}")
            torch.save(rows, tmp)
            tmp.replace(path)
        return rows

    def setup(self, stage: str | None = None) -> None:
        if self.train_rows is not None:
            return
        self.train_rows, self.val_rows = self._rows("train"), self._rows("val")
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

    def text_bytes(self, split: str) -> int:
        """UTF-8 bytes of a split's text, for checking the bits-per-byte accounting."""
        return sum(len(d.encode("utf-8")) for d in self.source.documents(split))

    def train_texts(self) -> list[str]:
        return self.source.documents("train")

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
