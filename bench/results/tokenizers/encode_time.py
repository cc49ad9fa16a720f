# Record of the encode-time measurement run by evidence.sh (issue 7).
"""Time encoding the default run's whole corpus (train + val splits) with default superbpe and bpe."""

import time
from pathlib import Path

from pretrainctl.data.sources import StdlibSource
from pretrainctl.tokenizer.sentencepiece import SentencePieceSpec
from pretrainctl.tokenizer.superbpe import SuperBPESpec


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


src = StdlibSource()
train, val = src.documents("train"), src.documents("val")
docs = train + val
nbytes = sum(len(d.encode()) for d in docs)
for name, spec in [("superbpe", SuperBPESpec()), ("bpe", SentencePieceSpec())]:
    tok, b = timed(lambda spec=spec: spec.build(train, Path("~/.cache/pretrainctl")))
    ids, e = timed(lambda tok=tok: tok.encode_batch(docs))
    _, e2 = timed(lambda tok=tok: tok.encode_batch(docs))
    n = sum(map(len, ids))
    print(
        f"{name}: build {b:.1f}s, encode {nbytes / 1e6:.1f} MB in {e:.1f}s (again, warm cache: {e2:.1f}s), "
        f"{n} tokens, {nbytes / n:.3f} bytes/token",
        flush=True,
    )
