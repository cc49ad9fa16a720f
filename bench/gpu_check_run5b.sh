#!/usr/bin/env bash
# Device runs 5b and 5c: reruns of the parts changed after run 5 (MoE: shared-memory-aware stages, gradient
# dtype under autocast, int16 sort keys, tile default; int4 decode: zero point factored out of the
# matrix-unit path (5b), then the re-interleaved "join" variant and sync-free routing (5c)) -- their GPU
# tests, a MoE tile sweep and the moe/quant benchmarks.
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
mkdir -p /tmp/pp && ln -sfn "$PWD/kernels" /tmp/pp/pretrainctl_kernels
export PYTHONPATH=/tmp/pp:$PWD
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } \
  | tee "$OUT/device.txt"
timeout "${TEST_S:-120}" python -m pytest -m gpu tests/kernels -k "moe or quant or int4 or int8 or backend" -q \
  -p no:cacheprovider -o addopts="" --durations=5 > "$OUT/gpu_tests.txt" 2>&1
tail -n 25 "$OUT/gpu_tests.txt"
timeout "${BENCH_S:-200}" python -m pretrainctl_kernels.tune --only moe --budget-s 60 \
  --bench-out "$OUT/bench.json" --bench-only moe,quant > "$OUT/bench.txt" 2>&1
cat "$OUT/bench.txt"
