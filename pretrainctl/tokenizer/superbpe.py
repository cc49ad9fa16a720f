"""SuperBPE (Liu et al., 2025, "SuperBPE: Space Travel for Language Models", arXiv:2503.13423).

A two-stage BPE curriculum over a byte alphabet (lossless on any text):

1. Stage 1 is ordinary BPE with whitespace pre-tokenization (``pretokenize.word_pretokens``) until
   the vocabulary reaches ``transition_vocab``: subword tokens.
2. Stage 2 keeps those merges and continues merging without whitespace pre-tokenization, so tokens
   can span words ("superwords" such as " of the" or "\\n        return self"). As in the paper's
   released pre-tokenizer, numbers stay isolated (in groups of three from the right by default).

Two boundaries are ours. Stage 2 trains on distinct lines with their counts (the paper's
implementation keeps whole documents; counting repeated lines once is what makes a 32k vocabulary
train in about a minute here), so a chunk starts at a run of newlines: a token can begin with
"\\n    " but never continues past a line end. And ``max_words_per_token`` (default 4, null for no
limit) caps how many whitespace-separated words one token may hold. If the text runs out of
subword pairs that occur twice before ``transition_vocab`` (source code has few distinct words),
stage 2 starts there; the tokenizer records where it started.

Encoding applies the learned merges in order (``bpe_train.MergeEncoder``) to each chunk, with a
cache of encoded chunks: source code repeats lines, so most of them are looked up, not encoded.
``transition_vocab = vocab_size`` gives plain byte-level BPE (stage 1 only).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch

from pretrainctl.errors import UserError
from pretrainctl.tokenizer.base import Tokenizer
from pretrainctl.tokenizer.bpe_train import MergeEncoder, learn_merges
from pretrainctl.tokenizer.cache import cached, load_path
from pretrainctl.tokenizer.pretokenize import (
    check_number_rule,
    split_symbols,
    superword_chunks,
    word_pretokens,
)

SPECIALS = ("<eos>", "<bos>", "<pad>", "<mask>")
MERGES_FILE = "merges.json"
_CACHE_LIMIT = 1_000_000  # encoded chunks kept (a typical line and its ids: ~200 B, so ~200 MB at most)

Progress = Callable[[str, int, int], None]  # (stage, merges done, merges in this stage)


class SuperBPETokenizer(Tokenizer):
    """Ids 0-255 are bytes, then one id per merge, then EOS, BOS, PAD, MASK, then user symbols."""

    def __init__(
        self,
        merges: Sequence[tuple[int, int]],
        stage1_merges: int,
        numbers: str = "group3",
        user_symbols: Sequence[str] = (),
    ) -> None:
        self.merges = [tuple(m) for m in merges]
        self.stage1_merges = stage1_merges
        self.numbers = numbers
        self.user_symbols = list(user_symbols)
        self.pieces: list[bytes] = [bytes([b]) for b in range(256)]
        for a, b in self.merges:
            self.pieces.append(self.pieces[a] + self.pieces[b])
        first_special = len(self.pieces)
        self.eos_id, self.bos_id, self.pad_id, self.mask_id = range(first_special, first_special + 4)
        self.symbol_ids = {s: first_special + 4 + i for i, s in enumerate(self.user_symbols)}
        self.vocab_size = first_special + 4 + len(self.user_symbols)
        self._encoder = MergeEncoder(self.merges)
        # Without stage-2 merges this is plain BPE: encode word by word as it was trained.
        self._split = superword_chunks if len(self.merges) > stage1_merges else word_pretokens
        self._cache: dict[str, list[int]] = {}

    # -- contract ---------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        out: list[int] = []
        cache, encoder, numbers = self._cache, self._encoder, self.numbers
        for piece, is_symbol in split_symbols(text, self.user_symbols):
            if is_symbol:
                out.append(self.symbol_ids[piece])
                continue
            for chunk in self._split(piece, numbers):
                ids = cache.get(chunk)
                if ids is None:
                    if len(cache) >= _CACHE_LIMIT:
                        cache.clear()
                    ids = cache[chunk] = encoder.encode(chunk.encode("utf-8"))
                out.extend(ids)
        return out

    def decode(self, ids: Sequence[int]) -> str:
        n, pieces = len(self.pieces), self.pieces
        names = {v: k for k, v in self.symbol_ids.items()}
        parts = [pieces[i] if i < n else names.get(i, "").encode("utf-8") for i in ids]
        return b"".join(parts).decode("utf-8", errors="replace")

    def token_bytes(self) -> torch.Tensor:
        sizes = [len(p) for p in self.pieces] + [0] * 4 + [len(s.encode()) for s in self.user_symbols]
        return torch.tensor(sizes, dtype=torch.long)

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self._config(), sort_keys=True).encode()).hexdigest()[:16]

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MERGES_FILE).write_text(json.dumps(self.merges))
        meta = {k: v for k, v in self._config().items() if k != "merges"}
        meta.update(kind="superbpe", vocab_size=self.vocab_size, model=MERGES_FILE)
        (directory / "tokenizer.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: Path) -> SuperBPETokenizer:
        meta = json.loads((Path(directory) / "tokenizer.json").read_text())
        merges = json.loads((Path(directory) / meta["model"]).read_text())
        return cls(merges, meta["stage1_merges"], meta["numbers"], meta["user_symbols"])

    def _config(self) -> dict:
        return {
            "merges": self.merges,
            "stage1_merges": self.stage1_merges,
            "numbers": self.numbers,
            "user_symbols": self.user_symbols,
        }


def _words_in(max_words: int | None) -> Callable[[bytes], bool] | None:
    if max_words is None:
        return None
    nonspace = re.compile(rb"\S+")
    return lambda token: len(nonspace.findall(token)) <= max_words


def train_superbpe(
    texts: Iterable[str],
    num_merges: int,
    stage1_merges: int,
    numbers: str = "group3",
    max_words_per_token: int | None = 4,
    user_symbols: Sequence[str] = (),
    progress: Progress | None = None,
) -> SuperBPETokenizer:
    """Learn ``stage1_merges`` subword merges (fewer if no subword pair occurs twice more), then
    superword merges up to ``num_merges`` in total."""
    texts = list(texts)
    plain = [p for t in texts for p, sym in split_symbols(t, user_symbols) if not sym]
    vocab = [bytes([b]) for b in range(256)]
    words = Counter(w for t in plain for w in word_pretokens(t, numbers))
    pieces = [list(w.encode("utf-8")) for w in words]
    tick = (lambda stage, total: lambda done: progress(stage, done, total)) if progress else None
    merges = learn_merges(
        pieces, list(words.values()), vocab, stage1_merges, progress=tick and tick("stage 1", stage1_merges)
    )
    if len(merges) < stage1_merges == num_merges:  # plain BPE: no stage 2 to fall back on
        raise _too_small(len(merges))
    # Code has few distinct words: when no subword pair occurs twice more, stage 2 starts early.
    stage1_merges = len(merges)
    if num_merges > stage1_merges:
        # Stage 2 starts from each distinct chunk encoded with the stage-1 merges, as encode() does.
        encoder = MergeEncoder(merges)
        chunks = Counter(c for t in plain for c in superword_chunks(t, numbers))
        pieces = [encoder.encode(c.encode("utf-8")) for c in chunks]
        more = learn_merges(
            pieces,
            list(chunks.values()),
            vocab,
            num_merges - stage1_merges,
            allowed=_words_in(max_words_per_token),
            progress=tick and tick("stage 2", num_merges - stage1_merges),
        )
        merges += more
        if len(merges) < num_merges:
            raise _too_small(len(merges))
    return SuperBPETokenizer(merges, stage1_merges, numbers, user_symbols)


def _too_small(done: int) -> UserError:
    return UserError(
        f"the training text supports only {done} merges (no pair occurs twice more); lower "
        "tokenizer.vocab_size or raise tokenizer.train_bytes."
    )


def budget_texts(texts: Iterable[str], budget_bytes: int) -> list[str]:
    """Whole documents from the start of ``texts`` until ``budget_bytes`` (the last one cut)."""
    out, seen = [], 0
    for text in texts:
        data = text.encode("utf-8")
        if seen + len(data) > budget_bytes:
            out.append(data[: budget_bytes - seen].decode("utf-8", errors="ignore"))
            break
        out.append(text)
        seen += len(data)
    return out


class SuperBPESpec:
    """How to obtain a SuperBPE tokenizer: load ``path``, or train on the training split (cached).

    Args:
        vocab_size: total ids: 256 bytes + merges + EOS/BOS/PAD/MASK + ``user_symbols``.
        transition_vocab: vocabulary size at which stage 2 starts (the paper's t; its best 8B model
            used t = 180k of 200k); null = 90% of ``vocab_size``; equal to ``vocab_size`` = plain BPE.
        train_bytes: training text taken from the start of the training split.
        numbers: ``group3`` (paper), ``digits`` or ``none``.
        max_words_per_token: cap on whitespace-separated words in a superword token (null: none).
        user_symbols: strings that always encode to one id of their own (metadata tags such as
            ``<|lang:en|>``); they are matched in the text and decode back to themselves.
        path: a tokenizer directory to load instead of training.
    """

    def __init__(
        self,
        vocab_size: int = 4096,
        transition_vocab: int | None = None,
        train_bytes: int = 5_000_000,
        numbers: str = "group3",
        max_words_per_token: int | None = 4,
        user_symbols: Sequence[str] = (),
        path: str | None = None,
    ) -> None:
        fixed = 256 + len(SPECIALS) + len(user_symbols)
        if vocab_size < fixed + 1:
            raise UserError(f"tokenizer.vocab_size={vocab_size} is too small: bytes+specials take {fixed}.")
        t = round(0.9 * vocab_size) if transition_vocab is None else transition_vocab
        if not fixed <= t <= vocab_size:
            raise UserError(
                f"tokenizer.transition_vocab={transition_vocab} must lie between {fixed} and "
                f"tokenizer.vocab_size={vocab_size}."
            )
        if max_words_per_token is not None and max_words_per_token < 1:
            raise UserError(f"tokenizer.max_words_per_token must be >= 1 or null, not {max_words_per_token}.")
        self.num_merges, self.stage1_merges = vocab_size - fixed, t - fixed
        self.numbers = check_number_rule(numbers)
        self.max_words_per_token = max_words_per_token
        self.user_symbols = list(user_symbols)
        self.train_bytes = train_bytes
        self.path = path

    def options(self) -> dict:
        return {
            "kind": "superbpe",
            "num_merges": self.num_merges,
            "stage1_merges": self.stage1_merges,
            "numbers": self.numbers,
            "max_words_per_token": self.max_words_per_token,
            "user_symbols": self.user_symbols,
            "train_bytes": self.train_bytes,
        }

    def training_texts(self, texts: Sequence[str]) -> list[str]:
        return budget_texts(texts, self.train_bytes)

    def train(self, texts: Sequence[str], progress: Progress | None = None) -> SuperBPETokenizer:
        return train_superbpe(
            self.training_texts(texts),
            self.num_merges,
            self.stage1_merges,
            self.numbers,
            self.max_words_per_token,
            self.user_symbols,
            progress,
        )

    def build(self, train_texts: Sequence[str], cache_dir: Path, progress=None) -> Tokenizer:
        if self.path is not None:
            return load_path(self.path)
        h = hashlib.sha256(json.dumps(self.options(), sort_keys=True).encode())
        for text in self.training_texts(train_texts):
            h.update(text.encode("utf-8") + b"\0")
        key = f"superbpe{self.num_merges}-{h.hexdigest()[:16]}"
        return cached(key, cache_dir, lambda: self.train(train_texts, progress))
