#!/bin/sh
# The comparison's reference servers (MLServer 1.7 + the seed's naive FastAPI design) in
# their own virtualenv, outside the project's: ANCHOR_VENV (default /tmp/venv-anchor).
# MLServer's runtimes: sklearn (rf10), xgboost (xgb100), lightgbm (lgbm100); lightgbm is
# pinned to the project's version so both sides read the same model file the same way.
set -eu
venv=${ANCHOR_VENV:-/tmp/venv-anchor}
command -v wrk >/dev/null || { echo "install wrk first: apt-get install -y wrk" >&2; exit 2; }
python3 -m venv "$venv"
"$venv/bin/pip" install -q 'mlserver>=1.7,<1.8' 'mlserver-sklearn>=1.7,<1.8' \
    'mlserver-xgboost>=1.7,<1.8' 'mlserver-lightgbm==1.7.1' 'lightgbm==4.7.0' \
    fastapi 'uvicorn[standard]' scikit-learn xgboost joblib
echo "anchor servers installed in $venv"
