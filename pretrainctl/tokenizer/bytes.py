"""Byte-level tokenizer: ids 0-255 are UTF-8 bytes, then EOS, BOS, PAD and MASK. Needs no training."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from pretrainctl.tokenizer.base import Tokenizer


class ByteTokenizer(Tokenizer):
    def __init__(self) -> None:
        self.vocab_size = 260
        self.eos_id, self.bos_id, self.pad_id, self.mask_id = 256, 257, 258, 259

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def token_bytes(self) -> torch.Tensor:
        sizes = torch.zeros(self.vocab_size, dtype=torch.long)
        sizes[:256] = 1
        return sizes

    @classmethod
    def load(cls, directory: Path) -> ByteTokenizer:
        return cls()

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "tokenizer.json").write_text(
            json.dumps({"kind": "bytes", "vocab_size": self.vocab_size})
        )


class ByteSpec:
    """Config-side handle for the byte tokenizer (mirrors SentencePieceSpec.build); ``path`` loads a
    saved tokenizer directory instead, like every other option."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self.train_bytes = 0

    def options(self) -> dict:
        return {"kind": "bytes"}

    def training_texts(self, texts: Sequence[str]) -> list[str]:
        return []

    def train(self, texts: Sequence[str], progress: object = None) -> ByteTokenizer:
        return ByteTokenizer()

    def build(self, train_texts: Sequence[str], cache_dir: Path | None, progress=None) -> Tokenizer:
        if self.path is not None:
            from pretrainctl.tokenizer.cache import load_path

            return load_path(self.path)
        return ByteTokenizer()
