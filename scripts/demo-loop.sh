#!/usr/bin/env bash
# The learning loop's part of `make demo` (issue 13; ARCHITECTURE.md flows 7-9): a camera that
# moved into a brighter scene sends vision-fashion images through the demo agent; its hard
# examples and shadow samples (and a person's corrections of every fourth answer) flow to the
# hub, which labels the rest with the cloud model as teacher. The hub then reports how the
# edge model does on that feedback, calibrates the routing threshold (pushed to the agent,
# which takes it), retrains the edge head (with a replayed share of its original training
# data), gates the candidate against the serving version and rolls it out; the agent swaps
# and the same stream continues; the hub calibrates the new version on its own answers and the
# agent routes with that threshold. Runs after scripts/demo.sh, on the same ports; its state and
# logs stay in demo-out/.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/demo-lib.sh
. scripts/demo-lib.sh
BIN=${BIN:-target/release/tandem-agent}
HUB=${HUB:-target/release/tandem-hub}
CONF=demo/agent-loop.toml
HUBCONF=demo/hub.toml
URL=http://127.0.0.1:8470
API=http://127.0.0.1:8480
MODEL=vision-fashion
# The shift: every pixel + 0.15 of full scale. Images 2000.. of the test set (the gate judges
# the original set on the first 2000).
SHIFT=0.15
mkdir -p demo-out/logs
LOG=demo-out/logs/loop-agent.log
HUBLOG=demo-out/logs/loop-hub.log

[ -f demo-out/pki/ca.key ] || "$HUB" init --dir demo-out/pki
[ -f demo-out/pki/devices/demo-cam.pem ] || "$HUB" device add demo-cam --dir demo-out/pki
# One fresh turn: the loop's stores from earlier demo runs go (the PKI and registry stay).
rm -rf demo-out/hub-feedback demo-out/eval demo-out/calibrate demo-out/train \
  demo-out/loop-agent-models demo-out/loop-agent-queue demo-out/loop-thresholds.json
mkdir -p "demo-out/loop-agent-models/$MODEL"
cp "models/$MODEL"/{manifest.json,edge.onnx,cloud.onnx,labels.txt} "demo-out/loop-agent-models/$MODEL/"

start_hub_and_agent "$HUBCONF" "$HUBLOG" "$CONF" "$LOG" "$URL"
for _ in $(seq 1 100); do # until the hub sees the device online (its QUIC link and MQTT are up)
  hub_api /v1/fleet | grep '"online":true' >/dev/null && break
  sleep 0.1
done

json() { python3 -c "import json,sys; d=json.load(sys.stdin); $1"; }
metric() { curl -sf "$URL/metrics" | awk -v m="$1" 'index($1, m) == 1 {s += $2} END {print s + 0}'; }
threshold() {
  curl -sf "$URL/metrics" | grep "^tandem_routing_threshold{.*model=\"$MODEL\"" | head -n 1 \
    | sed -E 's/^.*source="([^"]*)".*\} (.*)$/\2 (source \1)/'
}
stream() { python3 scripts/demo-loop-stream.py "$URL" "$@" | sed 's/^/   /'; }

echo
echo "== the learning loop: vision-fashion $(threshold | sed 's/^/at threshold /') meets a brighter scene (brightness +$SHIFT)"
echo "== 1000 shifted images through the agent; a person corrects every 4th answer"
stream 2000 1000 "$SHIFT" --correct-every 4
queued=$(metric tandem_feedback_examples_queued_total)
echo "   the agent queued $queued examples for the hub (hard: offloaded; shadow: confident, sampled)"
echo "== the hub stores them and labels what nobody corrected with the cloud model (teacher)"
examples() { # "TOTAL LABELLED": the model's examples at the hub, page by page
  local after= total=0 labelled=0 page
  while :; do
    page=$(hub_api "/v1/feedback/examples?model=$MODEL&limit=1000$after" \
      | json 'i = d["items"]; print(len(i), sum(e["label"] is not None for e in i), d["cursor"] if d.get("more") else "")')
    read -r n l cursor <<<"$page"
    total=$((total + n)) labelled=$((labelled + l))
    [ -n "$cursor" ] || break
    after="&after=$cursor"
  done
  echo "$total $labelled"
}
wait_labelled() { # until the hub holds and has labelled every example the agent queued
  local queued=$1
  for _ in $(seq 1 150); do
    read -r total labelled <<<"$(examples)"
    [ "$total" -ge "$queued" ] && [ "$labelled" -eq "$total" ] && break
    sleep 0.2
  done
  echo "   $total examples at the hub, $labelled labelled"
}
wait_labelled "$queued"

echo "== evaluation report: the serving edge version on the feedback's test split (POST /v1/eval)"
hub_api "/v1/eval?format=table" -X POST -H 'content-type: application/json' \
  -d "{\"model\":\"$MODEL\",\"set\":\"feedback\",\"shifts\":[]}" \
  | awk '/^\| class/ {exit} /^\| (window|device_label)/ {next} NF {print "   " $0}'

echo "== calibration: the least offload keeping 99.5% of cloud-only accuracy (POST /v1/calibrations)"
calibrate() { # $1: the request's JSON body
  local out
  if ! out=$(hub_api /v1/calibrations -X POST -H 'content-type: application/json' -d "$1"); then
    echo "   the hub refused the calibration: $out" >&2
    return 1
  fi
  printf '%s' "$out" | json 'c = d.get("calibration", d); t = c["test"]; f = t["at_fitted"]; m = t.get("at_manifest")
print("   threshold %s -> %.4f, fitted on %d calibration samples; on %d test samples:" % (c.get("manifest_threshold"), c["threshold"], c["fit"]["at_fitted"]["n"], f["n"]))
if m: print("     at the manifest threshold: accuracy %.3f, offload %.3f" % (m["accuracy"], m["offload"]))
print("     at the calibrated one:     accuracy %.3f, offload %.3f (cloud-only %.3f, edge alone %.3f)" % (f["accuracy"], f["offload"], f["cloud_accuracy"], f["edge_accuracy"]))'
}
took() { # until the agent routes with a hub-calibrated threshold other than $1
  for _ in $(seq 1 100); do
    threshold | grep hub-calibrated | grep -vqF "$1 " && break
    sleep 0.1
  done
  echo "   the agent took it (its /metrics): $(threshold)"
}
calibrate "{\"model\":\"$MODEL\"}"
took none

abort_left_rollouts
echo "== training: the edge head refitted on the train split + replayed original data, gated (tandem-hub train run --hub)"
"$HUB" train run --model "$MODEL" --config "$HUBCONF" --hub "$API" --json >demo-out/loop-decision.json
json 'print("   candidate %s from %s: %d examples (%s), training accuracy %.3f -> %.3f" % (d["candidate"]["version"], d["serving_version"], d["candidate"]["fit"]["examples"], ", ".join("%s %d" % kv for kv in d["candidate"]["label_sources"].items()), d["candidate"]["fit"]["train_accuracy_before"], d["candidate"]["fit"]["train_accuracy_after"]))
print("   the gate (serving -> candidate accuracy):")
for c in d["checks"]: print("     %-28s n=%-5d %.3f -> %.3f  %s" % (c["what"], c["n"], c["serving"], c["candidate"], "ok" if c["passed"] else "FAILED"))
print("   decision: %s%s" % (d["status"], "; " + "; ".join(d["reasons"]) if d["reasons"] else ""))' <demo-out/loop-decision.json
status=$(json 'print(d["status"])' <demo-out/loop-decision.json)
if [ "$status" = rolled_out ]; then
  version=$(json 'print(d["candidate"]["version"])' <demo-out/loop-decision.json)
  echo "== rollout of $version to the fleet (canary, then stages), signed by the hub"
  wait_rollout
  echo "   the agent's log:"
  grep -E "staged|swapped|model updated|refused|rolled" "$LOG" | sed -E 's/^.*(INFO|WARN) //' | cut -c1-160 | sed 's/^/     /' || true
  echo "== the same scene continues: 1000 new shifted images, answered by $version (at the threshold"
  echo "   calibrated for the version before)"
  stream 3000 1000 "$SHIFT"
  wait_labelled "$(metric tandem_feedback_examples_queued_total)"
  # The agent's watch window (demo/agent-loop.toml: 3 s) judges the new version against the one
  # it replaced and rolls it back if it does worse (a latency spike on a busy machine can).
  for _ in $(seq 1 100); do
    grep -E "watch window over|rolling back" "$LOG" >/dev/null && break
    sleep 0.1
  done
  echo "   the agent's watch window:"
  grep -E "watch window over|rolling back|rolled back" "$LOG" | sed -E 's/^.*(INFO|WARN) //' | cut -c1-200 | sed 's/^/     /' || true
  if grep -F "rolling back" "$LOG" >/dev/null; then
    echo "== the agent rolled $version back after its watch window (above): no calibration of"
    echo "   $version; the scene continues on the version it restored"
    echo "== 300 more new shifted images, answered by the restored version"
  else
    echo "== calibration of $version on its own answers (POST /v1/calibrations {\"version\": \"$version\"})"
    before=$(threshold | cut -d' ' -f1)
    calibrate "{\"model\":\"$MODEL\",\"version\":\"$version\"}"
    took "$before"
    echo "== 300 more new shifted images, answered by $version at its own threshold"
  fi
else
  echo "== the gate kept the serving version; the same scene continues: 300 new shifted images"
fi
stream 4000 300 "$SHIFT"
kill -TERM $PID; wait $PID || true
kill -TERM $HUBPID; wait $HUBPID || true
# The calibrated threshold is the hub's desired state for every device: it would reach the
# next demo's agents, so it goes with the demo (the report stays in the logs above).
rm -rf demo-out/calibrate
echo "== agent and hub stopped (logs: $LOG, $HUBLOG)"
