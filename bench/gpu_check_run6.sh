#!/usr/bin/env bash
# Device run 6: the int4 word kernel (_int4_words: int32 word loads of whole groups, exact float32 or
# bf16x2 dequantization without int->float conversions) -- the quantized GEMMs' GPU tests, then the
# quant benchmarks (bf16 cuBLAS reference, default tiles, the decode-tile sweep), all in one process.
set -u
source "$(dirname "$0")/gpu_env.sh"
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  timeout "${TEST_S:-150}" python -m pytest -m gpu tests/kernels -k "quant or int4 or int8" -q \
    -p no:cacheprovider -o addopts="" > "$OUT/gpu_tests.txt" 2>&1
  tail -n 15 "$OUT/gpu_tests.txt"
fi
timeout "${BENCH_S:-240}" python -m pretrainctl_kernels.bench --only quant --out "$OUT/bench.json" \
  > "$OUT/bench.txt" 2>&1
cat "$OUT/bench.txt"
