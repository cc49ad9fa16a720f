#!/usr/bin/env bash
# Device run 8: the int4 M == 1 GEMV in packed fp16x2 PTX arithmetic (quant_half2._int4_h2) -- the GPU
# tests of quant_half2 (every benchmarked tile at K = N = 4096 in bf16, x far outside fp16's range, fp16 x)
# and of quant.py (int4 defaults and variants, int8), then a focused CUDA-graph sweep against the run-6
# word kernel and bf16 cuBLAS in one process, each candidate's output checked against a float64 truth.
set -u
source "$(dirname "$0")/gpu_env.sh"
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  timeout "${TEST_S:-150}" python -m pytest -m gpu tests/kernels/test_quant_half2.py tests/kernels/test_quant.py \
    -q -p no:cacheprovider -o addopts="" > "$OUT/gpu_tests.txt" 2>&1
  tail -n 25 "$OUT/gpu_tests.txt"
fi
timeout "${BENCH_S:-140}" python -m pretrainctl_kernels.bench_quant_h2 --out "$OUT/bench.json" \
  > "$OUT/bench.txt" 2>&1
cat "$OUT/bench.txt"
