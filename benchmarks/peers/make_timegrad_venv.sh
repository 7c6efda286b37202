#!/usr/bin/env bash
# Build the separate environment TimeGrad (pytorchts 0.6.0) needs: numpy < 2, pandas < 2 and a
# gluonts whose PyTorchPredictor still takes `freq` (0.9.x). Pins from ../../../shared/docs/peers.md;
# installs offline from the machine's package registry. Usage:
#   bash benchmarks/peers/make_timegrad_venv.sh [VENV_DIR]      (default /tmp/vsmd-timegrad-venv)
set -euo pipefail
VENV="${1:-${TIMEGRAD_VENV:-/tmp/vsmd-timegrad-venv}}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
# torch first (the CPU wheel), so the resolver never reaches for a CUDA build
"$VENV/bin/pip" install -q torch==2.13.0
"$VENV/bin/pip" install -q "setuptools<81" pytorchts==0.6.0 gluonts==0.9.10 pandas==1.5.3 numpy==1.26.4 \
  pydantic==1.10.27
"$VENV/bin/python" -c "import pts, gluonts, torch, numpy, pandas; from pts.model.time_grad import TimeGradEstimator; \
print('timegrad venv ok: gluonts', gluonts.__version__, 'torch', torch.__version__, 'numpy', numpy.__version__, \
'pandas', pandas.__version__)"
echo "$VENV"
