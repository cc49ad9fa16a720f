"""Deterministic, vectorized text hashing shared by dedup, contamination and quality scoring.

Python's `hash()` is salted per process, so it cannot be used across worker processes or runs.
Words are hashed once with blake2b (8 bytes) through a bounded per-process cache; n-grams of words
or bytes are then combined with numpy uint64 arithmetic (wrap-around polynomial + splitmix64
finalizer), so the per-n-gram work is vectorized.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

import numpy as np

_WORD_RE = re.compile(r"\w+")
_WS_RE = re.compile(r"\s+")
_CACHE_LIMIT = 1 << 18  # word -> hash cache entries (~25 MB of Python objects at most)
_token_cache: dict[str, int] = {}

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_POLY = np.uint64(0x100000001B3)  # FNV prime: odd, so multiplication is a bijection mod 2^64


def nfkc_lower(text: str) -> str:
    """NFKC normalization + lower case (skips the normalization pass when already NFKC)."""
    if not unicodedata.is_normalized("NFKC", text):
        text = unicodedata.normalize("NFKC", text)
    return text.lower()


def normalize(text: str) -> str:
    """Content normalization used by exact dedup: NFKC, lower case, whitespace collapsed."""
    return _WS_RE.sub(" ", nfkc_lower(text)).strip()


def words(text: str) -> list[str]:
    """Normalized word tokens (`\\w+` runs of the NFKC-lowered text); punctuation is dropped."""
    return _WORD_RE.findall(nfkc_lower(text))


def stable_hash64(s: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(s.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little"
    )


def token_hashes(tokens: list[str]) -> np.ndarray:
    """uint64 hash per token, deterministic across processes."""
    cache = _token_cache
    if len(cache) > _CACHE_LIMIT:
        cache.clear()
    hs = list(map(cache.get, tokens))
    if None in hs:
        for i, h in enumerate(hs):
            if h is None:
                tok = tokens[i]
                h = cache.get(tok)
                hs[i] = h if h is not None else cache.setdefault(tok, stable_hash64(tok))
    return np.array(hs, dtype=np.uint64)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer, elementwise on a uint64 array."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def ngram_hashes(h: np.ndarray, n: int) -> np.ndarray:
    """Hash of every length-n window of a uint64 sequence. A sequence shorter than n (but not
    empty) yields a single hash of the whole sequence, so short documents still get a signature."""
    length = len(h)
    if length == 0:
        return np.empty(0, dtype=np.uint64)
    n = min(n, length)
    count = length - n + 1
    acc = np.zeros(count, dtype=np.uint64)
    for j in range(n):
        acc = acc * _POLY + h[j : j + count]
    return mix64(acc + np.uint64(n))


def word_ngram_hashes(text: str, n: int) -> np.ndarray:
    return ngram_hashes(token_hashes(words(text)), n)


def char_ngram_hashes(text: str, n: int) -> np.ndarray:
    """Hashes of byte n-grams of the whitespace-normalized text (UTF-8 bytes, so multibyte
    characters span several bytes; this only changes the effective n for non-ASCII text)."""
    data = np.frombuffer(normalize(text).encode("utf-8"), dtype=np.uint8).astype(np.uint64)
    return ngram_hashes(data + np.uint64(1), n)
