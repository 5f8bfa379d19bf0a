#!/usr/bin/env bash
# Runs every shipped model on CUDA and TensorRT next to the CPU EP on a machine with an NVIDIA
# GPU, and records the table in docs/benchmarks/gpu-check-<date>.md.
#
#   scripts/gpu-check.sh [SECONDS]      (seconds per measurement, default 3)
#
# What it does:
#   1. provisions the GPU runtime (PyPI onnxruntime-gpu 1.31.1, sha256-pinned) into .ort/gpu/
#      with scripts/provision-ep.sh gpu;
#   2. checks that the libraries CUDA and TensorRT need are found by the loader, and says which
#      are missing;
#   3. builds tandem-bench (release) and runs `tandem-bench eps --eps cpu,cuda,tensorrt` with
#      the GPU runtime (ORT_DYLIB_PATH): per model p50/p99 at batch 1, throughput at
#      concurrency 8, session build time, and the largest difference from the CPU EP's reference
#      outputs with pass/FAIL at runtime.accuracy_max_abs_diff (0.01).
#
# What the machine needs (none of it is installed by this script):
#   - an NVIDIA GPU and its driver (nvidia-smi works; libcuda.so.1);
#   - CUDA 13 runtime libraries: libcudart.so.13, libcublas.so.13, libcublasLt.so.13,
#     libcurand.so.10 (or .13), libcufft.so.12 (e.g. the CUDA 13 toolkit, or PyPI nvidia-*-cu13
#     wheels with their lib folders on LD_LIBRARY_PATH);
#   - cuDNN 9 (libcudnn.so.9);
#   - TensorRT 10 for the TensorRT EP (libnvinfer.so.10, libnvinfer_plugin.so.10,
#     libnvonnxparser.so.10);
#   - the usual build set-up (`make setup`: Rust toolchain, .ort/).
# Status: written on a machine without a GPU (none was lent to the session that wrote it); it
# has not been run yet. Its output goes to docs/benchmarks/ whenever it is.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER=${1:-3}
log() { printf 'gpu-check: %s\n' "$*" >&2; }

./scripts/provision-ep.sh gpu
GPU_LIB=$PWD/.ort/gpu/libonnxruntime.so.1.31.1
[ -f "$GPU_LIB" ] || { log "ERROR: $GPU_LIB missing after provisioning"; exit 1; }

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  log "ERROR: no NVIDIA GPU or driver here (nvidia-smi fails); see the header for what is needed"
  exit 1
fi
nvidia-smi -L >&2
missing=()
for lib in libcuda.so.1 libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcudnn.so.9 \
           libnvinfer.so.10 libnvonnxparser.so.10; do
  ldconfig -p | grep -q "$lib" || {
    found=""
    IFS=':' read -r -a dirs <<<"${LD_LIBRARY_PATH:-}"
    for d in "${dirs[@]}"; do [ -n "$d" ] && [ -e "$d/$lib" ] && found=1; done
    [ -n "$found" ] || missing+=("$lib")
  }
done
if [ ${#missing[@]} -gt 0 ]; then
  log "WARNING: not found by the loader: ${missing[*]} (the EPs needing them will be reported unavailable)"
fi

cargo build --release -p tandem-bench
out=docs/benchmarks/gpu-check-$(date -u +%Y-%m-%d).md
{
  echo "# GPU check $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo '```'
  nvidia-smi -L
  echo "missing libraries: ${missing[*]:-none}"
  ORT_DYLIB_PATH=$GPU_LIB target/release/tandem-bench eps --seconds "$SECONDS_PER" --eps cpu,cuda,tensorrt
  echo '```'
} | tee "$out"
log "recorded in $out"
