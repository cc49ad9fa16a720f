#!/usr/bin/env bash
# Device run 5d: the final int4 decode table (M = 16: one full-depth dot, tile from run 5c) -- the
# quantized GEMMs' GPU tests and the moe/quant benchmarks with a wider decode-tile sweep.
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
mkdir -p /tmp/pp && ln -sfn "$PWD/kernels" /tmp/pp/pretrainctl_kernels
export PYTHONPATH=/tmp/pp:$PWD
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } \
  | tee "$OUT/device.txt"
timeout "${TEST_S:-90}" python -m pytest -m gpu tests/kernels -k "quant or int4 or int8 or fp8" -q \
  -p no:cacheprovider -o addopts="" > "$OUT/gpu_tests.txt" 2>&1
tail -n 15 "$OUT/gpu_tests.txt"
timeout "${BENCH_S:-150}" python -m pretrainctl_kernels.bench --only moe,quant --out "$OUT/bench.json" \
  > "$OUT/bench.txt" 2>&1
cat "$OUT/bench.txt"
