#!/usr/bin/env bash
# TimeGrad seeds one after another (one thread, niced), then nothing else: score with score_arrays.py.
#   bash benchmarks/peers/run_timegrad.sh DATA_DIR OUT [SEEDS...]     (default seeds 0 1 2 3 4)
set -euo pipefail
DATA="$1"; OUT="$2"; shift 2
SEEDS=("${@:-0 1 2 3 4}")
VENV="${TIMEGRAD_VENV:-/tmp/vsmd-timegrad-venv}"
HERE="$(cd "$(dirname "$0")" && pwd)"
[ -x "$VENV/bin/python" ] || bash "$HERE/make_timegrad_venv.sh" "$VENV"
mkdir -p "$OUT"
for seed in ${SEEDS[@]}; do
  OMP_NUM_THREADS=1 nice -n 10 "$VENV/bin/python" "$HERE/timegrad.py" --data-dir "$DATA" --seed "$seed" --out "$OUT" \
    > "$OUT/timegrad_seed$seed.log" 2>&1
done
