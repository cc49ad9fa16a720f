"""Tokenizers behind one contract (``base.Tokenizer``) and loading a run's saved tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

from pretrainctl.tokenizer.base import Tokenizer


def load_tokenizer(directory: Path) -> Tokenizer:
    """Reload the tokenizer a run saved in ``<run>/tokenizer``."""
    meta = json.loads((Path(directory) / "tokenizer.json").read_text())
    if meta["kind"] == "bytes":
        from pretrainctl.tokenizer.bytes import ByteTokenizer

        return ByteTokenizer()
    from pretrainctl.tokenizer.sentencepiece import SentencePieceTokenizer

    return SentencePieceTokenizer.load(Path(directory))


__all__ = ["Tokenizer", "load_tokenizer"]
