# Record of the encode-time measurement run by evidence.sh (issue 7).
"""Time encoding the default run's whole corpus (train + val splits) with default superbpe and bpe."""
import time
from pathlib import Path
from pretrainctl.data.sources import StdlibSource
from pretrainctl.tokenizer.superbpe import SuperBPESpec
from pretrainctl.tokenizer.sentencepiece import SentencePieceSpec
src = StdlibSource()
train, val = src.documents("train"), src.documents("val")
docs = train + val
nbytes = sum(len(d.encode()) for d in docs)
for name, spec in [("superbpe", SuperBPESpec()), ("bpe", SentencePieceSpec())]:
    t = time.perf_counter(); tok = spec.build(train, Path("~/.cache/pretrainctl")); b = time.perf_counter() - t
    t = time.perf_counter(); ids = tok.encode_batch(docs); e = time.perf_counter() - t
    t = time.perf_counter(); ids2 = tok.encode_batch(docs); e2 = time.perf_counter() - t
    n = sum(map(len, ids))
    print(f"{name}: build {b:.1f}s, encode {nbytes/1e6:.1f} MB in {e:.1f}s (again, warm cache: {e2:.1f}s), "
          f"{n} tokens, {nbytes/n:.3f} bytes/token", flush=True)
