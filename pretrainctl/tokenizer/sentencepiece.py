"""SentencePiece BPE and Unigram tokenizers (Kudo & Richardson, 2018), trained on first use.

The defaults are code-safe (identity normalization, no dummy prefix, whitespace kept, byte
fallback), so decode(encode(text)) == text on source code and on any script, and ``token_bytes``
is exact; the options that trade that away (NFKC normalization, dummy prefix, collapsing spaces, no
byte fallback) are documented in conf/tokenizer/bpe.yaml. The trained model is cached under a hash
of the training text and the options, so a second run with the same data reuses it.

``numbers=group3`` (three-digit groups from the right) is not a SentencePiece option: the text is
cut inside long digit runs before training and encoding (``pretokenize.number_segments``) and the
segments' ids are concatenated, which keeps decode lossless because no dummy prefix is added.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import sentencepiece as spm
import torch

from pretrainctl.errors import UserError
from pretrainctl.tokenizer.base import Tokenizer
from pretrainctl.tokenizer.cache import cached, load_path
from pretrainctl.tokenizer.pretokenize import check_number_rule, number_segments

MODEL_FILE = "tokenizer.model"
# SentencePiece skips "sentences" longer than max_sentence_length bytes, so documents are fed in
# chunks of whole lines no longer than this.
_CHUNK_BYTES = 4000


class SentencePieceTokenizer(Tokenizer):
    """A trained SentencePiece model; ids 0-3 are unk, BOS, EOS, PAD and id 4 is the MASK control token."""

    def __init__(self, model_proto: bytes, numbers: str = "digits") -> None:
        self._proto = model_proto
        self.numbers = numbers
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.vocab_size = self.sp.get_piece_size()
        self.bos_id, self.eos_id, self.pad_id = self.sp.bos_id(), self.sp.eos_id(), self.sp.pad_id()
        mask = self.sp.piece_to_id("<mask>")
        self.mask_id = mask if self.sp.is_control(mask) else None

    @classmethod
    def load(cls, directory: Path) -> SentencePieceTokenizer:
        meta = json.loads((Path(directory) / "tokenizer.json").read_text())
        return cls((Path(directory) / MODEL_FILE).read_bytes(), meta.get("numbers", "digits"))

    def fingerprint(self) -> str:
        return hashlib.sha256(self._proto + self.numbers.encode()).hexdigest()[:16]

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        if self.numbers != "group3":
            return self.sp.encode(list(texts), num_threads=2)
        segments = [number_segments(t, self.numbers) for t in texts]
        flat = self.sp.encode([s for segs in segments for s in segs], num_threads=2)
        out, i = [], 0
        for segs in segments:
            out.append([t for ids in flat[i : i + len(segs)] for t in ids])
            i += len(segs)
        return out

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
        meta = {"kind": "sentencepiece", "vocab_size": self.vocab_size, "numbers": self.numbers}
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
        numbers: "digits" (every digit a piece), "group3" (groups of three from the right) or "none".
        split_by_whitespace: False lets pieces cross word boundaries.
        normalization: SentencePiece rule: "identity" (lossless), "nfkc", "nmt_nfkc", "nfkc_cf", ...
        byte_fallback: unknown characters become their UTF-8 bytes (False: <unk>, not lossless).
        add_dummy_prefix: prepend a space to every text (SentencePiece's default for prose).
        remove_extra_whitespaces: collapse runs of spaces (breaks round trip on code).
        character_coverage: share of characters that get their own piece (the rest: byte fallback).
        user_symbols: strings that always encode to one piece (metadata tags such as ``<|lang:en|>``).
        path: a tokenizer directory to load instead of training (any kind).
    """

    def __init__(
        self,
        model_type: str = "bpe",
        vocab_size: int = 4096,
        train_bytes: int = 5_000_000,
        numbers: str = "digits",
        split_by_whitespace: bool = True,
        normalization: str = "identity",
        byte_fallback: bool = True,
        add_dummy_prefix: bool = False,
        remove_extra_whitespaces: bool = False,
        character_coverage: float = 1.0,
        user_symbols: Sequence[str] = (),
        path: str | None = None,
    ) -> None:
        if model_type not in ("bpe", "unigram"):
            raise UserError(f"tokenizer.model_type must be 'bpe' or 'unigram', not {model_type!r}.")
        if vocab_size < 300:
            raise UserError(f"tokenizer.vocab_size={vocab_size} is too small: byte fallback alone needs 261.")
        check_number_rule(numbers)
        if numbers == "group3" and add_dummy_prefix:
            raise UserError("tokenizer.numbers=group3 needs tokenizer.add_dummy_prefix=false (joins).")
        self.numbers = numbers
        self.sp_options = {
            "model_type": model_type,
            "vocab_size": vocab_size,
            "split_digits": numbers == "digits",
            "split_by_whitespace": split_by_whitespace,
            "normalization_rule_name": normalization,
            "byte_fallback": byte_fallback,
            "add_dummy_prefix": add_dummy_prefix,
            "remove_extra_whitespaces": remove_extra_whitespaces,
            "character_coverage": character_coverage,
            "user_defined_symbols": list(user_symbols),
        }
        self.train_bytes = train_bytes
        self.path = path

    def training_texts(self, texts: Sequence[str]) -> Iterator[str]:
        """The 'sentences' SentencePiece learns from (line chunks, cut inside long numbers for group3)."""
        for chunk in _line_chunks(texts, self.train_bytes):
            yield from (s for s in number_segments(chunk, self.numbers) if s)

    def options(self) -> dict:
        extra = {"numbers": self.numbers, "train_bytes": self.train_bytes}
        return {"kind": "sentencepiece", **extra, **self.sp_options}

    def build(self, train_texts: Sequence[str], cache_dir: Path, progress=None) -> Tokenizer:
        if self.path is not None:
            return load_path(self.path)
        h = hashlib.sha256(json.dumps(self.sp_options, sort_keys=True).encode())
        h.update(f"{self.train_bytes} {self.numbers}".encode())
        for chunk in self.training_texts(train_texts):
            h.update(chunk.encode("utf-8"))
        key = f"{self.sp_options['model_type']}{self.sp_options['vocab_size']}-{h.hexdigest()[:16]}"
        return cached(key, cache_dir, lambda: self.train(train_texts, progress))

    def train(self, texts: Sequence[str], progress: object = None) -> SentencePieceTokenizer:
        """Train now (``progress`` is unused: SentencePiece reports nothing while it trains)."""
        proto = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=self.training_texts(texts),
                model_writer=proto,
                allow_whitespace_only_pieces=True,
                max_sentence_length=_CHUNK_BYTES * 4,
                unk_id=0,
                bos_id=1,
                eos_id=2,
                pad_id=3,
                control_symbols=["<mask>"],
                minloglevel=2,
                num_threads=2,
                **self.sp_options,
            )
        except RuntimeError as exc:
            msg = str(exc)
            if "Vocabulary size" in msg:
                limit = msg.split("<=")[-1].strip(" .") if "<=" in msg else "smaller"
                raise UserError(
                    f"tokenizer.vocab_size={self.sp_options['vocab_size']} is larger than the training text "
                    f"supports; use tokenizer.vocab_size <= {limit} or more data."
                ) from None
            raise
        return SentencePieceTokenizer(proto.getvalue(), self.numbers)
