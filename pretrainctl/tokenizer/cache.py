"""Trained tokenizers cached by content hash, and loading a tokenizer directory named by ``path``."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from pretrainctl.errors import UserError
from pretrainctl.tokenizer.base import Tokenizer


def load_path(path: str | Path, key: str = "tokenizer.path") -> Tokenizer:
    """Any tokenizer directory (written by `pretrainctl tokenizer train` or a run's ``tokenizer/``)."""
    from pretrainctl.tokenizer import load_tokenizer

    directory = Path(path).expanduser()
    if not (directory / "tokenizer.json").is_file():
        raise UserError(
            f"{key}={path} is not a tokenizer directory (no tokenizer.json); give a directory written by "
            "`pretrainctl tokenizer train out=...` or a run's tokenizer/ folder."
        )
    return load_tokenizer(directory)


def cached(key: str, cache_dir: str | Path, train: Callable[[], Tokenizer]) -> Tokenizer:
    """The tokenizer cached under ``<cache_dir>/tokenizers/<key>``, trained and saved on a miss."""
    from pretrainctl.tokenizer import load_tokenizer

    path = Path(cache_dir).expanduser() / "tokenizers" / key
    if (path / "tokenizer.json").is_file():
        return load_tokenizer(path)
    tok = train()
    # Save under a temporary name and rename, so a concurrent run never sees half a tokenizer.
    tmp = path.with_name(path.name + f".tmp{time.time_ns()}")
    tok.save(tmp)
    try:
        tmp.rename(path)
    except OSError:  # another process finished first; its tokenizer is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return tok
