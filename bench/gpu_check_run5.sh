#!/usr/bin/env bash
# Device run 5 (issue 5's remaining parts): GPU kernel tests, a short MoE tile sweep followed by the
# benchmarks of the ops changed in this round (moe, int4/int8 decode, fp8), then the other ops for the
# record. The GPU machines have torch + triton + pytest but no hydra and no registry, so the kernels
# package is put on the path by a link instead of being installed. Everything lands in $OUT.
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
mkdir -p /tmp/pp && ln -sfn "$PWD/kernels" /tmp/pp/pretrainctl_kernels
export PYTHONPATH=/tmp/pp:$PWD
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } \
  | tee "$OUT/device.txt"
# GPU tests (bf16, realistic shapes) of tests/kernels only: tests/arch needs hydra.
timeout "${TEST_S:-150}" python -m pytest -m gpu tests/kernels -q -p no:cacheprovider -o addopts="" \
  --durations=8 > "$OUT/gpu_tests.txt" 2>&1
tail -n 25 "$OUT/gpu_tests.txt"
# MoE tile sweep, then the changed ops' benchmark with the sweep's winner in place (tune.py prints it).
timeout "${BENCH_S:-210}" python -m pretrainctl_kernels.tune --only moe --budget-s 80 \
  --bench-out "$OUT/bench.json" --bench-only moe,quant,fp8 > "$OUT/bench.txt" 2>&1
cat "$OUT/bench.txt"
timeout "${REST_S:-100}" python -m pretrainctl_kernels.bench --only attention,ce,norms \
  --out "$OUT/bench_rest.json" > "$OUT/bench_rest.txt" 2>&1
cat "$OUT/bench_rest.txt"
