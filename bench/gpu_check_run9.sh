#!/usr/bin/env bash
# Device run 9: the int4 M <= 16 GEMM on weights dequantized to bf16 in registers with several groups
# per dot (quant_deq._int4_deq) -- its GPU tests (every benchmarked tile at M = 16, K = N = 4096 in bf16,
# plus M 1/7/16 shapes and fp16; EXTRA_TESTS: more pytest node ids), then a focused CUDA-graph sweep
# against the word kernel (the run-6 M = 16 default), M = 1's default and bf16 cuBLAS in one process, each
# candidate checked against a float64 truth.
set -u
source "$(dirname "$0")/gpu_env.sh"
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  timeout "${TEST_S:-120}" python -m pytest -m gpu tests/kernels/test_quant_deq.py ${EXTRA_TESTS:-} \
    -q -p no:cacheprovider -o addopts="" > "$OUT/gpu_tests.txt" 2>&1
  tail -n 25 "$OUT/gpu_tests.txt"
fi
timeout "${BENCH_S:-150}" python -m pretrainctl_kernels.bench_quant_deq --out "$OUT/bench.json" \
  > "$OUT/bench.txt" 2>&1
cat "$OUT/bench.txt"
