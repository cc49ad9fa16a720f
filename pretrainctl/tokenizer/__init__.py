"""Tokenizers behind one contract (``base.Tokenizer``) and loading a saved tokenizer directory.

A directory holds ``tokenizer.json`` whose ``kind`` names the class that reloads it, plus that
class's model file (``tokenizer.model`` for SentencePiece, ``merges.json`` for SuperBPE).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from pretrainctl.errors import UserError
from pretrainctl.tokenizer.base import Tokenizer

KINDS = {
    "bytes": "pretrainctl.tokenizer.bytes:ByteTokenizer",
    "sentencepiece": "pretrainctl.tokenizer.sentencepiece:SentencePieceTokenizer",
    "superbpe": "pretrainctl.tokenizer.superbpe:SuperBPETokenizer",
}


def load_tokenizer(directory: Path) -> Tokenizer:
    """Reload the tokenizer saved in ``directory`` (a run's ``tokenizer/`` or a trained one)."""
    meta = json.loads((Path(directory) / "tokenizer.json").read_text())
    if meta.get("kind") not in KINDS:
        known = ", ".join(KINDS)
        raise UserError(f"{directory}/tokenizer.json has kind {meta.get('kind')!r}; known kinds: {known}.")
    module, name = KINDS[meta["kind"]].split(":")
    return getattr(importlib.import_module(module), name).load(Path(directory))


__all__ = ["Tokenizer", "load_tokenizer"]
