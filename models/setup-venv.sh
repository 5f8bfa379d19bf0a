#!/usr/bin/env bash
# Create (or refresh) the Python virtual environment used by the model build scripts.
# Everything comes from PyPI by name (pinned in requirements*.txt) plus one Debian package
# (dataset-fashion-mnist). The venv lives outside the repository (torch pulls ~6 GB of wheels).
#
#   MODELS_VENV   where to put the venv (default: $HOME/.cache/tandem/models-venv)
#   PYTHON        interpreter to create it with (default: python3; tested with 3.11)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${MODELS_VENV:-$HOME/.cache/tandem/models-venv}"
PYTHON="${PYTHON:-python3}"

# Debian data set: Fashion-MNIST (MIT), 60k train / 10k test in /usr/share/datasets/fashion-mnist/
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update
    $SUDO apt-get install -y dataset-fashion-mnist
fi

STAMP="$VENV/.tandem-requirements.sha256"
WANT="$(cat "$HERE/requirements.txt" "$HERE/requirements-nodeps.txt" | sha256sum | cut -d' ' -f1)"
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
    echo "models venv up to date: $VENV"
    exit 0
fi
mkdir -p "$(dirname "$VENV")"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -r "$HERE/requirements.txt"
"$VENV/bin/python" -m pip install --no-deps -r "$HERE/requirements-nodeps.txt"
"$VENV/bin/python" -c "import onnxruntime, torch; assert onnxruntime.__version__ == '1.31.1', onnxruntime.__version__"
echo "$WANT" > "$STAMP"
echo "models venv ready: $VENV"
