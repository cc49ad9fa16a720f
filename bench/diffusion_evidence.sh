#!/bin/bash
# Issue 4 evidence: masked diffusion vs next-token at equal total training steps on the default model
# and data (README "Masked diffusion vs next-token"). Per seed: `ar` for 300 steps; `ar` for 200 steps,
# then 100 steps of `diffusion` with objective.shift=true initialized from it. Prints each val_bpb.
# About 40 min per seed on 2 CPU cores. Usage: bash bench/diffusion_evidence.sh [seed ...]
set -euo pipefail
cd "$(dirname "$0")/.."
export PRETRAINCTL_RUNS=${PRETRAINCTL_RUNS:-/tmp/diffusion-evidence}
train() { name=$1; shift
  [ -f "$PRETRAINCTL_RUNS/$name/summary.json" ] || PRETRAINCTL_STAMP=$name .venv/bin/pretrainctl train threads=1 "$@" >"$PRETRAINCTL_RUNS/$name.log" 2>&1
  echo "$name $(grep -o '"val_bpb": [0-9.]*' "$PRETRAINCTL_RUNS/$name/summary.json")"; }
mkdir -p "$PRETRAINCTL_RUNS"
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(1337 1)
for seed in "${seeds[@]}"; do
  train "ar300_s$seed" seed="$seed"
  train "ar200_s$seed" seed="$seed" trainer.max_steps=200
  train "ar200_diffshift100_s$seed" seed="$seed" objective=diffusion objective.shift=true \
    init_from="$PRETRAINCTL_RUNS/ar200_s$seed" trainer.max_steps=100
done
