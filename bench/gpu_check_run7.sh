#!/usr/bin/env bash
# Device run 7: the int4 M == 1 GEMV with x resident in registers (quant_gemv._int4_xres) -- a focused
# CUDA-graph sweep of its tiles against the current default and bf16 cuBLAS in one process, each
# candidate's output checked against a float64 truth in the same run; then the GPU tests of the int4
# defaults and of the xres path.
set -u
source "$(dirname "$0")/gpu_env.sh"
timeout "${BENCH_S:-150}" python -m pretrainctl_kernels.bench_quant_xres --out "$OUT/bench.json" \
  > "$OUT/bench.txt" 2>&1
cat "$OUT/bench.txt"
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  timeout "${TEST_S:-60}" python -m pytest -m gpu tests/kernels/test_quant.py -k "xres or int4_matmul_gpu_bf16" \
    -q -p no:cacheprovider -o addopts="" > "$OUT/gpu_tests.txt" 2>&1
  tail -n 15 "$OUT/gpu_tests.txt"
fi
