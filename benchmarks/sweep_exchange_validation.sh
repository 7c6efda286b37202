#!/usr/bin/env bash
# Model selection for exchange_rate_nips on the validation split (last 5 x 30 steps of the
# training range). Never touches the test windows. Results: runs/val-exchange/<config>/summary.md
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/val-exchange}
COMMON=(--dataset exchange_rate_nips --split validation --sde vsuld --seeds 0 1 --jobs 2 --eval-steps 20 100)
run() { name=$1; shift; [ -f "$OUT/$name/summary.md" ] && return 0; python benchmarks/crps_sum.py "${COMMON[@]}" --out "$OUT/$name" "$@"; }
run base      --set max_epochs=20
run beta10    --set max_epochs=20 beta=10
run beta4     --set max_epochs=20 beta=4
# second round around the best beta of round one (beta=10)
run beta14        --set max_epochs=20 beta=14
run beta10-e40    --set max_epochs=40 beta=10
run beta10-Alr1e-2 --set max_epochs=20 beta=10 A_training.lr=0.01
# third round: training length at beta=10 (40 epochs was worse than 20)
run beta10-e10    --set max_epochs=10 beta=10
run beta10-e30    --set max_epochs=30 beta=10
