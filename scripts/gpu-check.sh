#!/usr/bin/env bash
# Runs every shipped model on CUDA and TensorRT next to the CPU EP on a machine with an NVIDIA
# GPU, and records the table in docs/benchmarks/gpu-check-<date>.md.
#
#   scripts/gpu-check.sh [SECONDS]      (seconds per measurement, default 3)
#
# What it does:
#   1. provisions the GPU runtime (PyPI onnxruntime-gpu 1.31.1, sha256-pinned) into .ort/gpu/
#      with scripts/provision-ep.sh gpu, unless GPU_LIB names a libonnxruntime.so.1.31.1 that is
#      already there (a machine without network: unpack the wheel's onnxruntime/capi/ elsewhere);
#   2. finds the libraries CUDA and TensorRT need: first through the loader (ldconfig,
#      LD_LIBRARY_PATH), then in the lib folders of Python's `nvidia-*` wheels (as PyTorch
#      installs them: nvidia/*/lib, nvidia/cu13/lib), which it adds to LD_LIBRARY_PATH; says
#      which are still missing;
#   3. builds tandem-bench (release), unless TANDEM_BENCH names a built one, and runs
#      `tandem-bench eps --eps cpu,cuda,tensorrt` with the GPU runtime (ORT_DYLIB_PATH): per
#      model p50/p99 at batch 1, throughput at concurrency 8, session build time, and the largest
#      difference from the CPU EP's reference outputs with pass/FAIL at the variant's tolerance.
#
# What the machine needs (none of it is installed by this script):
#   - an NVIDIA GPU and its driver (nvidia-smi works; libcuda.so.1);
#   - CUDA 13 runtime libraries: libcudart.so.13, libcublas.so.13, libcublasLt.so.13,
#     libcurand.so.10, libcufft.so.12 (the CUDA 13 toolkit, or PyPI nvidia-*-cu13 wheels, which
#     PyTorch cu130 brings);
#   - cuDNN 9 (libcudnn.so.9; PyPI nvidia-cudnn-cu13);
#   - TensorRT 10 for the TensorRT EP (libnvinfer.so.10, libnvinfer_plugin.so.10,
#     libnvonnxparser.so.10); without it the TensorRT rows say "unavailable" and why;
#   - the usual build set-up (`make setup`: Rust toolchain, .ort/), unless GPU_LIB and
#     TANDEM_BENCH are given.
# Environment: GPU_LIB, TANDEM_BENCH (above); GPU_CHECK_OUT (the report's path).
# Runs recorded: docs/benchmarks/gpu-check-*.md.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER=${1:-3}
log() { printf 'gpu-check: %s\n' "$*" >&2; }

if [ -z "${GPU_LIB:-}" ]; then
  ./scripts/provision-ep.sh gpu
  GPU_LIB=$PWD/.ort/gpu/libonnxruntime.so.1.31.1
fi
[ -f "$GPU_LIB" ] || { log "ERROR: $GPU_LIB missing (provision with scripts/provision-ep.sh gpu)"; exit 1; }

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  log "ERROR: no NVIDIA GPU or driver here (nvidia-smi fails); see the header for what is needed"
  exit 1
fi
nvidia-smi -L >&2

NEEDED=(libcuda.so.1 libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10
        libcufft.so.12 libcudnn.so.9 libnvinfer.so.10 libnvinfer_plugin.so.10
        libnvonnxparser.so.10)
found_lib() {
  ldconfig -p | grep "$1 " >/dev/null && return 0
  local d
  IFS=':' read -r -a dirs <<<"${LD_LIBRARY_PATH:-}"
  for d in "${dirs[@]}"; do [ -n "$d" ] && [ -e "$d/$1" ] && return 0; done
  return 1
}
# Python's nvidia-* wheels (PyTorch's CUDA libraries) as a second source.
wheel_dirs=$(python3 - 2>/dev/null <<'PY' || true
import glob, os, site, sys
roots = site.getsitepackages() + [site.getusersitepackages()] + sys.path
seen = []
for r in roots:
    for d in glob.glob(os.path.join(r, "nvidia", "*", "lib")) + glob.glob(os.path.join(r, "nvidia", "cu*", "lib")) + glob.glob(os.path.join(r, "tensorrt_libs")):
        if os.path.isdir(d) and d not in seen:
            seen.append(d)
print(":".join(seen))
PY
)
missing=()
for lib in "${NEEDED[@]}"; do
  if ! found_lib "$lib"; then
    for d in ${wheel_dirs//:/ }; do
      if [ -e "$d/$lib" ]; then
        export LD_LIBRARY_PATH=$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
        log "using $d for $lib"
        break
      fi
    done
    found_lib "$lib" || missing+=("$lib")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  log "WARNING: not found: ${missing[*]} (the EPs needing them are reported unavailable)"
fi

if [ -z "${TANDEM_BENCH:-}" ]; then
  cargo build --release -p tandem-bench
  TANDEM_BENCH=target/release/tandem-bench
fi
out=${GPU_CHECK_OUT:-docs/benchmarks/gpu-check-$(date -u +%Y-%m-%d).md}
{
  echo "# GPU check $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo '```'
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  echo "cpu: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  echo "runtime: $GPU_LIB"
  echo "missing libraries: ${missing[*]:-none}"
  ORT_DYLIB_PATH=$GPU_LIB "$TANDEM_BENCH" eps --seconds "$SECONDS_PER" --eps cpu,cuda,tensorrt 2>&1
  echo '```'
} | tee "$out"
log "recorded in $out"
