#!/usr/bin/env bash
# The rollout part of `make demo` (flow 5): the operator packs vision-fashion 1.0.1 from the
# shipped model, the hub signs and stores it, and a rollout sends it to the fleet (one demo
# device); the agent downloads the bundle over its QUIC link, verifies the signature and every
# sha256, runs the self-tests on its execution provider, swaps it in with no failed request,
# and the hub sees the fleet on 1.0.1. Runs after scripts/demo.sh, on the same ports.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/demo-lib.sh
. scripts/demo-lib.sh
BIN=${BIN:-target/release/tandem-agent}
HUB=${HUB:-target/release/tandem-hub}
CONF=demo/agent-rollout.toml
URL=http://127.0.0.1:8470
mkdir -p demo-out/logs
# Kept after the demo, to look into.
LOG=demo-out/logs/rollout-agent.log
HUBLOG=demo-out/logs/rollout-hub.log
NEXT=1.0.1

[ -f demo-out/pki/ca.key ] || "$HUB" init --dir demo-out/pki
[ -f demo-out/pki/devices/demo-cam.pem ] || "$HUB" device add demo-cam --dir demo-out/pki
# The agent's own copy of the models: vision-fashion as real files (versions get installed
# beside them), the others linked.
rm -rf demo-out/agent-models
mkdir -p demo-out/agent-models/vision-fashion
for m in models/*/; do
  m=$(basename "$m")
  [ -f "models/$m/manifest.json" ] || continue
  [ "$m" = vision-fashion ] || ln -s "../../models/$m" "demo-out/agent-models/$m"
done
cp models/vision-fashion/{manifest.json,edge.onnx,cloud.onnx,labels.txt} demo-out/agent-models/vision-fashion/

start_hub_and_agent demo/hub.toml "$HUBLOG" "$CONF" "$LOG" "$URL"
fleet_versions() {
  # The version each device serves: from its telemetry (sent every second) when it has some.
  for d in $(hub_api /v1/fleet | python3 -c 'import json,sys; print(" ".join(d["device"] for d in json.load(sys.stdin)["devices"]))'); do
    hub_api "/v1/fleet/$d" | python3 -c 'import json,sys
d = json.load(sys.stdin)
t = (d.get("telemetry") or {}).get("models", {}).get("vision-fashion", {}).get("version")
s = {m["name"]: m["version"] for m in (d.get("status") or {}).get("models", [])}.get("vision-fashion", "-")
print("   %-10s online=%-5s vision-fashion %s" % (d["device"], d["online"], t or s))'
  done
}
sleep 1
echo
echo "== model rollout: the fleet before (GET /v1/fleet)"
fleet_versions
echo "== the operator packs vision-fashion $NEXT (edge variant, self-tests recorded with the engine)"
rm -rf "demo-out/vision-fashion-$NEXT"
"$HUB" models pack models/vision-fashion "demo-out/vision-fashion-$NEXT" --version "$NEXT" --config demo/hub.toml | sed 's/^/   /'
echo "== the hub validates, signs (demo-out/pki/signing.key) and stores it"
"$HUB" models push "demo-out/vision-fashion-$NEXT" --config demo/hub.toml | sed 's/^/   /'
"$HUB" models list --config demo/hub.toml | sed 's/^/   /'
abort_left_rollouts
echo "== a rollout: a 50% canary of the fleet, then everyone (tandem-hub rollout start)"
"$HUB" rollout start --model vision-fashion --version "$NEXT" --canary 50 --config demo/hub.toml | sed 's/^/   /'
wait_rollout
echo "== the agent's side (its log):"
grep -E "staged|swapped|model updated|refused|rolled" "$LOG" | sed -E 's/^.*(INFO|WARN) //' | cut -c1-200 | sed 's/^/   /' \
  || echo "   (no update in the agent's log: see $LOG and $HUBLOG)"
echo "== the fleet after:"
fleet_versions
f=$(ls models/vision-fashion/samples/*.png | head -n 1)
echo "== an answer now (POST /v1/classify/vision-fashion):"
curl -sf --data-binary @"$f" "$URL/v1/classify/vision-fashion" | python3 -c 'import json,sys
r=json.load(sys.stdin); print("   %s -> %s %.3f, version %s" % (sys.argv[1], r["label"], r["score"], r["version"]))' "$(basename "$f")"
kill -TERM $PID; wait $PID || true
kill -TERM $HUBPID; wait $HUBPID || true
echo "== agent and hub stopped"
