#!/usr/bin/env bash
# Device run 15: after the cp.async variant's removal, quant_frag's GPU tests again, then the standard quant
# benchmark (`python -m pretrainctl_kernels.bench --only quant`, what `make bench-kernels` runs for the
# quantized GEMMs), which now times int4_matmul_frag on repacked weights next to bf16 cuBLAS.
set -u
source "$(dirname "$0")/gpu_env.sh"
timeout "${TEST_S:-90}" python -m pytest -m gpu tests/kernels/test_quant_frag.py -q -p no:cacheprovider \
  -o addopts="" > "$OUT/gpu_tests_frag.txt" 2>&1
tail -n 5 "$OUT/gpu_tests_frag.txt"
timeout "${BENCH_S:-170}" python -m pretrainctl_kernels.bench --only quant --out "$OUT/bench.json" \
  > "$OUT/bench.txt" 2>&1
grep -E "frag|ratio|bf16_matmul" "$OUT/bench.txt" | grep -v " words \| bytes " | head -40
