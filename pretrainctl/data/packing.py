"""Sequence packing: documents joined with EOS and cut into fixed-length rows.

A row holds ``seq_len + 1`` tokens so an autoregressive objective can shift by one; other
objectives use the same rows. Attention is not masked at document boundaries (the EOS token marks
them), which is the usual pretraining choice.
"""

from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=16)
def epoch_order(n_rows: int, epoch: int, seed: int) -> torch.Tensor:
    """The row permutation of one epoch: a pure function of (seed, epoch). Cached, because every
    batch (and, in a mixture, every row) asks for its epoch's permutation; callers only read it."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n_rows, generator=gen)


def batch_rows(n_rows: int, batch_size: int, batch_index: int, seed: int) -> torch.Tensor:
    """Row indices of global batch ``batch_index``. Each epoch is a fresh permutation and drops its
    last partial batch, so the order is reproducible from the index alone (exact resume)."""
    per_epoch = n_rows // batch_size
    epoch, within = divmod(batch_index, per_epoch)
    return epoch_order(n_rows, epoch, seed)[within * batch_size : (within + 1) * batch_size]


def pack_with_prefixes(
    docs_ids: Sequence[Sequence[int]], prefix_ids: Sequence[Sequence[int]], eos_id: int, row_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Like ``pack_documents`` with ``prefix + document + EOS`` per document, plus a (N, row_len)
    bool mask that is False on the prefix tokens (metadata conditioning: the model reads the prefix
    but is not trained to predict it)."""
    total = sum(len(p) + len(d) + 1 for p, d in zip(prefix_ids, docs_ids))
    flat = torch.empty(total, dtype=torch.long)
    mask = torch.ones(total, dtype=torch.bool)
    pos = 0
    for prefix, ids in zip(prefix_ids, docs_ids):
        k, n = len(prefix), len(ids)
        flat[pos : pos + k] = torch.as_tensor(prefix, dtype=torch.long)
        mask[pos : pos + k] = False
        flat[pos + k : pos + k + n] = torch.as_tensor(ids, dtype=torch.long)
        flat[pos + k + n] = eos_id
        pos += k + n + 1
    n_rows = total // row_len
    return flat[: n_rows * row_len].view(n_rows, row_len), mask[: n_rows * row_len].view(n_rows, row_len)
