import pytest

from pretrainctl import build
from pretrainctl.cli import options
from pretrainctl.data.sources import StdlibSource
from pretrainctl.errors import UserError
from pretrainctl.tokenizer import load_tokenizer
from pretrainctl.tokenizer.bytes import ByteSpec
from pretrainctl.tokenizer.eval_cmd import parallel_samples
from pretrainctl.tokenizer.sentencepiece import SentencePieceSpec
from tests.helpers import tiny_config

SAMPLES = [
    "def f(x):\n\t\treturn x  ** 2   # trailing   \n\n\n",
    "  leading spaces and unicode: naïve café — 東京 🙂\r\nwindows line",
    "numbers 1234567 and 3.14159e-10",
]


@pytest.fixture(scope="module")
def corpus():
    src = StdlibSource(max_files=60)
    return src.documents("train"), src.documents("val")


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_sentencepiece_round_trip_and_byte_accounting(tmp_path, corpus, model_type):
    train, val = corpus
    tok = SentencePieceSpec(model_type=model_type, vocab_size=600, train_bytes=400_000).build(train, tmp_path)
    sizes = tok.token_bytes()
    for text in val + SAMPLES:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert int(sizes[ids].sum()) == len(text.encode("utf-8"))
    assert sizes[tok.eos_id] == 0 and sizes[tok.bos_id] == 0 and sizes[tok.mask_id] == 0


def test_tokenizer_is_cached_by_content(tmp_path, corpus):
    train, _ = corpus
    spec = SentencePieceSpec(vocab_size=500, train_bytes=200_000)
    first = spec.build(train, tmp_path)
    cached = list((tmp_path / "tokenizers").iterdir())
    assert len(cached) == 1
    again = spec.build(train, tmp_path)
    assert again.fingerprint() == first.fingerprint()
    SentencePieceSpec(vocab_size=520, train_bytes=200_000).build(train, tmp_path)
    assert len(list((tmp_path / "tokenizers").iterdir())) == 2


def test_save_and_load(tmp_path, corpus):
    tok = SentencePieceSpec(vocab_size=500, train_bytes=200_000).build(corpus[0], tmp_path / "cache")
    tok.save(tmp_path / "tok")
    assert load_tokenizer(tmp_path / "tok").encode(SAMPLES[0]) == tok.encode(SAMPLES[0])
    raw = ByteSpec().build([], tmp_path)
    raw.save(tmp_path / "bytes")
    assert load_tokenizer(tmp_path / "bytes").vocab_size == 260


def test_bytes_round_trip():
    tok = ByteSpec().build([], None)
    for text in SAMPLES:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert int(tok.token_bytes()[ids].sum()) == len(text.encode())


def test_vocabulary_larger_than_corpus_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="tokenizer.vocab_size=50000"):
        SentencePieceSpec(vocab_size=50_000, train_bytes=20_000).build(["tiny corpus text\n" * 50], tmp_path)


@pytest.mark.parametrize("option", options("tokenizer"))
def test_every_option_is_lossless_on_code_and_every_script(option, cache_dir):
    """decode(encode(x)) == x and exact byte accounting on code, English and six non-Latin scripts."""
    cfg = tiny_config([f"tokenizer={option}"], cache_dir)
    tok = build.build_tokenizer(cfg, build.build_datamodule(cfg))
    sizes = tok.token_bytes()
    for text in [*SAMPLES, *parallel_samples().values()]:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert int(sizes[ids].sum()) == len(text.encode("utf-8"))
    assert tok.mask_id is not None and sizes[tok.mask_id] == 0  # diffusion / MLM objectives need it


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_sentencepiece_options(tmp_path, corpus, model_type):
    train, _ = corpus
    tag = "<|lang:en|>"
    tok = SentencePieceSpec(
        model_type=model_type, vocab_size=600, train_bytes=200_000, numbers="group3", user_symbols=[tag]
    ).build(train, tmp_path)
    text = f"{tag}x = 1234567\n{SAMPLES[1]}"
    ids = tok.encode(text)
    assert tok.decode(ids) == text and ids[0] == tok.sp.piece_to_id(tag)
    assert tok.encode_batch([text, "12345"]) == [ids, tok.encode("12345")]
    nfkc = SentencePieceSpec(model_type=model_type, vocab_size=600, train_bytes=200_000, normalization="nfkc")
    assert nfkc.build(train, tmp_path).decode(nfkc.build(train, tmp_path).encode("ﬁ ①")) == "fi 1"  # lossy
    with pytest.raises(UserError, match="add_dummy_prefix"):
        SentencePieceSpec(numbers="group3", add_dummy_prefix=True)
