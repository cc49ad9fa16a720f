"""The tokenizer contract every option implements.

Bits per byte needs the byte length of every token: ``token_bytes()[id]`` is the number of UTF-8
bytes that token contributes to ``decode``; control tokens (BOS, EOS, PAD, MASK) contribute 0, so the
sum over an encoded document equals ``len(text.encode())`` whenever decode(encode(text)) == text.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import torch


class Tokenizer(ABC):
    """Text <-> ids. Special ids are ``None`` when a tokenizer has no such token."""

    vocab_size: int
    bos_id: int | None = None
    eos_id: int | None = None
    pad_id: int | None = None
    mask_id: int | None = None

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` without BOS/EOS; the caller adds document boundaries."""

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; control tokens decode to nothing."""

    @abstractmethod
    def token_bytes(self) -> torch.Tensor:
        """(V,) int64: UTF-8 bytes each token contributes to decoded text (0 for control tokens)."""

    @abstractmethod
    def save(self, directory: Path) -> None:
        """Write everything needed to reload this tokenizer into ``directory``."""

    def fingerprint(self) -> str:
        """A hash that changes whenever any token's text changes (keys caches of tokenized data)."""
        h = hashlib.sha256(type(self).__name__.encode())
        for i in range(self.vocab_size):
            h.update(self.decode([i]).encode("utf-8", errors="replace") + b"\0")
        return h.hexdigest()[:16]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]
