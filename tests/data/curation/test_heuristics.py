"""Each heuristic rule: one document that trips it, one that does not."""

from __future__ import annotations

import pytest

from pretrainctl.data.curation.base import Doc
from pretrainctl.data.curation.heuristics import C4Lines, CodeQuality, GopherQuality, GopherRepetition

PROSE = (
    "The committee met on Tuesday to review the budget that had been proposed for the coming year. "
    "Several members argued that the funds for public transport should be increased, while others "
    "wanted to keep spending flat and to invest with more caution in schools and parks. "
    "After a long discussion the chair asked each member to submit written comments by Friday, "
    "and the meeting closed with a short update about the new library building downtown."
)


def doc(text: str) -> Doc:
    return {"id": "x", "text": text, "source": "t"}


def reason(stage: GopherQuality | GopherRepetition | C4Lines | CodeQuality, text: str) -> str | None:
    out = stage.apply(doc(text))
    return out if isinstance(out, str) else None


def only(cls: type, rule: str, **kw: object) -> GopherQuality | GopherRepetition | C4Lines | CodeQuality:
    return cls(enabled_rules=[rule], **kw)


def test_clean_prose_passes_all_gopher_rules() -> None:
    assert reason(GopherQuality(), PROSE) is None
    assert reason(GopherRepetition(), PROSE) is None


GOPHER_QUALITY_CASES = [
    ("gopher_min_words", "the cat and the dog sat with me", {}),
    ("gopher_max_words", PROSE, {"max_words": 20}),
    ("gopher_min_mean_word_length", " ".join(["a to be of it"] * 20), {}),
    ("gopher_max_mean_word_length", " ".join(["incomprehensibilities characterization"] * 40), {}),
    ("gopher_symbol_word_ratio", PROSE + " #tag" * 20, {}),
    ("gopher_bullet_lines", "\n".join(f"- item {i} of the list to have" for i in range(60)), {}),
    ("gopher_ellipsis_lines", "\n".join(f"and then the story went on {i}..." for i in range(60)), {}),
    ("gopher_stop_words", " ".join(["apples oranges bananas"] * 30), {}),
    ("gopher_alpha_words", PROSE + " 123 4567 89 1011" * 20, {}),
]


@pytest.mark.parametrize(
    ("rule", "text", "kw"), GOPHER_QUALITY_CASES, ids=[c[0] for c in GOPHER_QUALITY_CASES]
)
def test_gopher_quality_rule(rule: str, text: str, kw: dict) -> None:
    assert reason(only(GopherQuality, rule, **kw), text) == rule
    assert reason(
        only(GopherQuality, rule, **kw), PROSE * (3 if rule == "gopher_min_words" else 1)
    ) is None or (rule == "gopher_max_words")
    # A None threshold switches the rule off.
    threshold_kw = {
        "gopher_min_words": "min_words",
        "gopher_max_words": "max_words",
        "gopher_min_mean_word_length": "min_mean_word_length",
        "gopher_max_mean_word_length": "max_mean_word_length",
        "gopher_symbol_word_ratio": "max_symbol_word_ratio",
        "gopher_bullet_lines": "max_bullet_lines_ratio",
        "gopher_ellipsis_lines": "max_ellipsis_lines_ratio",
        "gopher_stop_words": "min_stop_words",
        "gopher_alpha_words": "min_alpha_words_ratio",
    }[rule]
    assert reason(GopherQuality(**{**kw, threshold_kw: None}, enabled_rules=[rule]), text) is None


def test_gopher_max_words_keeps_short_doc() -> None:
    assert reason(only(GopherQuality, "gopher_max_words", max_words=1000), PROSE) is None


REPEATED_LINE = "this exact line keeps coming back again and again"
REPETITION_CASES = [
    ("gopher_dup_line_frac", "\n".join([REPEATED_LINE] * 5 + [PROSE])),
    ("gopher_dup_para_frac", "\n\n".join(["short para one here.", "short para one here.", PROSE[:200]])),
    ("gopher_dup_line_char_frac", "\n".join([PROSE[:300], PROSE[:300], PROSE[300:]])),
    ("gopher_dup_para_char_frac", "\n\n".join([PROSE[:300], PROSE[300:], PROSE[:300]])),
    ("gopher_top_2gram", PROSE + " big cat" * 40),
    ("gopher_top_3gram", PROSE + " the big cat" * 30),
    ("gopher_top_4gram", PROSE + " the big red cat" * 25),
    *((f"gopher_dup_{n}gram", PROSE + " " + " ".join(PROSE.split()[: n + 15])) for n in range(5, 11)),
]


@pytest.mark.parametrize(("rule", "text"), REPETITION_CASES, ids=[c[0] for c in REPETITION_CASES])
def test_gopher_repetition_rule(rule: str, text: str) -> None:
    assert reason(only(GopherRepetition, rule), text) == rule
    assert reason(only(GopherRepetition, rule), PROSE) is None


def test_gopher_repetition_ngram_threshold_list_entry_none_disables() -> None:
    text = PROSE + " big cat" * 40
    assert (
        reason(
            GopherRepetition(top_ngram_max_fracs=[None, 0.18, 0.16], enabled_rules=["gopher_top_2gram"]), text
        )
        is None
    )


def test_unknown_rule_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="valid rules"):
        GopherQuality(enabled_rules=["gopher_nope"])


def test_c4_line_rules_rewrite_document() -> None:
    lines = [
        "This first sentence is long enough to be kept.",
        "Short line.",
        "A navigation line without punctuation at the end",
        "Please enable JavaScript in your browser to continue.",
        "Read our privacy policy before you sign up today.",
        "Another full sentence that passes every line rule.",
        "And a third complete sentence closes this page!",
    ]
    stage = C4Lines()
    out = list(stage([doc("\n".join(lines))]))
    assert out[0]["text"].split("\n") == [lines[0], lines[5], lines[6]]
    assert stage.report.extra["lines_removed"] == {
        "c4_min_words_per_line": 1,
        "c4_terminal_punct": 1,
        "c4_javascript": 1,
        "c4_policy": 1,
    }


C4_DOC_CASES = [
    ("c4_lorem_ipsum", "Lorem ipsum dolor sit amet, consectetur elit. " * 3, {}),
    ("c4_curly_braces", "This sentence has a { brace in it somewhere. " * 3, {}),
    ("c4_min_sentences", "Only one complete sentence is on this page.", {}),
    ("c4_terminal_punct", "no punctuation here at all\nnor here either my friend", {}),
]


@pytest.mark.parametrize(("rule", "text", "kw"), C4_DOC_CASES, ids=[c[0] for c in C4_DOC_CASES])
def test_c4_document_rules(rule: str, text: str, kw: dict) -> None:
    good = "\n".join(["This first sentence is long enough to be kept."] * 3)
    if rule == "c4_terminal_punct":
        assert reason(C4Lines(enabled_rules=[rule, "c4_empty"]), text) == "c4_empty"
        assert reason(C4Lines(terminal_punct=False, enabled_rules=[rule, "c4_empty"]), text) is None
        assert reason(C4Lines(enabled_rules=[rule]), text) is None  # c4_empty off: empty doc kept
        return
    assert reason(only(C4Lines, rule, **kw), text) == rule
    assert reason(C4Lines(**kw), good) is None


def test_c4_curly_brace_policies() -> None:
    text = "This sentence has a { brace in it somewhere.\n" + "\n".join(
        ["A clean sentence is also here."] * 3
    )
    assert reason(C4Lines(), text) == "c4_curly_braces"
    out = C4Lines(curly_braces="drop_line").apply(doc(text))
    assert isinstance(out, dict) and "{" not in out["text"] and out["text"].count("\n") == 2
    assert C4Lines(curly_braces="keep").apply(doc(text))["text"] == text  # type: ignore[index]


CODE = "def add(a, b):\n    return a + b\n\n\nclass Point:\n    x: int = 0\n    y: int = 0\n"
CODE_CASES = [
    ("code_max_line_length", CODE + "x = '" + "a" * 1200 + "'\n"),
    ("code_mean_line_length", "\n".join(["value = compute_something(argument_one, argument_two) " * 3] * 5)),
    ("code_alnum_fraction", "\n".join(["{[()]} ;;; ** // == != <> ++ --"] * 10)),
    ("code_autogenerated", "# This file is auto-generated. DO NOT EDIT.\n" + CODE),
]


@pytest.mark.parametrize(("rule", "text"), CODE_CASES, ids=[c[0] for c in CODE_CASES])
def test_code_rules(rule: str, text: str) -> None:
    assert reason(only(CodeQuality, rule), text) == rule
    assert reason(CodeQuality(), CODE) is None


def test_code_autogen_marker_below_header_is_ignored() -> None:
    text = CODE * 3 + "# this comment mentions generated by hand\n"
    assert reason(CodeQuality(), text) is None


def test_filter_stage_report_counts() -> None:
    stage = GopherQuality(max_examples=1)
    docs = [doc(PROSE), doc("too short"), doc("also too short")]
    kept = list(stage(docs))
    r = stage.report
    assert len(kept) == 1 and r.docs_in == 3 and r.docs_out == 1
    assert r.reasons == {"gopher_min_words": 2} and len(r.examples) == 1
    assert r.bytes_in == sum(len(d["text"]) for d in docs) and r.bytes_out == len(PROSE)
