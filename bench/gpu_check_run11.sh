#!/usr/bin/env bash
# Device run 11: quant_frag_async (quant_frag's kernel with the weights staged by a cp.async ring, never run
# on a GPU before this script): its GPU tests (7 tiles and shapes against a float64 truth), then the
# focused CUDA-graph sweep of bench_quant_frag (quant_frag without the L2 prefetch, which run 10 found slower,
# and the cp.async ring) against the current defaults and bf16 cuBLAS in one process.
set -u
source "$(dirname "$0")/gpu_env.sh"
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  timeout "${TEST_S:-120}" python -m pytest -m gpu tests/kernels/test_quant_frag_async.py -q -p no:cacheprovider \
    -o addopts="" > "$OUT/gpu_tests_frag_cp.txt" 2>&1
  tail -n 25 "$OUT/gpu_tests_frag_cp.txt"
fi
timeout "${BENCH_S:-200}" python -m pretrainctl_kernels.bench_quant_frag --out "$OUT/bench.json" \
  > "$OUT/bench.txt" 2>&1
cat "$OUT/bench.txt"
