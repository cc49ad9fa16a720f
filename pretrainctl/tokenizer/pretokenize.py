"""Pre-tokenization shared by the tokenizers: number handling, word pre-tokens and superword chunks.

Every function here splits text into consecutive pieces whose concatenation is the input, so any
tokenizer that encodes the pieces independently still satisfies decode(encode(x)) == x.

- ``split_numbers``: ``digits`` isolates every digit; ``group3`` cuts digit runs into groups of three
  from the right ("1234567" -> "1", "234", "567"), the rule SuperBPE (Liu et al., 2025) and
  Llama 3 use, so a group's place value is fixed; ``none`` leaves runs whole.
- ``word_pretokens``: GPT-2 style whitespace pre-tokenization (a word keeps its leading space) for
  BPE and SuperBPE stage 1; letters include combining marks so Devanagari or Arabic words stay whole.
- ``superword_chunks``: SuperBPE stage 2 drops whitespace pre-tokenization; numbers stay isolated as
  in the paper's released pre-tokenizer, and text is cut before each run of newlines so a token may
  start with a newline and indentation but never continues past a line end (see superbpe.py).
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from collections.abc import Iterator, Sequence

from pretrainctl.errors import UserError

NUMBER_RULES = ("digits", "group3", "none")


def check_number_rule(rule: str, key: str = "tokenizer.numbers") -> str:
    if rule not in NUMBER_RULES:
        raise UserError(f"{key} must be one of {', '.join(NUMBER_RULES)}, not {rule!r}.")
    return rule


def split_number(run: str, rule: str) -> list[str]:
    """A run of digits cut by ``rule``."""
    if rule == "digits":
        return list(run)
    if rule == "group3" and len(run) > 3:
        head = len(run) % 3
        groups = [run[i : i + 3] for i in range(head, len(run), 3)]
        return [run[:head], *groups] if head else groups
    return [run]


@functools.cache
def _marks() -> str:
    """A regex class body of every combining mark (category M*): Python's ``re`` has no \\p{M}, and
    without marks Hindi or Thai words would be cut at every vowel sign."""
    ranges: list[tuple[int, int]] = []
    for cp in range(0x300, sys.maxunicode + 1):
        if unicodedata.category(chr(cp))[0] == "M":
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))
    return "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges)


@functools.cache
def _pretoken_re() -> re.Pattern[str]:
    letter = rf"(?:[^\W\d_]|[{_marks()}])"
    # word with its leading space | punctuation run (with space) | digit run | whitespace runs that
    # leave their last space to the next word (GPT-2's `\s+(?!\S)|\s+`)
    return re.compile(rf" ?{letter}+| ?(?:[^\s\w{_marks()}]|_)+|\d+|\s+(?!\S)|\s+")


_CHUNK_RE = re.compile(r"\d+|\n*[^\n\d]+|\n+")


def word_pretokens(text: str, numbers: str) -> Iterator[str]:
    """Stage-1 pre-tokens: words, punctuation, whitespace runs and number groups."""
    for m in _pretoken_re().finditer(text):
        piece = m.group()
        if piece[0].isdecimal():
            yield from split_number(piece, numbers)
        else:
            yield piece


def superword_chunks(text: str, numbers: str) -> Iterator[str]:
    """Stage-2 chunks: everything between number groups and line starts may merge."""
    for m in _CHUNK_RE.finditer(text):
        piece = m.group()
        if piece[0].isdecimal():
            yield from split_number(piece, numbers)
        else:
            yield piece


def number_segments(text: str, numbers: str) -> list[str]:
    """``text`` cut only inside digit runs, where ``split_number`` cuts them (SentencePiece already
    separates digits from other characters, so this is all it needs for ``group3``)."""
    if numbers != "group3":
        return [text]
    out: list[str] = []
    last = 0
    for m in re.finditer(r"\d{4,}", text):
        parts = split_number(m.group(), numbers)
        cut = m.start()
        for part in parts[:-1]:
            cut += len(part)
            out.append(text[last:cut])
            last = cut
    out.append(text[last:])
    return out


def split_symbols(text: str, symbols: Sequence[str]) -> Iterator[tuple[str, bool]]:
    """(piece, is_symbol) pieces: user-defined symbols are matched first, longest first."""
    if not symbols:
        if text:
            yield text, False
        return
    pattern = _symbol_re(tuple(symbols))
    last = 0
    for m in pattern.finditer(text):
        if m.start() > last:
            yield text[last : m.start()], False
        yield m.group(), True
        last = m.end()
    if last < len(text):
        yield text[last:], False


@functools.cache
def _symbol_re(symbols: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(re.escape(s) for s in sorted(symbols, key=len, reverse=True)))
