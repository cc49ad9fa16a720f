#!/usr/bin/env bash
# One device run: GPU kernel tests (bf16, realistic shapes) then the kernel benchmarks.
# The GPU machines have torch + triton but no hydra and no registry, so the kernels package is put
# on the path by a link instead of being installed.
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
mkdir -p /tmp/pp && ln -sfn "$PWD/kernels" /tmp/pp/pretrainctl_kernels
export PYTHONPATH=/tmp/pp:$PWD
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/device.txt"
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/device.txt"
if python -m pytest --version >/dev/null 2>&1; then
  timeout "${TEST_S:-200}" python -m pytest -m gpu tests/kernels -q -p no:cacheprovider -o addopts="" 2>&1 \
    | tail -40 | tee "$OUT/gpu_tests.txt"
else
  echo "pytest is not installed here; GPU tests skipped" | tee "$OUT/gpu_tests.txt"
fi
timeout "${BENCH_S:-300}" python -m pretrainctl_kernels.bench --out "$OUT/bench.json" 2>&1 | tee "$OUT/bench.txt" | tail -60
