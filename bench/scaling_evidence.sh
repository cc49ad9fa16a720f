#!/usr/bin/env bash
# Issue 9 evidence: a real IsoFLOP sweep on this CPU (default dense architecture family, embedded stdlib
# corpus), its fit, and a held-out larger run at the fitted compute-optimal size. Results: README.md,
# "Scaling-law sweep", and bench/results/scaling/.
#
# Byte tokenizer and 8 x 128-token batches: with the default 4096-piece BPE the output head dominates
# the FLOPs of models small enough for this CPU, and with 16 x 256 batches the larger sizes of each
# budget got < 100 optimizer steps (first attempt, 2026-11-27: every IsoFLOP curve fell monotonically
# towards the smallest model). Shape rule: d_model = 16 k, n_layers = d_model / 16, head dim 16.
# Each budget's widths are chosen so that every size gets ~200-10,000 steps. Two budgets' sweeps
# can run side by side (threads=1 each); a finished point is skipped when the command is rerun.
#
#   bash bench/scaling_evidence.sh sweep      # ~25 min on 2 idle cores (two lanes)
#   bash bench/scaling_evidence.sh heldout    # 6.4e12 runs at d_model 48 and 64 (~8 + ~6 min)
#   bash bench/scaling_evidence.sh fit
set -euo pipefail
cd "$(dirname "$0")/.."
export PRETRAINCTL_RUNS=${PRETRAINCTL_RUNS:-/tmp/scaling-evidence}
PT=${PT:-.venv/bin/pretrainctl}
COMMON=(tokenizer=bytes data.seq_len=128 data.batch_size=8 width_multiple=16 aspect=16 head_dim=16
        threads=1 trainer.val_check_interval=100000)
SWEEP=$PRETRAINCTL_RUNS/scaling-bytes
HELDOUT=$PRETRAINCTL_RUNS/scaling-bytes-heldout

point() {  # budget widths
  PRETRAINCTL_STAMP=bytes "$PT" scaling sweep "budgets=[$1]" "widths=[$2]" "${COMMON[@]}"
}

case "${1:-}" in
  sweep)
    (point 3.2e12 32,48,64,80,96,112) &
    (point 8e11 16,32,48,64,80 && point 1.6e12 32,48,64,80,96) &
    wait ;;
  heldout)
    PRETRAINCTL_STAMP=bytes-heldout "$PT" scaling sweep "budgets=[6.4e12]" "widths=[48,64]" "${COMMON[@]}" ;;
  fit)
    "$PT" scaling fit runs="$SWEEP" heldout="'$HELDOUT/C6.40e12-d*'" out=bench/results/scaling ;;
  *)
    echo "usage: $0 sweep|heldout|fit" >&2; exit 2 ;;
esac
