"""Byte-level BPE (Sennrich et al., 2016; byte alphabet as in GPT-2): learning merges and applying them.

``learn_merges`` works on distinct pieces with their counts (a text's repeated words or lines are
counted once), keeps a count for every adjacent pair, an index from pair to the pieces containing
it, and a max-heap with lazy invalidation, so a merge only touches the pieces that contain the
merged pair. Ties are broken by the smaller pair of ids, which makes training deterministic.

``MergeEncoder`` applies merges in learned order: at every step the lowest-ranked adjacent pair is
merged, leftmost occurrence first. It does this with a heap of (rank, position) over a linked list,
O(n log n) per piece instead of the O(n^2) rescan; tests check it against the rescan.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Sequence

Pair = tuple[int, int]


def learn_merges(
    pieces: list[list[int]],
    counts: Sequence[int],
    vocab: list[bytes],
    num_merges: int,
    allowed: Callable[[bytes], bool] | None = None,
    progress: Callable[[int], None] | None = None,
    min_count: int = 2,
) -> list[Pair]:
    """Learn up to ``num_merges`` merges; ``pieces`` (ids) are rewritten and ``vocab`` (bytes of each
    id) is extended in place. New ids are ``len(vocab)`` at the time of each merge. A merge whose
    result fails ``allowed`` is never made. Stops early when no pair occurs ``min_count`` times."""
    pair_count: dict[Pair, int] = defaultdict(int)
    where: dict[Pair, set[int]] = defaultdict(set)
    for wi, (word, c) in enumerate(zip(pieces, counts)):
        for pair in zip(word, word[1:]):
            pair_count[pair] += c
            where[pair].add(wi)
    heap = [(-c, pair) for pair, c in pair_count.items()]
    heapq.heapify(heap)
    merges: list[Pair] = []
    banned: set[Pair] = set()
    while len(merges) < num_merges and heap:
        neg, pair = heapq.heappop(heap)
        current = pair_count.get(pair, 0)
        if current != -neg:  # stale entry: counts only fall for existing pairs
            if current > 0:
                heapq.heappush(heap, (-current, pair))
            continue
        if current < min_count:
            break
        if pair in banned:
            continue
        a, b = pair
        merged = vocab[a] + vocab[b]
        if allowed is not None and not allowed(merged):
            banned.add(pair)
            continue
        new = len(vocab)
        vocab.append(merged)
        merges.append(pair)
        grown: set[Pair] = set()
        for wi in where.pop(pair):
            word = pieces[wi]
            out: list[int] = []
            i, n = 0, len(word)
            while i < n:
                if i + 1 < n and word[i] == a and word[i + 1] == b:
                    out.append(new)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            if len(out) == n:  # the index is a superset: this piece no longer holds the pair
                continue
            c = counts[wi]
            for p in zip(word, word[1:]):
                pair_count[p] -= c
            for p in zip(out, out[1:]):
                pair_count[p] += c
                if new in p:
                    where[p].add(wi)
                    grown.add(p)
            pieces[wi] = out
        del pair_count[pair]
        for p in grown:  # only pairs with the new id gain counts; others only fall (lazy above)
            heapq.heappush(heap, (-pair_count[p], p))
        if progress is not None:
            progress(len(merges))
    return merges


class MergeEncoder:
    """Applies ``merges`` (ids ``first_id + rank``) to byte strings, lowest rank first."""

    def __init__(self, merges: Sequence[Pair], first_id: int = 256) -> None:
        self.first_id = first_id
        self.ranks: dict[Pair, int] = {tuple(p): r for r, p in enumerate(merges)}

    def encode(self, data: bytes) -> list[int]:
        ids = list(data)
        n = len(ids)
        if n < 2:
            return ids
        ranks, first = self.ranks, self.first_id
        heap = []
        for i in range(n - 1):
            r = ranks.get((ids[i], ids[i + 1]))
            if r is not None:
                heap.append((r, i))
        if not heap:
            return ids
        heapq.heapify(heap)
        nxt = list(range(1, n + 1))
        prv = list(range(-1, n - 1))
        while heap:
            r, i = heapq.heappop(heap)
            j = nxt[i]
            # Valid only if position i is alive and still starts the pair of rank r.
            if j >= n or ids[i] < 0 or ranks.get((ids[i], ids[j])) != r:
                continue
            ids[i] = first + r
            ids[j] = -1
            k = nxt[j]
            nxt[i] = k
            if k < n:
                prv[k] = i
                rk = ranks.get((ids[i], ids[k]))
                if rk is not None:
                    heapq.heappush(heap, (rk, i))
            p = prv[i]
            if p >= 0:
                rp = ranks.get((ids[p], ids[i]))
                if rp is not None:
                    heapq.heappush(heap, (rp, p))
        return [t for t in ids if t >= 0]
