#!/usr/bin/env bash
# The console part of `make demo`: the hub and the demo device again, a few answers so the
# device page has something to plot, then headless Chromium logs in to the console with the
# operator's token and takes screenshots of the fleet and device pages
# (demo-out/console-fleet.png, demo-out/console-device.png; `tandem-bench console-shot`).
# Runs after scripts/demo.sh, on the same ports. By default it stops everything it started;
# DEMO_KEEP=1 keeps the hub and the agent running, prints the console's address and the
# token, and waits for Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/demo-lib.sh
. scripts/demo-lib.sh
BIN=${BIN:-target/release/tandem-agent}
HUB=${HUB:-target/release/tandem-hub}
BENCH=${BENCH:-target/release/tandem-bench}
CONF=demo/agent-rollout.toml
URL=http://127.0.0.1:8470
CONSOLE=http://127.0.0.1:8480
mkdir -p demo-out/logs
LOG=demo-out/logs/console-agent.log
HUBLOG=demo-out/logs/console-hub.log

[ -d demo-out/agent-models/vision-fashion ] || { echo "demo-console: run scripts/demo.sh first" >&2; exit 1; }
start_hub_and_agent demo/hub.toml "$HUBLOG" "$CONF" "$LOG" "$URL"
echo
echo "== the console: the operator's pages, served by the hub at $CONSOLE/console"
for _ in 1 2 3; do
  for f in models/vision-fashion/samples/*.png; do
    curl -sf --data-binary @"$f" "$URL/v1/classify/vision-fashion" >/dev/null || true
  done
  sleep 1
done
if command -v chromium >/dev/null; then
  for page in fleet device; do
    path=/console; [ $page = device ] && path=/console/device/demo-cam
    "$BENCH" console-shot --hub "$CONSOLE" --token-file demo-out/pki/operator.token \
      --page "$path" --out "demo-out/console-$page.png"
    echo "   screenshot of $path: demo-out/console-$page.png"
  done
else
  echo "   (no chromium here: \`make setup\` installs it; no screenshot taken)"
fi
if [ "${DEMO_KEEP:-0}" = 1 ]; then
  echo "== DEMO_KEEP=1: the hub and the agent keep running"
  echo "   open $CONSOLE/console/login and log in with the operator token:"
  echo "   $(grep -v '^#' demo-out/pki/operator.token | head -n 1)"
  echo "   (Ctrl-C stops them)"
  trap 'echo; echo "== stopping"; kill -TERM $PID $HUBPID 2>/dev/null || true; wait $PID $HUBPID 2>/dev/null || true; exit 0' INT TERM
  wait $HUBPID
fi
kill -TERM $PID; wait $PID || true
kill -TERM $HUBPID; wait $HUBPID || true
echo "== agent and hub stopped"
