"""Procedural pre-pre-training data: formal languages and algorithmic tasks as documents.

Pre-pre-training on abstract, procedurally generated sequences before natural language transfers
useful structure: Papadimitriou & Jurafsky 2020 (nested parentheses / Dyck languages), Hu et al.
2025 ("Between Circuits and Chomsky: Pre-pretraining on Formal Languages Imparts Linguistic
Biases"), Zhang et al. 2024 ("Intelligence at the Edge of Chaos": elementary cellular automata,
rule classes of Wolfram 1984), and the copy/reverse/sort/modular-arithmetic tasks of algorithmic
curricula (e.g. Power et al. 2022 for modular arithmetic).

Every generator is an iterable of `Doc`s, deterministic given `seed`, with a `difficulty` knob
(an integer >= 1 that scales length/depth/operand counts as documented per class) and
`examples_per_doc` examples per document separated by blank lines. Usable alone or as a source in
a mixture.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from pretrainctl.data.curation.base import Doc

BRACKETS = ["()", "[]", "{}", "<>", "⟨⟩", "«»", "⌈⌉", "⌊⌋"]


class SyntheticSource:
    """Base class: subclasses implement `example(rng) -> str`."""

    name = "synthetic"

    def __init__(
        self, *, num_docs: int = 1000, examples_per_doc: int = 16, difficulty: int = 1, seed: int = 0
    ) -> None:
        if difficulty < 1:
            raise ValueError(f"{self.name}: difficulty must be >= 1, got {difficulty}")
        self.num_docs, self.examples_per_doc = num_docs, examples_per_doc
        self.difficulty, self.seed = difficulty, seed

    def example(self, rng: random.Random) -> str:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.num_docs

    def __iter__(self) -> Iterator[Doc]:
        rng = random.Random(f"{self.name}:{self.seed}")  # str seeds hash with sha512: stable across runs
        for i in range(self.num_docs):
            text = "\n\n".join(self.example(rng) for _ in range(self.examples_per_doc))
            yield {
                "id": f"{self.name}-{self.seed}-{i}",
                "text": text,
                "source": f"synthetic/{self.name}",
                "meta": {"difficulty": self.difficulty},
            }


class DyckSequences(SyntheticSource):
    """Balanced sequences of `k` bracket types (Dyck-k). Difficulty d: up to 8 d bracket pairs and
    nesting depth up to 2 + 2 d. Example: `( [ ] { } ) [ ]`."""

    name = "dyck"

    def __init__(
        self,
        *,
        k: int = 2,
        num_docs: int = 1000,
        examples_per_doc: int = 16,
        difficulty: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__(
            num_docs=num_docs, examples_per_doc=examples_per_doc, difficulty=difficulty, seed=seed
        )
        if not 1 <= k <= len(BRACKETS):
            raise ValueError(f"dyck: k must be in 1..{len(BRACKETS)}, got {k}")
        self.k = k

    def example(self, rng: random.Random) -> str:
        pairs = rng.randint(1, 8 * self.difficulty)
        max_depth = 2 + 2 * self.difficulty
        out: list[str] = []
        stack: list[str] = []
        opened = 0
        while opened < pairs or stack:
            can_open = opened < pairs and len(stack) < max_depth
            if can_open and (not stack or rng.random() < 0.5):
                pair = BRACKETS[rng.randrange(self.k)]
                out.append(pair[0])
                stack.append(pair[1])
                opened += 1
            else:
                out.append(stack.pop())
        return " ".join(out)


class _SequenceTask(SyntheticSource):
    """`<task>: x1 x2 ... -> y1 y2 ...` over tokens. Difficulty d: length 1..4 d, tokens from a
    vocabulary of 10 d lowercase 'words' (or integers for sort)."""

    def tokens(self, rng: random.Random) -> list[str]:
        length = rng.randint(1, 4 * self.difficulty)
        vocab = 10 * self.difficulty
        return [_word(rng.randrange(vocab)) for _ in range(length)]

    def transform(self, xs: list[str]) -> list[str]:
        raise NotImplementedError

    def example(self, rng: random.Random) -> str:
        xs = self.tokens(rng)
        return f"{self.name}: {' '.join(xs)} -> {' '.join(self.transform(xs))}"


def _word(i: int) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    s = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        s = letters[r] + s
    return s


class CopyTask(_SequenceTask):
    name = "copy"

    def transform(self, xs: list[str]) -> list[str]:
        return list(xs)


class ReverseTask(_SequenceTask):
    name = "reverse"

    def transform(self, xs: list[str]) -> list[str]:
        return xs[::-1]


class SortTask(_SequenceTask):
    """Sort integers in 0..10 d - 1 ascending (numeric order)."""

    name = "sort"

    def tokens(self, rng: random.Random) -> list[str]:
        return [str(rng.randrange(10 * self.difficulty)) for _ in range(rng.randint(1, 4 * self.difficulty))]

    def transform(self, xs: list[str]) -> list[str]:
        return sorted(xs, key=int)


class ModularArithmetic(SyntheticSource):
    """Fully parenthesized expressions over Z_m with + - *, then `mod m = answer`. Difficulty d:
    1 + d operators. Example: `((3 + 5) * 7) mod 11 = 1`."""

    name = "modarith"

    def __init__(
        self,
        *,
        modulus: int = 97,
        num_docs: int = 1000,
        examples_per_doc: int = 16,
        difficulty: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__(
            num_docs=num_docs, examples_per_doc=examples_per_doc, difficulty=difficulty, seed=seed
        )
        if modulus < 2:
            raise ValueError(f"modarith: modulus must be >= 2, got {modulus}")
        self.modulus = modulus

    def _expr(self, rng: random.Random, ops: int) -> tuple[str, int]:
        if ops == 0:
            v = rng.randrange(self.modulus)
            return str(v), v
        left_ops = rng.randint(0, ops - 1)
        ls, lv = self._expr(rng, left_ops)
        rs, rv = self._expr(rng, ops - 1 - left_ops)
        op = rng.choice("+-*")
        value = lv + rv if op == "+" else lv - rv if op == "-" else lv * rv
        return f"({ls} {op} {rs})", value % self.modulus

    def example(self, rng: random.Random) -> str:
        expr, value = self._expr(rng, 1 + self.difficulty)
        return f"{expr} mod {self.modulus} = {value}"


class CellularAutomaton(SyntheticSource):
    """Elementary cellular automaton rollouts (Wolfram code `rule`, periodic boundary), one row
    of 0/1 cells per line after a `rule R` header line. Difficulty d: width 16 d, 8 d steps."""

    name = "eca"

    def __init__(
        self,
        *,
        rule: int = 110,
        num_docs: int = 1000,
        examples_per_doc: int = 4,
        difficulty: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__(
            num_docs=num_docs, examples_per_doc=examples_per_doc, difficulty=difficulty, seed=seed
        )
        if not 0 <= rule <= 255:
            raise ValueError(f"eca: rule must be in 0..255, got {rule}")
        self.rule = rule

    def step(self, row: list[int]) -> list[int]:
        n = len(row)
        return [(self.rule >> (4 * row[i - 1] + 2 * row[i] + row[(i + 1) % n])) & 1 for i in range(n)]

    def example(self, rng: random.Random) -> str:
        row = [rng.randrange(2) for _ in range(16 * self.difficulty)]
        lines = [f"rule {self.rule}", "".join(map(str, row))]
        for _ in range(8 * self.difficulty):
            row = self.step(row)
            lines.append("".join(map(str, row)))
        return "\n".join(lines)
