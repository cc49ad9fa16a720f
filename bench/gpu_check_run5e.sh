#!/usr/bin/env bash
# Device runs 5e and 5f: fp8 with promoted accumulation (5e: first try; 5f: its own tile table) -- the fp8 GPU tests
# (including accumulation precision against cuBLAS) and the fp8 benchmark with its accuracy rows.
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
mkdir -p /tmp/pp && ln -sfn "$PWD/kernels" /tmp/pp/pretrainctl_kernels
export PYTHONPATH=/tmp/pp:$PWD
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } \
  | tee "$OUT/device.txt"
timeout "${TEST_S:-60}" python -m pytest -m gpu tests/kernels/test_fp8.py -q -p no:cacheprovider -o addopts="" \
  > "$OUT/gpu_tests.txt" 2>&1
tail -n 30 "$OUT/gpu_tests.txt"
timeout "${BENCH_S:-90}" python -m pretrainctl_kernels.bench --only fp8 --out "$OUT/bench.json" > "$OUT/bench.txt" 2>&1
cat "$OUT/bench.txt"
