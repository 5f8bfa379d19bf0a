#!/usr/bin/env bash
# A short fuzz run of every cargo-fuzz target in fuzz/ (`make test` runs it; `make fuzz` runs
# longer). Installs what it needs when missing (idempotent): the nightly toolchain (minimal
# profile) and cargo-fuzz 0.13.2 from crates.io.
#
# Each target starts from a fresh corpus seeded with the golden fixtures (shared/tests/
# fixtures, the shipped model manifests) and runs FUZZ_SECONDS (default 5) on one core. A crash
# fails the run: the target, the crashing input (hex) and the command that replays it are
# printed; libFuzzer's own report comes just before.
#
#   FUZZ_SECONDS=600 scripts/fuzz-smoke.sh [TARGET...]   # longer runs, some targets only
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${FUZZ_SECONDS:-5}
CARGO_FUZZ_VERSION=0.13.2
log() { printf 'fuzz: %s\n' "$*" >&2; }

# --- tools ------------------------------------------------------------------
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  log "installing the nightly toolchain (cargo-fuzz needs it for the sanitizer flags)"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version 2>/dev/null | grep "$CARGO_FUZZ_VERSION" >/dev/null; then
  log "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

# --- build (all targets in one cargo run: release, debug assertions, AddressSanitizer) ---------
mapfile -t ALL < <(cd fuzz && cargo +nightly fuzz list)
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL[@]}")
start=$(date +%s)
(cd fuzz && cargo +nightly fuzz build)
log "built ${#ALL[@]} targets in $(( $(date +%s) - start )) s"

# --- seeds ------------------------------------------------------------------------------------
work=fuzz/target/smoke
rm -rf "$work"
mkdir -p "$work"
# Each target's input layout (see its fuzz_targets/*.rs): a selector byte, then the payload.
python3 - "$work/corpus" <<'PY'
import glob, json, os, re, sys
out = sys.argv[1]
def seed(target, name, data):
    os.makedirs(f"{out}/{target}", exist_ok=True)
    open(f"{out}/{target}/{name}", "wb").write(data)
read = lambda p: open(p, "rb").read()
mqtt = "shared/tests/fixtures/mqtt"
for p in sorted(glob.glob(f"{mqtt}/*.json")):
    n = os.path.basename(p)
    kind = {"status": 0, "telemetry": 1, "event": 2, "result": 3}.get(n.split("_")[0].split(".")[0])
    if kind is not None:
        seed("mqtt_payload", n, bytes([kind]) + read(p))
seed("mqtt_payload", "topic", b"\x04tandem/cam-01/cmd/set_threshold/result")
# CommandName::ALL order.
for i, c in enumerate(["set_threshold", "set_policy", "telemetry_now", "update_model"]):
    seed("mqtt_command", c, bytes([i]) + read(f"{mqtt}/cmd_{c}.json"))
for p in sorted(glob.glob("models/*/manifest.json")):
    name = os.path.basename(os.path.dirname(p))
    seed("manifest", name, read(p))
    doc = json.dumps({"bundle_version": 1, "manifest": json.loads(read(p)), "selftests": []}).encode()
    seed("bundle", f"{name}-unsigned", b"\x00\x00\x00" + doc)  # the fuzzer's (empty) signature
    seed("bundle", f"{name}-signed", b"\x01\x00\x00" + doc)    # signed inside the target
for p in sorted(glob.glob("shared/tests/fixtures/wire/*.hex")):
    text = re.sub(r"#.*", "", open(p).read())
    seed("wire_frame", os.path.basename(p)[:-4], b"\x40" + bytes.fromhex("".join(text.split())))
PY
corpus() { mkdir -p "$work/corpus/$1"; echo "$work/corpus/$1"; }

# --- run --------------------------------------------------------------------------------------
failed=()
for t in "${TARGETS[@]}"; do
  dir=$(corpus "$t")
  art="$work/artifacts/$t/"
  mkdir -p "$art"
  log "$t: ${SECONDS_EACH} s from $(find "$dir" -type f | wc -l) seeds"
  if ! "fuzz/target/x86_64-unknown-linux-gnu/release/$t" "$dir" \
      -max_total_time="$SECONDS_EACH" -artifact_prefix="$art" -print_final_stats=1 \
      -max_len=65536 -rss_limit_mb=2048 > "$work/$t.log" 2>&1; then
    tail -n 40 "$work/$t.log" >&2
    for crash in "$art"*; do
      [ -f "$crash" ] || continue
      log "CRASH in $t: $crash ($(wc -c < "$crash") bytes):"
      od -A x -t x1z -v "$crash" | head -n 32 >&2
      log "replay: (cd fuzz && cargo +nightly fuzz run $t ${crash#fuzz/})"
    done
    failed+=("$t")
  else
    grep -E '^(stat::number_of_executed_units|stat::new_units_added)' "$work/$t.log" \
      | tr '\n' ' ' | sed "s/^/fuzz: $t: /; s/\$/\n/" >&2
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  log "FAILED: ${failed[*]}"
  exit 1
fi
log "every target ran ${SECONDS_EACH} s without a crash (total $(( $(date +%s) - start )) s)"
