#!/usr/bin/env bash
# Builds the Debian packages from staged trees with dpkg-deb (no network):
#   tandem-onnxruntime  libonnxruntime 1.31.1 (from .ort/, sha256-checked by setup.sh) in /usr/lib/tandem
#   tandem-agent        /usr/bin/tandem-agent, its unit, /etc/tandem/agent.toml, the edge models
#   tandem-hub          /usr/bin/tandem-hub, its unit, /etc/tandem/hub.toml, the cloud models
#   tandem-ep-NAME      with --ep: the plugin EP provisioned in .ort/ep/NAME/ (scripts/provision-ep.sh)
#                       in /usr/lib/tandem/ep/NAME/, where the agent and hub find it
# Usage: scripts/deb.sh [--profile release|debug] [--out DIR] [--fast] [--ep NAME[,NAME]]
#   --profile  which cargo build to package (release by default; `make deb` builds it first)
#   --fast     gzip level 1 instead of xz (the packages test packages a debug build this way)
#   --ep       also package these provisioned plugins (openvino, webgpu, qnn, trt-rtx)
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release out=target/deb fast=0 eps=
while [ $# -gt 0 ]; do
  case $1 in
    --profile) profile=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --fast) fast=1; shift ;;
    --ep) eps=${2//,/ }; shift 2 ;;
    *) echo "deb.sh: unknown argument $1" >&2; exit 64 ;;
  esac
done
bin=${CARGO_TARGET_DIR:-target}/$profile
ORT_VERSION=1.31.1
ORT_LIB=.ort/libonnxruntime.so.$ORT_VERSION
for f in "$bin/tandem-agent" "$bin/tandem-hub" "$ORT_LIB"; do
  [ -f "$f" ] || { echo "deb.sh: $f missing (make setup; cargo build --bins${profile:+ --$profile})" >&2; exit 66; }
done
command -v dpkg-deb >/dev/null || { echo "deb.sh: dpkg-deb missing (apt-get install dpkg)" >&2; exit 69; }
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
maint="Tandem maintainers <tandem@localhost>"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$out"

# control NAME VERSION DEPENDS DESCRIPTION
control() {
  mkdir -p "$stage/$1/DEBIAN"
  cat > "$stage/$1/DEBIAN/control" <<CTL
Package: $1
Version: $2
Architecture: $arch
Maintainer: $maint
Section: net
Priority: optional
Depends: $3
Installed-Size: $(du -sk --exclude=DEBIAN "$stage/$1" | cut -f1)
Description: $4
CTL
}
# models DEST SKIP: the model folders without SKIP (the other side's network) and data/
models() {
  local dest=$1 skip=$2 m
  for m in models/*/manifest.json; do
    m=$(dirname "$m")
    mkdir -p "$dest/$(basename "$m")"
    (cd "$m" && find . -path ./data -prune -o -type f ! -name "$skip" -print0 \
      | xargs -0 cp --parents -t "$dest/$(basename "$m")")
  done
}
build() {
  local pkg=$1 z=(-Zxz)
  [ "$fast" = 1 ] && z=(-Zgzip -z1)
  find "$stage/$pkg" -type d -exec chmod 0755 {} +
  dpkg-deb --root-owner-group "${z[@]}" --build "$stage/$pkg" "$out/${pkg}_$(sed -n 's/^Version: //p' "$stage/$pkg/DEBIAN/control")_$arch.deb" >/dev/null
  echo "$out/${pkg}_$(sed -n 's/^Version: //p' "$stage/$pkg/DEBIAN/control")_$arch.deb"
}

# tandem-onnxruntime
p=$stage/tandem-onnxruntime
install -D -m0644 "$ORT_LIB" "$p/usr/lib/tandem/libonnxruntime.so.$ORT_VERSION"
install -m0644 .ort/libonnxruntime_providers_shared.so "$p/usr/lib/tandem/"
control tandem-onnxruntime "$ORT_VERSION-1" "libc6 (>= 2.28), libstdc++6" \
  "ONNX Runtime $ORT_VERSION for Tandem (private copy in /usr/lib/tandem)"
build tandem-onnxruntime

# tandem-agent, tandem-hub
for d in agent hub; do
  p=$stage/tandem-$d
  install -D -m0755 "$bin/tandem-$d" "$p/usr/bin/tandem-$d"
  [ "$profile" = release ] && strip --strip-debug "$p/usr/bin/tandem-$d"
  install -D -m0644 "systemd/tandem-$d.service" "$p/lib/systemd/system/tandem-$d.service"
  install -D -m0640 "packaging/$d.toml" "$p/etc/tandem/$d.toml"
  install -D -m0644 README.md "$p/usr/share/doc/tandem-$d/README.md"
  for s in postinst prerm postrm; do
    install -D -m0755 "packaging/debian/tandem-$d.$s" "$p/DEBIAN/$s"
  done
  echo "/etc/tandem/$d.toml" > "$p/DEBIAN/conffiles"
done
models "$stage/tandem-agent/var/lib/tandem/models" cloud.onnx
models "$stage/tandem-hub/var/lib/tandem-hub/models" edge.onnx
control tandem-agent "$version" "tandem-onnxruntime (= $ORT_VERSION-1), adduser" \
  "Tandem edge agent: local inference, offload to the hub, store and forward"
control tandem-hub "$version" "tandem-onnxruntime (= $ORT_VERSION-1), mosquitto, adduser" \
  "Tandem cloud hub: batched serving, model registry, fleet, MQTT broker supervision"
build tandem-agent
build tandem-hub

# tandem-ep-NAME: a provisioned plugin folder, whole (its libraries find each other via $ORIGIN)
for ep in $eps; do
  [ -d ".ort/ep/$ep" ] || { echo "deb.sh: .ort/ep/$ep missing (scripts/provision-ep.sh $ep)" >&2; exit 66; }
  p=$stage/tandem-ep-$ep
  mkdir -p "$p/usr/lib/tandem/ep"
  cp -r ".ort/ep/$ep" "$p/usr/lib/tandem/ep/$ep"
  rm -f "$p/usr/lib/tandem/ep/$ep/.wheel-sha256"
  control "tandem-ep-$ep" "$version" "tandem-onnxruntime (= $ORT_VERSION-1)" \
    "ONNX Runtime plugin execution provider $ep for Tandem (/usr/lib/tandem/ep/$ep)"
  build "tandem-ep-$ep"
done
