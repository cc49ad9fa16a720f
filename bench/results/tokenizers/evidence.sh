#!/bin/bash
# Record of the tokenizer evidence run (issue 7), as it ran under the heavy lock on 2026-11-27; output: evidence.log.
# tok helper's evidence, run under the heavy lock
source /work/main/.venv/bin/activate
export PRETRAINCTL_RUNS=/tmp/tok-runs
cd /tmp/tok-runs/evidence
echo "start $(date -u +%T) load $(cat /proc/loadavg)"
/usr/bin/time -f "eval wall %e s user %U s sys %S s maxrss %M KB" pretrainctl tokenizer eval "tokenizers=[bpe,bytebpe,superbpe]" "vocab_sizes=[8000,16000,32000]" train_bytes=20000000 out=/tmp/tok-runs/evidence/eval.json plot=/tmp/tok-runs/evidence/eval.png
echo "eval done $(date -u +%T) load $(cat /proc/loadavg)"
rm -rf /tmp/tok-runs/evidence/superbpe32k
/usr/bin/time -f "train wall %e s user %U s sys %S s maxrss %M KB" pretrainctl tokenizer train tokenizer=superbpe tokenizer.vocab_size=32000 tokenizer.train_bytes=20000000 out=/tmp/tok-runs/evidence/superbpe32k
cat /tmp/tok-runs/evidence/superbpe32k/report.json
echo "train done $(date -u +%T) load $(cat /proc/loadavg)"
/usr/bin/time -f "encode wall %e s user %U s" python /tmp/tok_encode_time.py
echo "all done $(date -u +%T) load $(cat /proc/loadavg)"
