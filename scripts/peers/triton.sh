#!/usr/bin/env bash
# Triton Inference Server peer for benchmarks: Triton 2.51.0 (the binary inside the pip wheel
# nvidia-pytriton 0.7.0; it ships only the Python backend) serving one ONNX model through a
# Python-backend model that runs onnxruntime on the concatenated batch, with dynamic batching.
# Bound to 127.0.0.1 only (HTTP; gRPC and metrics off). See ../shared/notes/peers.md.
#
# Usage: scripts/peers/triton.sh [--install-only] MODEL_NAME ONNX_FILE HTTP_PORT REPO_DIR
#   Installs the peer venv if missing, writes the model repository into REPO_DIR (created,
#   overwritten), then execs tritonserver in the foreground.
# Environment (defaults):
#   PEERS_VENV=~/.cache/tandem/peers-venv   the peer's own venv (Python 3.11)
#   TRITON_MAX_BATCH=16                     max_batch_size
#   TRITON_QUEUE_DELAY_US=2000              dynamic_batching max_queue_delay_microseconds
#   TRITON_INSTANCES=1                      instance_group count (KIND_CPU)
#   TRITON_THREADS=2                        onnxruntime intra-op threads per instance
set -euo pipefail

PEERS_VENV="${PEERS_VENV:-$HOME/.cache/tandem/peers-venv}"
PYTHON311="${PYTHON311:-}"

install_venv() {
    if [[ -x "$PEERS_VENV/bin/python" ]] &&
        "$PEERS_VENV/bin/python" -c 'import pytriton, onnxruntime, numpy' 2>/dev/null; then
        return
    fi
    # The wheel's Python backend stub is built per Python minor version; use 3.11.
    local py="$PYTHON311"
    if [[ -z "$py" ]]; then
        for c in python3.11 "$HOME/.pyenv/versions/3.11.7/bin/python3" python3; do
            if command -v "$c" >/dev/null 2>&1 &&
                "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
                py="$(command -v "$c")"
                break
            fi
        done
    fi
    if [[ -z "$py" ]]; then
        echo "triton.sh: needs Python 3.11 (set PYTHON311=/path/to/python3.11)" >&2
        exit 69
    fi
    echo "triton.sh: installing nvidia-pytriton 0.7.0 into $PEERS_VENV (once)" >&2
    "$py" -m venv "$PEERS_VENV"
    "$PEERS_VENV/bin/pip" install -q --disable-pip-version-check \
        'nvidia-pytriton==0.7.0' onnxruntime numpy >&2
}

install_only=0
if [[ "${1:-}" == "--install-only" ]]; then
    install_only=1
    shift
fi
install_venv
if [[ $install_only == 1 ]]; then
    exit 0
fi
if [[ $# -ne 4 ]]; then
    echo "usage: $0 [--install-only] MODEL_NAME ONNX_FILE HTTP_PORT REPO_DIR" >&2
    exit 64
fi
MODEL="$1"
ONNX="$(realpath "$2")"
PORT="$3"
REPO="$4"

PY="$PEERS_VENV/bin/python"
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
PYLIB="$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')"
TRITON="$SITE/pytriton/tritonserver"

# Stub fix: the backend looks for its stub beside libtriton_python.so.
STUB="$TRITON/backends/python/triton_python_backend_stub"
if [[ ! -x "$STUB" ]]; then
    cp "$TRITON/python_backend_stubs/3.11/triton_python_backend_stub" "$STUB"
    chmod +x "$STUB"
fi

# The model repository: config from the ONNX model's own inputs and outputs (batch dimension
# first), and a model.py that runs onnxruntime on the concatenated requests.
rm -rf "${REPO:?}/$MODEL"
mkdir -p "$REPO/$MODEL/1"
"$PY" - "$ONNX" "$REPO/$MODEL" "$MODEL" <<'EOF'
import os, sys
import onnxruntime as ort

onnx, out, name = sys.argv[1:4]
types = {"tensor(float)": "TYPE_FP32", "tensor(int64)": "TYPE_INT64"}
s = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])

def dims(shape):
    return ", ".join(str(d) if isinstance(d, int) and d > 0 else "-1" for d in shape[1:])

def block(kind, ios):
    items = ",\n".join(
        f'  {{ name: "{io.name}", data_type: {types[io.type]}, dims: [ {dims(io.shape)} ] }}'
        for io in ios
    )
    return f"{kind} [\n{items}\n]\n"

env = os.environ
cfg = f'''name: "{name}"
backend: "python"
max_batch_size: {int(env.get("TRITON_MAX_BATCH", "16"))}
{block("input", s.get_inputs())}{block("output", s.get_outputs())}dynamic_batching {{ max_queue_delay_microseconds: {int(env.get("TRITON_QUEUE_DELAY_US", "2000"))} }}
instance_group [ {{ kind: KIND_CPU, count: {int(env.get("TRITON_INSTANCES", "1"))} }} ]
parameters [
  {{ key: "onnx", value: {{ string_value: "{onnx}" }} }},
  {{ key: "threads", value: {{ string_value: "{int(env.get("TRITON_THREADS", "2"))}" }} }}
]
'''
open(os.path.join(out, "config.pbtxt"), "w").write(cfg)
EOF
cat >"$REPO/$MODEL/1/model.py" <<'EOF'
import json

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"])["parameters"]
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(params["threads"]["string_value"])
        so.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            params["onnx"]["string_value"], so, providers=["CPUExecutionProvider"]
        )
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def execute(self, requests):
        feeds = {
            name: [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
            for name in self.inputs
        }
        rows = [a.shape[0] for a in feeds[self.inputs[0]]]
        results = self.session.run(
            self.outputs, {n: np.concatenate(parts) for n, parts in feeds.items()}
        )
        responses, start = [], 0
        for n in rows:
            responses.append(
                pb_utils.InferenceResponse(
                    [pb_utils.Tensor(o, r[start : start + n]) for o, r in zip(self.outputs, results)]
                )
            )
            start += n
        return responses
EOF

export PATH="$PEERS_VENV/bin:$PATH"
export LD_LIBRARY_PATH="$PYLIB:$SITE/nvidia_pytriton.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$TRITON/bin/tritonserver" \
    --model-repository="$REPO" \
    --backend-directory="$TRITON/backends" \
    --http-address=127.0.0.1 --http-port="$PORT" \
    --allow-grpc=false --allow-metrics=false \
    --log-verbose=0 --log-info=false
