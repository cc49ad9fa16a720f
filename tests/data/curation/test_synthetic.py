"""Procedural generators: outputs checked by independent validators; determinism."""

from __future__ import annotations

import pytest

from pretrainctl.data.curation.synthetic import (
    BRACKETS,
    CellularAutomaton,
    CopyTask,
    DyckSequences,
    ModularArithmetic,
    ReverseTask,
    SortTask,
)


def examples(source: object) -> list[str]:
    return [ex for doc in source for ex in doc["text"].split("\n\n")]  # type: ignore[attr-defined]


@pytest.mark.parametrize("difficulty", [1, 3])
def test_dyck_balanced(difficulty: int) -> None:
    closer = {p[0]: p[1] for p in BRACKETS}
    exs = examples(DyckSequences(k=3, num_docs=5, difficulty=difficulty, seed=1))
    used = set()
    for ex in exs:
        stack: list[str] = []
        depth = 0
        for tok in ex.split():
            used.add(tok)
            if tok in closer:
                stack.append(closer[tok])
                depth = max(depth, len(stack))
            else:
                assert stack and stack.pop() == tok
        assert not stack and depth <= 2 + 2 * difficulty
    assert used <= set("()[]{}") and len(used) == 6


def test_sequence_tasks() -> None:
    for ex in examples(CopyTask(num_docs=3, difficulty=2)):
        src, dst = ex.removeprefix("copy: ").split(" -> ")
        assert src == dst
    for ex in examples(ReverseTask(num_docs=3, difficulty=2)):
        src, dst = ex.removeprefix("reverse: ").split(" -> ")
        assert src.split()[::-1] == dst.split()
    for ex in examples(SortTask(num_docs=3, difficulty=2)):
        src, dst = ex.removeprefix("sort: ").split(" -> ")
        out = [int(x) for x in dst.split()]
        assert all(a <= b for a, b in zip(out, out[1:])) and sorted(map(int, src.split())) == out


def test_modular_arithmetic_answers() -> None:
    exs = examples(ModularArithmetic(modulus=13, num_docs=4, difficulty=3, seed=5))
    for ex in exs:
        lhs, answer = ex.split(" = ")
        expr, modulus = lhs.rsplit(" mod ", 1)
        assert expr.count("(") == 4  # 1 + difficulty operators, each parenthesized
        assert eval(expr) % int(modulus) == int(answer)  # noqa: S307 - generated digits and + - * only


@pytest.mark.parametrize("rule", [30, 90, 110])
def test_cellular_automaton_rule(rule: int) -> None:
    # Reference: Wolfram's table as a dict from neighbourhood string to new cell.
    table = {f"{i:03b}": (rule >> i) & 1 for i in range(8)}
    for ex in examples(CellularAutomaton(rule=rule, num_docs=2, difficulty=2, seed=3)):
        header, *rows = ex.split("\n")
        assert header == f"rule {rule}" and len(rows) == 17 and len(rows[0]) == 32
        for prev, nxt in zip(rows, rows[1:]):
            w = len(prev)
            expected = "".join(str(table[prev[i - 1] + prev[i] + prev[(i + 1) % w]]) for i in range(w))
            assert nxt == expected


def test_deterministic_given_seed() -> None:
    a = list(ModularArithmetic(num_docs=3, seed=7))
    assert a == list(ModularArithmetic(num_docs=3, seed=7))
    assert a != list(ModularArithmetic(num_docs=3, seed=8))
    assert a[0]["source"] == "synthetic/modarith" and a[0]["meta"] == {"difficulty": 1}
