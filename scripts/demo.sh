#!/usr/bin/env bash
# `make demo`: on loopback, a development PKI, the hub (cloud variants, QUIC + mTLS) and the
# agent daemon (edge variants, cascade policy); the shipped samples go through the agent's API
# (/v1/classify and OIP v2): confident answers stay local, unsure ones are answered by the hub.
# Then the hub stops and the agent keeps answering (degraded) while the hard examples wait in
# its durable queue; the hub comes back, the queue drains into the hub's feedback store, a
# correction follows the same path, and the hub exports the dataset. Both stop on SIGTERM.
# Then scripts/demo-rollout.sh: a new model version is signed and rolled out to the fleet.
# scripts/demo-loop.sh: one turn of the learning loop (feedback, report, calibrated threshold,
# retrained version, rollout).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/demo-lib.sh
. scripts/demo-lib.sh
BIN=${BIN:-target/release/tandem-agent}
HUB=${HUB:-target/release/tandem-hub}
CONF=demo/agent.toml
URL=http://127.0.0.1:8470
LOG=$(mktemp)
HUBLOG=$(mktemp)

mkdir -p demo-out
[ -f demo-out/pki/ca.key ] || "$HUB" init --dir demo-out/pki
[ -f demo-out/pki/devices/demo-cam.pem ] || "$HUB" device add demo-cam --dir demo-out/pki
[ -f demo-out/pki/subscribers/demo-watch.pem ] || "$HUB" subscriber add demo-watch --dir demo-out/pki
"$HUB" validate --config demo/hub.toml
start_hub() {
  : >"$HUBLOG"
  "$HUB" run --config demo/hub.toml 2>>"$HUBLOG" &
  HUBPID=$!
  wait_hub $HUBPID "$HUBLOG"
}
start_hub
echo "== hub ready"; grep -E "serving" "$HUBLOG" | sed 's/^/   log: /'

"$BIN" validate --config "$CONF"
"$BIN" models --config "$CONF"
echo
"$BIN" run --config "$CONF" 2>"$LOG" &
PID=$!
SUBLOG=$(mktemp)
SUBPID=
trap 'kill $PID $HUBPID $SUBPID 2>/dev/null || true; rm -f "$LOG" "$HUBLOG" "$SUBLOG"' EXIT
# Any MQTT subscriber can follow the fleet (docs/mqtt.md "Subscribers"): a read-only identity
# of its own, issued before the hub started so the broker's ACL already names it.
if command -v mosquitto_sub >/dev/null; then
  mosquitto_sub -h 127.0.0.1 -p 8883 --cafile demo-out/pki/ca.pem \
    --cert demo-out/pki/subscribers/demo-watch.pem --key demo-out/pki/subscribers/demo-watch.key \
    -t 'tandem/+/status' -t 'tandem/+/telemetry' -t 'tandem/+/events' -v -W 60 >"$SUBLOG" 2>&1 &
  SUBPID=$!
fi
wait_agent "$URL" $PID "$LOG"
echo "== agent ready at $URL"; grep -E "serving|unavailable" "$LOG" | sed 's/^/   log: /'

summarise() { python3 -c 'import json,sys
r=json.load(sys.stdin)
top=", ".join("%s %.2f"%(t["label"],t["score"]) for t in r["top_k"][:3])
extra = ""
if r["route"] == "cloud": extra = " (local said %s %.2f)" % (r["local"]["label"], r["local"]["score"])
if r["degraded"]: extra = " DEGRADED"
print("  %-30s -> %-20s %.3f  route=%-5s reason=%-15s%s" % (sys.argv[1][:30], r["label"], r["score"], r["route"], r["reason"], extra))' "$1"; }

for model in vision-imagenet vision-fashion; do
  [ -d "models/$model/samples" ] || continue
  echo "== $model (POST /v1/classify/$model with the image file)"
  for f in models/$model/samples/*.jpg models/$model/samples/*.png; do
    [ -f "$f" ] || continue
    curl -sf --data-binary @"$f" "$URL/v1/classify/$model" | summarise "$(basename "$f")"
  done
done
if [ -f models/text-sentiment/samples/sentences.jsonl ]; then
  echo "== text-sentiment (POST /v1/classify/text-sentiment with the text)"
  head -n 8 models/text-sentiment/samples/sentences.jsonl | while read -r line; do
    text=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["text"])' "$line")
    printf '%s' "$text" | curl -sf --data-binary @- "$URL/v1/classify/text-sentiment" | summarise "${text:0:34}"
  done
fi
sleep 2
echo "== MQTT: a subscriber on tandem/# saw (topic, then the start of the payload):"
cut -c1-150 "$SUBLOG" | grep -E '^tandem/' | tac | awk '!seen[$1]++' | tac | head -n 6 | sed 's/^/   /'
echo "   ... $(grep -c '^tandem/' "$SUBLOG") messages so far"
echo "== the hub's view of the fleet, from that telemetry (GET /v1/fleet):"
hub_api /v1/fleet | cut -c1-300; echo
echo "== OIP v2 (Triton/KServe protocol): GET /v2/models/vision-fashion"
curl -sf "$URL/v2/models/vision-fashion"; echo
echo "== a bad request gets a precise error:"
printf 'not an image' | curl -s --data-binary @- "$URL/v1/classify/vision-fashion"; echo
echo "== /metrics (excerpt)"
curl -sf "$URL/metrics" | grep -E '^tandem_(inferences_total|model_info)' | head -8
hub_metric() { curl -sf http://127.0.0.1:8480/metrics | awk -v m="$1" '$1==m {print $2}'; }
sleep 1
echo "== hard examples delivered to the hub so far: $(hub_metric tandem_hub_records_delivered_total)"
echo "== the hub stops: the agent keeps answering, locally, marked degraded"
kill -TERM $HUBPID; wait $HUBPID || true
for f in models/vision-fashion/samples/*.png; do
  curl -sf --data-binary @"$f" "$URL/v1/classify/vision-fashion" | summarise "$(basename "$f")"
done
curl -sf "$URL/metrics" | grep -E '^tandem_outbox_(records|bytes)' | sed 's/^/   queue: /' || true
echo "== the hub returns: the agent reconnects by itself and its queue drains into the hub"
start_hub
for _ in $(seq 1 100); do
  n=$(hub_metric tandem_hub_records_delivered_total || echo 0)
  [ "${n:-0}" != "0" ] && break
  sleep 0.2
done
sleep 1
echo "   records the hub stored from the queue: $(hub_metric tandem_hub_records_delivered_total), redeliveries recognised: $(hub_metric tandem_hub_records_redelivered_total)"
f=$(ls models/vision-fashion/samples/*.png | head -n 1)
answer=$(curl -sf --data-binary @"$f" "$URL/v1/classify/vision-fashion")
echo "$answer" | summarise "$(basename "$f")"
id=$(printf '%s' "$answer" | python3 -c 'import json,sys; print(json.load(sys.stdin)["request_id"])')
echo "== a person corrects that answer: POST /v1/feedback {request_id: $id, label: Bag}"
curl -s -X POST -H 'content-type: application/json' \
  -d "{\"request_id\": \"$id\", \"label\": \"Bag\"}" "$URL/v1/feedback"; echo
sleep 1
kill -TERM $PID; wait $PID || true
echo "== agent stopped on SIGTERM"; tail -n 2 "$LOG" | sed 's/^/   log: /'
kill -TERM $HUBPID; wait $HUBPID || true
echo "== the hub exports what the device sent as a dataset"
rm -rf demo-out/dataset
"$HUB" feedback export --config demo/hub.toml demo-out/dataset
head -n 2 demo-out/dataset/dataset.jsonl | cut -c1-220
echo
./scripts/demo-rollout.sh
./scripts/demo-loop.sh
./scripts/demo-console.sh
./scripts/demo-detect.sh
