#!/usr/bin/env bash
# Device run 13: quant_frag with d = 3-4 register sets of loads in flight per warp (d), new since run 12:
# its GPU tests (13 tiles and shapes against a float64 truth, 3 of them new), then the
# focused CUDA-graph sweep of bench_quant_frag against the current defaults and bf16 cuBLAS in one process.
set -u
source "$(dirname "$0")/gpu_env.sh"
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  timeout "${TEST_S:-120}" python -m pytest -m gpu tests/kernels/test_quant_frag.py -q -p no:cacheprovider \
    -o addopts="" > "$OUT/gpu_tests_frag.txt" 2>&1
  tail -n 25 "$OUT/gpu_tests_frag.txt"
fi
timeout "${BENCH_S:-200}" python -m pretrainctl_kernels.bench_quant_frag --out "$OUT/bench.json" \
  > "$OUT/bench.txt" 2>&1
cat "$OUT/bench.txt"
