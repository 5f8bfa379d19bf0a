#!/usr/bin/env bash
# The TensorFlow venv that converts the TF.js NanoDet model to ONNX (models/convert_tfjs.py).
# Separate from the main models venv: tf2onnx needs onnx 1.16.2 (onnx >= 1.17 breaks TF 2.15).
#   TF_VENV   where to put it (default: $HOME/.cache/tandem/tf-venv)
set -euo pipefail
VENV="${TF_VENV:-$HOME/.cache/tandem/tf-venv}"
PYTHON="${PYTHON:-python3}"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import tensorflow, tf2onnx" 2>/dev/null; then
    echo "tf venv up to date: $VENV"; exit 0
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q tensorflow-cpu==2.15.1 tf2onnx==1.17.0 onnx==1.16.2
echo "tf venv ready: $VENV"
