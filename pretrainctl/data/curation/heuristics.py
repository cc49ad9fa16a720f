"""Heuristic quality filters: Gopher quality and repetition rules, C4 line rules, code rules.

- `GopherQuality` and `GopherRepetition`: the MassiveText quality filters of Rae et al. 2021
  ("Scaling Language Models: Methods, Analysis & Insights from Training Gopher", appendix A.1.1,
  table A1), with the paper's thresholds as defaults.
- `C4Lines`: the Colossal Clean Crawled Corpus line rules of Raffel et al. 2020 ("Exploring the
  Limits of Transfer Learning with a Unified Text-to-Text Transformer", section 2.2); see
  `heuristics_lines.py`.
- `CodeQuality`: source-code rules in the spirit of The Stack / StarCoder (Li et al. 2023) and
  Codex (Chen et al. 2021) filtering; see `heuristics_lines.py`.

Every rule is named; the rule name is the removal reason. A rule runs when its threshold is not
None and, if `enabled_rules` is given, its name is listed there.
"""

from __future__ import annotations

import numpy as np

from pretrainctl.data.curation.base import Doc
from pretrainctl.data.curation.hashing import ngram_hashes, token_hashes
from pretrainctl.data.curation.heuristics_lines import C4Lines, CodeQuality, RuleStage

__all__ = ["C4Lines", "CodeQuality", "GopherQuality", "GopherRepetition", "RuleStage"]

_PUNCT = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~…–—•")
_BULLETS = ("•", "●", "◦", "‣", "-", "*", "–", "⁃")
DEFAULT_STOP_WORDS = ["the", "be", "to", "of", "and", "that", "have", "with"]


class GopherQuality(RuleStage):
    """Gopher quality rules. Words are whitespace tokens; "symbol words" (only punctuation) do not
    count as words. Rules (reason names):

    - gopher_min_words / gopher_max_words: word count outside [50, 100000].
    - gopher_min_mean_word_length / gopher_max_mean_word_length: mean word length outside [3, 10].
    - gopher_symbol_word_ratio: ('#' count + '...'/'…' count) / words > 0.1.
    - gopher_bullet_lines: > 90% of non-empty lines start with a bullet.
    - gopher_ellipsis_lines: > 30% of non-empty lines end with an ellipsis.
    - gopher_stop_words: fewer than 2 distinct stop words from `stop_words`.
    - gopher_alpha_words: < 80% of words contain an alphabetic character.
    """

    name = "gopher_quality"
    RULES = (
        "gopher_min_words",
        "gopher_max_words",
        "gopher_min_mean_word_length",
        "gopher_max_mean_word_length",
        "gopher_symbol_word_ratio",
        "gopher_bullet_lines",
        "gopher_ellipsis_lines",
        "gopher_stop_words",
        "gopher_alpha_words",
    )

    def __init__(
        self,
        *,
        min_words: int | None = 50,
        max_words: int | None = 100_000,
        min_mean_word_length: float | None = 3.0,
        max_mean_word_length: float | None = 10.0,
        max_symbol_word_ratio: float | None = 0.1,
        max_bullet_lines_ratio: float | None = 0.9,
        max_ellipsis_lines_ratio: float | None = 0.3,
        min_stop_words: int | None = 2,
        stop_words: list[str] | None = None,
        min_alpha_words_ratio: float | None = 0.8,
        enabled_rules: list[str] | None = None,
        name: str | None = None,
        max_examples: int = 5,
    ) -> None:
        super().__init__(enabled_rules=enabled_rules, name=name, max_examples=max_examples)
        self.min_words, self.max_words = min_words, max_words
        self.min_mean_word_length, self.max_mean_word_length = min_mean_word_length, max_mean_word_length
        self.max_symbol_word_ratio = max_symbol_word_ratio
        self.max_bullet_lines_ratio, self.max_ellipsis_lines_ratio = (
            max_bullet_lines_ratio,
            max_ellipsis_lines_ratio,
        )
        self.min_stop_words = min_stop_words
        self.stop_words = frozenset(stop_words if stop_words is not None else DEFAULT_STOP_WORDS)
        self.min_alpha_words_ratio = min_alpha_words_ratio

    def apply(self, doc: Doc) -> Doc | str:
        text: str = doc["text"]
        words = [w for w in text.split() if not all(c in _PUNCT for c in w)]
        n = len(words)
        if self.on("gopher_min_words", self.min_words) and n < self.min_words:
            return "gopher_min_words"
        if self.on("gopher_max_words", self.max_words) and n > self.max_words:
            return "gopher_max_words"
        mean_len = sum(map(len, words)) / n if n else 0.0
        if (
            self.on("gopher_min_mean_word_length", self.min_mean_word_length)
            and mean_len < self.min_mean_word_length
        ):
            return "gopher_min_mean_word_length"
        if (
            self.on("gopher_max_mean_word_length", self.max_mean_word_length)
            and mean_len > self.max_mean_word_length
        ):
            return "gopher_max_mean_word_length"
        if self.on("gopher_symbol_word_ratio", self.max_symbol_word_ratio):
            symbols = text.count("#") + text.count("...") + text.count("…")
            if symbols / max(n, 1) > self.max_symbol_word_ratio:
                return "gopher_symbol_word_ratio"
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines and self.on("gopher_bullet_lines", self.max_bullet_lines_ratio):
            bullets = sum(line.startswith(_BULLETS) for line in lines)
            if bullets / len(lines) > self.max_bullet_lines_ratio:
                return "gopher_bullet_lines"
        if lines and self.on("gopher_ellipsis_lines", self.max_ellipsis_lines_ratio):
            ellipses = sum(line.endswith(("...", "…")) for line in lines)
            if ellipses / len(lines) > self.max_ellipsis_lines_ratio:
                return "gopher_ellipsis_lines"
        if self.on("gopher_stop_words", self.min_stop_words):
            found = self.stop_words.intersection(w.lower().strip("".join(_PUNCT)) for w in words)
            if len(found) < self.min_stop_words:
                return "gopher_stop_words"
        if n and self.on("gopher_alpha_words", self.min_alpha_words_ratio):
            alpha = sum(any(c.isalpha() for c in w) for w in words)
            if alpha / n < self.min_alpha_words_ratio:
                return "gopher_alpha_words"
        return doc


def _duplicate_fraction(items: list[str]) -> tuple[float, float]:
    """(share of items that repeat an earlier item, share of characters in those repeats)."""
    seen: set[str] = set()
    dup_items = dup_chars = 0
    for item in items:
        if item in seen:
            dup_items += 1
            dup_chars += len(item)
        else:
            seen.add(item)
    total_chars = sum(map(len, items))
    return dup_items / max(len(items), 1), dup_chars / max(total_chars, 1)


class GopherRepetition(RuleStage):
    """Gopher repetition rules (thresholds from table A1). Lines split on newlines, paragraphs on
    blank lines; n-grams are over lower-cased whitespace words, character fractions are over the
    total characters of all words. Rules (reason names):

    - gopher_dup_line_frac (> 0.30), gopher_dup_para_frac (> 0.30): share of lines / paragraphs
      that repeat an earlier one; gopher_dup_line_char_frac (> 0.20), gopher_dup_para_char_frac
      (> 0.20): share of characters in those repeats.
    - gopher_top_{2,3,4}gram (> 0.20, 0.18, 0.16): characters of the most frequent n-gram times its
      count (only if it occurs more than once).
    - gopher_dup_{5..10}gram (> 0.15 .. 0.10): characters of words covered by any n-gram that
      occurs more than once (each covered word counted once).
    `top_ngram_max_fracs[i]` is the threshold for n = 2 + i, `dup_ngram_max_fracs[i]` for n = 5 + i;
    an entry of None disables that n.
    """

    name = "gopher_repetition"
    RULES = (
        "gopher_dup_line_frac",
        "gopher_dup_para_frac",
        "gopher_dup_line_char_frac",
        "gopher_dup_para_char_frac",
        *(f"gopher_top_{n}gram" for n in (2, 3, 4)),
        *(f"gopher_dup_{n}gram" for n in range(5, 11)),
    )

    def __init__(
        self,
        *,
        max_dup_line_frac: float | None = 0.30,
        max_dup_para_frac: float | None = 0.30,
        max_dup_line_char_frac: float | None = 0.20,
        max_dup_para_char_frac: float | None = 0.20,
        top_ngram_max_fracs: list[float | None] | None = None,
        dup_ngram_max_fracs: list[float | None] | None = None,
        enabled_rules: list[str] | None = None,
        name: str | None = None,
        max_examples: int = 5,
    ) -> None:
        super().__init__(enabled_rules=enabled_rules, name=name, max_examples=max_examples)
        self.max_dup_line_frac, self.max_dup_para_frac = max_dup_line_frac, max_dup_para_frac
        self.max_dup_line_char_frac, self.max_dup_para_char_frac = (
            max_dup_line_char_frac,
            max_dup_para_char_frac,
        )
        self.top_ngram_max_fracs = (
            list(top_ngram_max_fracs) if top_ngram_max_fracs is not None else [0.20, 0.18, 0.16]
        )
        self.dup_ngram_max_fracs = (
            list(dup_ngram_max_fracs)
            if dup_ngram_max_fracs is not None
            else [0.15, 0.14, 0.13, 0.12, 0.11, 0.10]
        )

    def apply(self, doc: Doc) -> Doc | str:
        text: str = doc["text"]
        lines = [line for line in text.split("\n") if line.strip()]
        line_frac, line_char_frac = _duplicate_fraction(lines)
        if self.on("gopher_dup_line_frac", self.max_dup_line_frac) and line_frac > self.max_dup_line_frac:
            return "gopher_dup_line_frac"
        paras = [p for p in (p.strip() for p in text.split("\n\n")) if p]
        para_frac, para_char_frac = _duplicate_fraction(paras)
        if self.on("gopher_dup_para_frac", self.max_dup_para_frac) and para_frac > self.max_dup_para_frac:
            return "gopher_dup_para_frac"
        if (
            self.on("gopher_dup_line_char_frac", self.max_dup_line_char_frac)
            and line_char_frac > self.max_dup_line_char_frac
        ):
            return "gopher_dup_line_char_frac"
        if (
            self.on("gopher_dup_para_char_frac", self.max_dup_para_char_frac)
            and para_char_frac > self.max_dup_para_char_frac
        ):
            return "gopher_dup_para_char_frac"
        words = text.lower().split()
        if not words:
            return doc
        lengths = np.array([len(w) for w in words], dtype=np.int64)
        total = float(lengths.sum())
        hashes = token_hashes(words)
        for i, limit in enumerate(self.top_ngram_max_fracs):
            n = 2 + i
            rule = f"gopher_top_{n}gram"
            if not self.on(rule, limit) or len(words) < n:
                continue
            _, first, counts = np.unique(ngram_hashes(hashes, n), return_index=True, return_counts=True)
            top = int(np.argmax(counts))
            if counts[top] > 1 and lengths[first[top] : first[top] + n].sum() * counts[top] / total > limit:
                return rule
        for i, limit in enumerate(self.dup_ngram_max_fracs):
            n = 5 + i
            rule = f"gopher_dup_{n}gram"
            if not self.on(rule, limit) or len(words) < n:
                continue
            _, inverse, counts = np.unique(ngram_hashes(hashes, n), return_inverse=True, return_counts=True)
            dup_start = (counts[inverse] > 1).astype(np.int64)
            covered = np.convolve(dup_start, np.ones(n, dtype=np.int64))[: len(words)] > 0
            if lengths[covered].sum() / total > limit:
                return rule
        return doc
