#!/usr/bin/env bash
# Device run 10: the Gluon int4 decode kernel on weights repacked into mma fragment order (quant_frag),
# never run on a GPU before this script: its GPU tests (7 tiles and shapes against a float64 truth), then
# a focused CUDA-graph sweep of the frag tiles against the current defaults and bf16 cuBLAS in one
# process (each candidate checked against the truth first), then the GPU tests of every int4/int8 path
# (int4_matmul's dispatch became tile types after run 9; same launches, checked on CPU only).
set -u
source "$(dirname "$0")/gpu_env.sh"
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  timeout "${TEST_S:-90}" python -m pytest -m gpu tests/kernels/test_quant_frag.py -q -p no:cacheprovider \
    -o addopts="" > "$OUT/gpu_tests_frag.txt" 2>&1
  tail -n 25 "$OUT/gpu_tests_frag.txt"
fi
timeout "${BENCH_S:-150}" python -m pretrainctl_kernels.bench_quant_frag --out "$OUT/bench.json" \
  > "$OUT/bench.txt" 2>&1
cat "$OUT/bench.txt"
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  timeout "${TEST2_S:-150}" python -m pytest -m gpu tests/kernels/test_quant.py tests/kernels/test_quant_deq.py \
    tests/kernels/test_quant_half2.py -q -p no:cacheprovider -o addopts="" > "$OUT/gpu_tests_quant.txt" 2>&1
  tail -n 15 "$OUT/gpu_tests_quant.txt"
fi
