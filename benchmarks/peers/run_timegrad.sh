#!/usr/bin/env bash
# TimeGrad seeds one after another (one thread, niced), then nothing else: score with score_arrays.py.
#   bash benchmarks/peers/run_timegrad.sh DATA_DIR OUT [SEEDS...] [-- TIMEGRAD_ARGS...]   (default seeds 0 1 2 3 4)
# e.g. bash benchmarks/peers/run_timegrad.sh /work/shared/data runs/peers/timegrad-etth1 0 1 2 3 4 -- --dataset etth1
set -euo pipefail
DATA="$1"; OUT="$2"; shift 2
SEEDS=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do SEEDS+=("$1"); shift; done
[ $# -gt 0 ] && shift  # the "--"
EXTRA=("$@")
[ ${#SEEDS[@]} -gt 0 ] || SEEDS=(0 1 2 3 4)
# logs of other datasets / splits than exchange_rate_nips test carry them in their name, like the arrays
TAG=""
DATASET="exchange_rate_nips"; SPLIT="test"
for ((i = 0; i < ${#EXTRA[@]}; i++)); do
  case "${EXTRA[$i]}" in
    --dataset) DATASET="${EXTRA[$((i + 1))]}" ;;
    --dataset=*) DATASET="${EXTRA[$i]#--dataset=}" ;;
    --split) SPLIT="${EXTRA[$((i + 1))]}" ;;
    --split=*) SPLIT="${EXTRA[$i]#--split=}" ;;
  esac
done
[ "$DATASET/$SPLIT" = "exchange_rate_nips/test" ] || TAG="_${DATASET}_${SPLIT}"
VENV="${TIMEGRAD_VENV:-/tmp/vsmd-timegrad-venv}"
HERE="$(cd "$(dirname "$0")" && pwd)"
[ -x "$VENV/bin/python" ] || bash "$HERE/make_timegrad_venv.sh" "$VENV"
mkdir -p "$OUT"
for seed in "${SEEDS[@]}"; do
  OMP_NUM_THREADS=1 nice -n 10 "$VENV/bin/python" "$HERE/timegrad.py" --data-dir "$DATA" --seed "$seed" --out "$OUT" \
    ${EXTRA[@]+"${EXTRA[@]}"} > "$OUT/timegrad${TAG}_seed$seed.log" 2>&1
done
