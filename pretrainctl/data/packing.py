"""Sequence packing: documents joined with EOS and cut into fixed-length rows.

A row holds ``seq_len + 1`` tokens so an autoregressive objective can shift by one; other
objectives use the same rows. Attention is not masked at document boundaries (the EOS token marks
them), which is the usual pretraining choice.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def pack_documents(docs_ids: Sequence[Sequence[int]], eos_id: int, row_len: int) -> torch.Tensor:
    """(N, row_len) int64 rows of the documents, each followed by EOS; the ragged tail is dropped."""
    total = sum(len(d) + 1 for d in docs_ids)
    flat = torch.empty(total, dtype=torch.long)
    pos = 0
    for ids in docs_ids:
        n = len(ids)
        flat[pos : pos + n] = torch.as_tensor(ids, dtype=torch.long)
        flat[pos + n] = eos_id
        pos += n + 1
    n_rows = total // row_len
    return flat[: n_rows * row_len].view(n_rows, row_len)


def epoch_order(n_rows: int, epoch: int, seed: int) -> torch.Tensor:
    """The row permutation of one epoch: a pure function of (seed, epoch)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n_rows, generator=gen)


def batch_rows(n_rows: int, batch_size: int, batch_index: int, seed: int) -> torch.Tensor:
    """Row indices of global batch ``batch_index``. Each epoch is a fresh permutation and drops its
    last partial batch, so the order is reproducible from the index alone (exact resume)."""
    per_epoch = n_rows // batch_size
    epoch, within = divmod(batch_index, per_epoch)
    return epoch_order(n_rows, epoch, seed)[within * batch_size : (within + 1) * batch_size]
