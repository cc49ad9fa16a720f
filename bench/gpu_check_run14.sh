#!/usr/bin/env bash
# Device run 14: quant_frag's new default tile (rt 1, nw 4, d 4 register sets; run 13's fastest) confirmed:
# the GPU tests of quant_frag (13: the default at M 1 / 7 / 16, earlier tiles kept explicit), then
# bench_quant_frag: the default path (frag_tile) at M = 16, 8, 4, 1 and the
# default's neighbours at M = 16 and 1, against bf16 cuBLAS and int4_matmul's default in one process.
set -u
source "$(dirname "$0")/gpu_env.sh"
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  timeout "${TEST_S:-150}" python -m pytest -m gpu tests/kernels/test_quant_frag.py \
    -q -p no:cacheprovider -o addopts="" > "$OUT/gpu_tests_frag.txt" 2>&1
  tail -n 25 "$OUT/gpu_tests_frag.txt"
fi
timeout "${BENCH_S:-200}" python -m pretrainctl_kernels.bench_quant_frag --out "$OUT/bench.json" \
  > "$OUT/bench.txt" 2>&1
cat "$OUT/bench.txt"
