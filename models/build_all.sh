#!/usr/bin/env bash
# Rebuild every model folder under models/ (called by `make models`).
#   MODELS_VENV        venv to use/create (see setup-venv.sh)
#   TANDEM_SKIP_CLOUD_TEXT=1   skip the 436 MB MPNet cloud text model (text-sentiment/cloud.onnx)
#   TANDEM_ONLY="fashion imagenet text"   subset to build
# Fashion-MNIST training runs on the CPU (~10-20 min on 2 cores); checkpoints are cached in
# models/.build/ so a second run only re-exports.  Set TANDEM_RETRAIN=1 to train again.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export MODELS_VENV="${MODELS_VENV:-$HOME/.cache/tandem/models-venv}"
"$HERE/setup-venv.sh"
PY="$MODELS_VENV/bin/python"
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore}"
cd "$HERE"
ONLY="${TANDEM_ONLY:-fashion imagenet text}"
for what in $ONLY; do
    case "$what" in
        fashion)  "$PY" build_fashion.py ${TANDEM_RETRAIN:+--retrain} ;;
        imagenet) "$PY" build_imagenet.py ;;
        text)     if [ "${TANDEM_SKIP_CLOUD_TEXT:-0}" = "1" ]; then "$PY" build_text.py; else "$PY" build_text.py --cloud; fi ;;
        *) echo "unknown model group: $what" >&2; exit 2 ;;
    esac
done
"$PY" build_replay.py  # replay sets: samples of the training data (train.replay_share)
"$PY" verify_models.py
