"""SuperBPE and the byte-level BPE machinery, each fast path against a plain reference."""

import random
import re
from collections import Counter

import pytest

from pretrainctl.data.sources import StdlibSource
from pretrainctl.errors import UserError
from pretrainctl.tokenizer import load_tokenizer
from pretrainctl.tokenizer.bpe_train import MergeEncoder, learn_merges
from pretrainctl.tokenizer.eval_cmd import parallel_samples
from pretrainctl.tokenizer.pretokenize import number_segments, split_number, superword_chunks, word_pretokens
from pretrainctl.tokenizer.sentencepiece import SentencePieceSpec
from pretrainctl.tokenizer.superbpe import SuperBPESpec, SuperBPETokenizer

CODE = "def f(x):\n\t\treturn x  ** 2   # trailing   \n\n\n    if a_b == 1234567:\n        pass\r\n"


@pytest.fixture(scope="module")
def corpus():
    src = StdlibSource(max_files=80)
    return src.documents("train"), src.documents("val")


@pytest.fixture(scope="module")
def superbpe(corpus, tmp_path_factory):
    spec = SuperBPESpec(
        vocab_size=900, transition_vocab=700, train_bytes=400_000, user_symbols=["<|lang:en|>"]
    )
    return spec.build(corpus[0], tmp_path_factory.mktemp("cache"))


def reference_learn(words: Counter, num_merges: int, allowed=None) -> list[tuple[int, int]]:
    """Plain BPE: recount every pair each step, merge the most frequent (ties: smallest pair)."""
    pieces = {tuple(w.encode()): c for w, c in words.items()}
    vocab = [bytes([b]) for b in range(256)]
    merges = []
    while len(merges) < num_merges:
        counts = Counter()
        for p, c in pieces.items():
            for pair in zip(p, p[1:]):
                counts[pair] += c
        ok = lambda pair: allowed is None or allowed(vocab[pair[0]] + vocab[pair[1]])
        ranked = sorted((p for p, c in counts.items() if c >= 2 and ok(p)), key=lambda p: (-counts[p], p))
        if not ranked:
            break
        a, b = ranked[0]
        new = len(vocab)
        vocab.append(vocab[a] + vocab[b])
        merges.append((a, b))
        merged = {}
        for p, c in pieces.items():
            out, i = [], 0
            while i < len(p):
                if i + 1 < len(p) and p[i] == a and p[i + 1] == b:
                    out.append(new)
                    i += 2
                else:
                    out.append(p[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + c
        pieces = merged
    return merges


def reference_encode(data: bytes, merges: list[tuple[int, int]]) -> list[int]:
    """Rescan: merge every occurrence of the lowest-ranked adjacent pair, left to right, repeat."""
    ranks = {p: r for r, p in enumerate(merges)}
    ids = list(data)
    while True:
        pairs = [ranks[p] for p in zip(ids, ids[1:]) if p in ranks]
        if not pairs:
            return ids
        r = min(pairs)
        a, b = merges[r]
        out, i = [], 0
        while i < len(ids):
            if i + 1 < len(ids) and ids[i] == a and ids[i + 1] == b:
                out.append(256 + r)
                i += 2
            else:
                out.append(ids[i])
                i += 1
        ids = out


def test_merge_learner_matches_reference():
    rng = random.Random(0)
    words = Counter("".join(rng.choice("aab c") for _ in range(rng.randint(1, 12))) for _ in range(400))
    pieces = [list(w.encode()) for w in words]
    fast = learn_merges(pieces, list(words.values()), [bytes([b]) for b in range(256)], 60)
    assert fast == reference_learn(words, 60) and len(fast) > 20
    two_words = lambda t: len(re.findall(rb"\S+", t)) <= 2
    pieces = [list(w.encode()) for w in words]
    fast = learn_merges(pieces, list(words.values()), [bytes([b]) for b in range(256)], 60, allowed=two_words)
    assert fast == reference_learn(words, 60, two_words)


def test_encoder_applies_merges_in_learned_order(superbpe):
    rng = random.Random(1)
    alphabet = "ab \n" + "".join(chr(c) for c in range(ord("c"), ord("z"))) + "é東"
    texts = ["".join(rng.choice(alphabet[: rng.randint(3, len(alphabet))]) for _ in range(rng.randint(0, 80)))
             for _ in range(300)]  # fmt: skip
    texts += ["aaaaaaa", "    return self.x\n        return self.y", CODE]
    enc = MergeEncoder(superbpe.merges)
    for text in texts:
        data = text.encode()
        assert enc.encode(data) == reference_encode(data, superbpe.merges)


def test_round_trip_and_byte_accounting(superbpe, corpus):
    sizes = superbpe.token_bytes()
    texts = corpus[1] + [CODE, "", " ", "\n", "x" * 3000, *parallel_samples().values(), "🙂 \x00 \ud7ff"]
    for text in texts:
        ids = superbpe.encode(text)
        assert superbpe.decode(ids) == text
        assert int(sizes[ids].sum()) == len(text.encode("utf-8"))
    assert all(sizes[i] == 0 for i in (superbpe.eos_id, superbpe.bos_id, superbpe.pad_id, superbpe.mask_id))
    assert len({superbpe.eos_id, superbpe.bos_id, superbpe.pad_id, superbpe.mask_id}) == 4
    assert superbpe.vocab_size == 900 and sizes.shape == (900,)


def test_user_symbols_are_single_tokens(superbpe):
    text = "<|lang:en|>def f(): pass <|lang:en|>"
    ids = superbpe.encode(text)
    sym = superbpe.symbol_ids["<|lang:en|>"]
    assert ids[0] == sym and ids[-1] == sym and ids.count(sym) == 2
    assert superbpe.decode(ids) == text


def test_superwords_span_words_within_the_word_limit(superbpe):
    stage2 = superbpe.pieces[256 + superbpe.stage1_merges :]
    assert len(stage2) == 900 - 700 and any(re.search(rb"\S\s+\S", p) for p in stage2)
    assert all(len(re.findall(rb"\S+", p)) <= 4 for p in stage2)
    stage1 = superbpe.pieces[256 : 256 + superbpe.stage1_merges]
    assert not any(re.search(rb"\S \S", p) for p in stage1)  # stage 1 never crosses a space


def test_save_load_and_fingerprint(superbpe, tmp_path):
    superbpe.save(tmp_path / "tok")
    again = load_tokenizer(tmp_path / "tok")
    assert isinstance(again, SuperBPETokenizer)
    assert again.encode(CODE) == superbpe.encode(CODE) and again.fingerprint() == superbpe.fingerprint()
    assert again.token_bytes().tolist() == superbpe.token_bytes().tolist()
    other = SuperBPETokenizer(superbpe.merges[:-1], superbpe.stage1_merges)
    assert other.fingerprint() != superbpe.fingerprint()


def test_number_rules():
    assert split_number("1234567", "group3") == ["1", "234", "567"]
    assert split_number("123456", "group3") == ["123", "456"]
    assert split_number("12", "group3") == ["12"]
    assert split_number("1234", "digits") == ["1", "2", "3", "4"]
    assert split_number("1234", "none") == ["1234"]
    assert number_segments("x=1234567;", "group3") == ["x=1", "234", "567;"]
    for text in (CODE, "a  b\n\n  c 12345 d"):
        assert "".join(word_pretokens(text, "group3")) == text == "".join(superword_chunks(text, "group3"))
    assert list(word_pretokens("हिन्दी text", "none")) == ["हिन्दी", " text"]  # vowel signs stay in the word


def _boundaries(tok, text):
    ends, total = set(), 0
    sizes = tok.token_bytes()
    for i in tok.encode(text):
        total += int(sizes[i])
        ends.add(total)
    return ends


@pytest.mark.parametrize("kind", ["superbpe", "bpe"])
def test_group3_numbers_never_cross_a_group(kind, corpus, tmp_path):
    train = [*corpus[0], "n = 1234567890123 + 9876543210\n" * 200]
    if kind == "superbpe":
        tok = SuperBPESpec(vocab_size=600, train_bytes=200_000, numbers="group3").train(train)
    else:
        tok = SentencePieceSpec(vocab_size=600, train_bytes=200_000, numbers="group3").train(train)
    text = "total = 1234567890123;"
    assert tok.decode(tok.encode(text)) == text
    cuts = {len("total = 1"), len("total = 1234"), len("total = 1234567"), len("total = 1234567890")}
    assert cuts <= _boundaries(tok, text)


def test_superbpe_beats_bpe_at_equal_vocabulary(corpus, tmp_path):
    """The paper's claim on our held-out text: fewer tokens than BPE with the same vocabulary size."""
    train, val = corpus
    super_ = SuperBPESpec(vocab_size=1200, transition_vocab=800, train_bytes=400_000).train(train)
    plain = SuperBPESpec(vocab_size=1200, transition_vocab=1200, train_bytes=400_000).train(train)
    sp = SentencePieceSpec(vocab_size=1200, train_bytes=400_000).train(train)
    n = {
        name: sum(map(len, t.encode_batch(val)))
        for name, t in [("super", super_), ("bpe", plain), ("sp", sp)]
    }
    assert n["super"] < 0.95 * n["bpe"] and n["super"] < 0.95 * n["sp"], n


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="transition_vocab"):
        SuperBPESpec(vocab_size=1000, transition_vocab=2000)
    with pytest.raises(UserError, match="numbers"):
        SuperBPESpec(numbers="roman")
    with pytest.raises(UserError, match="vocab_size"):
        SuperBPESpec(vocab_size=50_000, train_bytes=5_000).train(["tiny text\n" * 40])
    with pytest.raises(UserError, match="not a tokenizer directory"):
        SuperBPESpec(path="/no/such/dir").build([], None)
