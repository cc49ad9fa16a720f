"""SentencePiece BPE and Unigram tokenizers (Kudo & Richardson, 2018), trained on first use.

Training uses code-safe settings (identity normalization, no dummy prefix, whitespace kept,
byte fallback) so decode(encode(text)) == text on source code; the trained model is cached under a
hash of the training text and the options, so a second run with the same data reuses it.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import sentencepiece as spm
import torch

from pretrainctl.errors import UserError
from pretrainctl.tokenizer.base import Tokenizer

MODEL_FILE = "tokenizer.model"
# SentencePiece skips "sentences" longer than max_sentence_length bytes, so documents are fed in
# chunks of whole lines no longer than this.
_CHUNK_BYTES = 4000


class SentencePieceTokenizer(Tokenizer):
    """A trained SentencePiece model; ids 0-3 are unk, BOS, EOS, PAD and id 4 is the MASK control token."""

    def __init__(self, model_proto: bytes) -> None:
        self._proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.vocab_size = self.sp.get_piece_size()
        self.bos_id, self.eos_id, self.pad_id = self.sp.bos_id(), self.sp.eos_id(), self.sp.pad_id()
        mask = self.sp.piece_to_id("<mask>")
        self.mask_id = mask if self.sp.is_control(mask) else None

    @classmethod
    def load(cls, directory: Path) -> SentencePieceTokenizer:
        return cls((Path(directory) / MODEL_FILE).read_bytes())

    def fingerprint(self) -> str:
        return hashlib.sha256(self._proto).hexdigest()[:16]

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self.sp.encode(list(texts), num_threads=2)

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode(list(ids))

    def token_bytes(self) -> torch.Tensor:
        sizes = []
        for i in range(self.vocab_size):
            if self.sp.is_control(i) or self.sp.is_unknown(i):
                sizes.append(0)
            elif self.sp.is_byte(i):
                sizes.append(1)
            else:
                sizes.append(len(self.sp.id_to_piece(i).replace("\u2581", " ").encode("utf-8")))
        return torch.tensor(sizes, dtype=torch.long)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MODEL_FILE).write_bytes(self._proto)
        meta = {"kind": "sentencepiece", "vocab_size": self.vocab_size}
        (directory / "tokenizer.json").write_text(json.dumps(meta, indent=2))


def _line_chunks(texts: Iterable[str], budget_bytes: int) -> Iterator[str]:
    """Whole-line chunks of at most _CHUNK_BYTES, stopping after ``budget_bytes`` of text."""
    seen = 0
    for text in texts:
        buf: list[str] = []
        size = 0
        for line in text.splitlines(keepends=True):
            n = len(line.encode("utf-8"))
            if buf and size + n > _CHUNK_BYTES:
                yield "".join(buf)
                buf, size = [], 0
            buf.append(line[: _CHUNK_BYTES // 4] if n > _CHUNK_BYTES else line)
            size += min(n, _CHUNK_BYTES)
        if buf:
            yield "".join(buf)
        seen += len(text.encode("utf-8"))
        if seen >= budget_bytes:
            return


class SentencePieceSpec:
    """How to obtain a SentencePiece tokenizer: load ``path`` if given, else train (or reuse the cache).

    Args:
        model_type: "bpe" or "unigram".
        vocab_size: number of pieces including the 5 special and 256 byte-fallback pieces.
        train_bytes: how much training text (from the start of the training split) to learn from.
        split_digits: split numbers into single digits.
        split_by_whitespace: False lets pieces cross word boundaries.
        path: a tokenizer directory written by a previous run (``<run>/tokenizer``).
    """

    def __init__(
        self,
        model_type: str = "bpe",
        vocab_size: int = 4096,
        train_bytes: int = 5_000_000,
        split_digits: bool = True,
        split_by_whitespace: bool = True,
        character_coverage: float = 1.0,
        path: str | None = None,
    ) -> None:
        if model_type not in ("bpe", "unigram"):
            raise UserError(f"tokenizer.model_type must be 'bpe' or 'unigram', not {model_type!r}.")
        if vocab_size < 300:
            raise UserError(f"tokenizer.vocab_size={vocab_size} is too small: byte fallback alone needs 261.")
        self.options = {
            "model_type": model_type,
            "vocab_size": vocab_size,
            "split_digits": split_digits,
            "split_by_whitespace": split_by_whitespace,
            "character_coverage": character_coverage,
        }
        self.train_bytes = train_bytes
        self.path = path

    def build(self, train_texts: Sequence[str], cache_dir: Path) -> SentencePieceTokenizer:
        if self.path is not None:
            model = Path(self.path).expanduser() / MODEL_FILE
            if not model.is_file():
                raise UserError(f"tokenizer.path={self.path} has no {MODEL_FILE}.")
            return SentencePieceTokenizer.load(model.parent)
        key = self._cache_key(train_texts)
        cached = Path(cache_dir).expanduser() / "tokenizers" / key
        if (cached / MODEL_FILE).is_file():
            return SentencePieceTokenizer.load(cached)
        tok = self._train(train_texts)
        # Save under a temporary name and rename, so a concurrent run never sees half a tokenizer.
        tmp = cached.with_name(cached.name + f".tmp{time.time_ns()}")
        tok.save(tmp)
        try:
            tmp.rename(cached)
        except OSError:  # another process finished first; its model is identical
            shutil.rmtree(tmp, ignore_errors=True)
        return tok

    def _cache_key(self, texts: Sequence[str]) -> str:
        h = hashlib.sha256(json.dumps(self.options, sort_keys=True).encode())
        h.update(str(self.train_bytes).encode())
        for chunk in _line_chunks(texts, self.train_bytes):
            h.update(chunk.encode("utf-8"))
        return f"{self.options['model_type']}{self.options['vocab_size']}-{h.hexdigest()[:16]}"

    def _train(self, texts: Sequence[str]) -> SentencePieceTokenizer:
        proto = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=_line_chunks(texts, self.train_bytes),
                model_writer=proto,
                byte_fallback=True,
                remove_extra_whitespaces=False,
                normalization_rule_name="identity",
                allow_whitespace_only_pieces=True,
                add_dummy_prefix=False,
                max_sentence_length=_CHUNK_BYTES * 4,
                unk_id=0,
                bos_id=1,
                eos_id=2,
                pad_id=3,
                control_symbols=["<mask>"],
                minloglevel=2,
                num_threads=2,
                **self.options,
            )
        except RuntimeError as exc:
            msg = str(exc)
            if "Vocabulary size" in msg:
                limit = msg.split("<=")[-1].strip(" .") if "<=" in msg else "smaller"
                raise UserError(
                    f"tokenizer.vocab_size={self.options['vocab_size']} is larger than the training text "
                    f"supports; use tokenizer.vocab_size <= {limit} or more data."
                ) from None
            raise
        return SentencePieceTokenizer(proto.getvalue())
