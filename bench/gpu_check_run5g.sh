#!/usr/bin/env bash
# Device run 5g: the final code's full GPU kernel test suite (bf16, realistic shapes; tests/kernels
# only, tests/arch needs hydra) and the fp8 benchmark with the 4-stage promoted-accumulation tile.
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
mkdir -p /tmp/pp && ln -sfn "$PWD/kernels" /tmp/pp/pretrainctl_kernels
export PYTHONPATH=/tmp/pp:$PWD
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } \
  | tee "$OUT/device.txt"
timeout "${TEST_S:-120}" python -m pytest -m gpu tests/kernels -q -p no:cacheprovider -o addopts="" \
  --durations=5 > "$OUT/gpu_tests.txt" 2>&1
tail -n 12 "$OUT/gpu_tests.txt"
timeout "${BENCH_S:-60}" python -m pretrainctl_kernels.bench --only fp8 --out "$OUT/bench.json" > "$OUT/bench.txt" 2>&1
cat "$OUT/bench.txt"
