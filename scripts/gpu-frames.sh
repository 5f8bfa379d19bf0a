#!/usr/bin/env bash
# The wgpu pre-processing path on a machine with a real GPU (issue 14 item 5): the engine's
# GPU-equals-CPU test on that adapter, then the wgpu child of `tandem-bench frames` (the decode,
# the CPU path and the wgpu path, each alone and end to end with the raw session, all in one
# process, and on stderr what `preprocess_device = auto` chooses there).
#
#   scripts/gpu-frames.sh [SECONDS]     (seconds per measured window, default 3)
#
# Needs a Vulkan loader (Debian libvulkan1) and the GPU vendor's Vulkan driver (NVIDIA: its
# ICD JSON under /usr/share/vulkan/icd.d or VK_DRIVER_FILES). Builds the two programs unless
# TANDEM_BENCH (a release tandem-bench) and PREPROCESS_GPU_TEST (the engine's preprocess_gpu
# test binary, built with --features gpu) name them: a machine without Rust gets them copied
# in. ONNX Runtime from .ort/ or ORT_DYLIB_PATH. Runs recorded: docs/benchmarks/frames.md.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-3}
if [ -z "${TANDEM_BENCH:-}" ]; then
  cargo build --release -p tandem-bench
  TANDEM_BENCH=$PWD/target/release/tandem-bench
fi
if [ -z "${PREPROCESS_GPU_TEST:-}" ]; then
  PREPROCESS_GPU_TEST=$(cargo test -p tandem-engine --features gpu --test preprocess_gpu --no-run \
    --message-format=json 2>/dev/null | sed -n 's/.*"executable":"\([^"]*preprocess_gpu[^"]*\)".*/\1/p' | tail -1)
fi
nvidia-smi -L 2>/dev/null || echo "gpu-frames: no nvidia-smi (another vendor's GPU?)" >&2
echo "== wgpu path equals the CPU path (engine/tests/preprocess_gpu.rs)"
(cd engine && "$PREPROCESS_GPU_TEST" --nocapture)
echo "== tandem-bench frames --wgpu-rows --seconds $SECS"
"$TANDEM_BENCH" frames --wgpu-rows --seconds "$SECS" | grep -v '^{' || true
