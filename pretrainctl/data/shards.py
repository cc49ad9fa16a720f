"""Pre-tokenized token shards: written by ``pretrainctl data prepare tokenize=true``, read by
``data=shards``.

Layout of a prepared directory (``<out>``)::

    tokenizer/                  the tokenizer the shards were made with (training loads it)
    tokens/index.json           dtype, vocab size, EOS id, tokenizer fingerprint, and per split the
                                shard files in order with their token and document counts
    tokens/part-NNNNN.{train,val}.bin   flat little-endian uint16 (vocabularies up to 65,536) or
                                uint32 token ids, every document followed by EOS (nanoGPT/Megatron
                                style ``.bin`` files, read with ``numpy.memmap``)

Reading: a split is the concatenation of its shards; training row ``r`` is the window of
``seq_len + 1`` tokens starting at ``r * (seq_len + 1)`` (a window may cross a shard boundary). Rows
are drawn with the same pure function of (seed, batch index) as ``PackedDataModule``, so resume is
token-exact and ranks read disjoint batches. Only the rows of one batch are ever copied out of the
memory maps, so a corpus larger than RAM trains without loading it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrainctl.data.datamodule import StreamDataModule
from pretrainctl.data.packing import batch_rows
from pretrainctl.errors import UserError
from pretrainctl.tokenizer.base import Tokenizer

INDEX = "index.json"


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (halves the disk and page-cache footprint), else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def write_tokens(docs_ids: list[list[int]], eos_id: int, path: Path, dtype: np.dtype) -> int:
    """Write documents (each followed by EOS) as one flat shard, atomically; returns the token count."""
    total = sum(len(d) + 1 for d in docs_ids)
    flat = np.empty(total, dtype=dtype.newbyteorder("<"))
    pos = 0
    for ids in docs_ids:
        flat[pos : pos + len(ids)] = ids
        flat[pos + len(ids)] = eos_id
        pos += len(ids) + 1
    tmp = path.with_name(path.name + ".tmp")
    flat.tofile(tmp)
    os.replace(tmp, path)
    return total


class TokenRows:
    """Fixed-length rows over the concatenated shards of one split, backed by memory maps.

    ``rows[idx]`` for a (B,) index tensor returns a (B, row_len) int64 tensor."""

    def __init__(self, files: list[Path], dtype: np.dtype, row_len: int) -> None:
        self.maps = [np.memmap(f, dtype=dtype.newbyteorder("<"), mode="r") for f in files if f.stat().st_size]
        sizes = np.array([len(m) for m in self.maps], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])  # start of each shard in the split
        self.row_len = row_len
        self.num_tokens = int(self.offsets[-1])

    def __len__(self) -> int:
        return self.num_tokens // self.row_len

    def window(self, start: int) -> np.ndarray:
        out = np.empty(self.row_len, dtype=np.int64)
        filled = 0
        shard = int(np.searchsorted(self.offsets, start, side="right")) - 1
        while filled < self.row_len:  # a window crossing a shard boundary takes from the next shard
            lo = start + filled - int(self.offsets[shard])
            piece = self.maps[shard][lo : lo + self.row_len - filled]
            out[filled : filled + len(piece)] = piece
            filled += len(piece)
            shard += 1
        return out

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(idx).reshape(-1)
        return torch.from_numpy(np.stack([self.window(int(r) * self.row_len) for r in idx]))


def read_index(path: str | Path) -> dict[str, Any]:
    index = Path(path).expanduser() / "tokens" / INDEX
    if not index.is_file():
        raise UserError(
            f"data.path={path} holds no token shards ({index} is missing); make them with "
            f"`pretrainctl data prepare out={path} tokenize=true`."
        )
    return json.loads(index.read_text())


class ShardsDataModule(StreamDataModule):
    """Args:
    path: a directory written by ``pretrainctl data prepare ... tokenize=true``.
    tokenizer: must be the one the shards were made with (build.py loads ``<path>/tokenizer``).
    seq_len, batch_size, eval_batch_size, seed, cache_dir: as for ``PackedDataModule`` (no cache is
        needed: the shards are the cache).
    """

    def __init__(
        self,
        path: str,
        tokenizer: Tokenizer | None = None,
        seq_len: int = 256,
        batch_size: int = 16,
        eval_batch_size: int = 16,
        seed: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(seq_len, batch_size, eval_batch_size, seed)
        self.path = Path(path).expanduser()
        self.index = read_index(self.path)
        self.tokenizer = tokenizer
        self.tokenizer_dir = self.path / self.index["tokenizer_dir"]

    def _split(self, split: str) -> TokenRows:
        files = [self.path / "tokens" / s["file"] for s in self.index["splits"][split]]
        return TokenRows(files, np.dtype(self.index["dtype"]), self.seq_len + 1)

    def setup(self, stage: str | None = None) -> None:
        if self.train_rows is not None:
            return
        if self.tokenizer is not None and self.tokenizer.fingerprint() != self.index["tokenizer_fingerprint"]:
            raise UserError(
                f"the shards in {self.path} were made with another tokenizer; train with the one in "
                f"{self.tokenizer_dir} (the default for data=shards; drop init_from or re-prepare)."
            )
        self.train_rows = self._split("train")
        val = self._split("val")
        self.val_rows = val[torch.arange(len(val))] if len(val) else torch.empty(0, self.seq_len + 1)
        self.check_sizes()

    def train_batch(self, index: int) -> dict[str, torch.Tensor]:
        return {
            "tokens": self.train_rows[batch_rows(len(self.train_rows), self.batch_size, index, self.seed)]
        }

    def data_summary(self, consumed_batches: int) -> dict[str, Any]:
        return {"data_shards": {"path": str(self.path), "train_tokens": self.train_rows.num_tokens}}
