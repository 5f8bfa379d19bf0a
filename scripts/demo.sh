#!/usr/bin/env bash
# `make demo`: start the agent daemon on loopback with the shipped models, send the shipped
# samples through its API (/v1/classify and OIP v2), print the answers, stop it with SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/tandem-agent}
CONF=demo/agent.toml
URL=http://127.0.0.1:8470
LOG=$(mktemp)

"$BIN" validate --config "$CONF"
"$BIN" models --config "$CONF"
echo
"$BIN" run --config "$CONF" 2>"$LOG" &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -f "$LOG"' EXIT
for _ in $(seq 1 100); do
  curl -sf "$URL/v2/health/ready" >/dev/null 2>&1 && break
  kill -0 $PID 2>/dev/null || { cat "$LOG"; echo "demo: the agent exited" >&2; exit 1; }
  sleep 0.1
done
echo "== agent ready at $URL"; grep -E "serving|unavailable" "$LOG" | sed 's/^/   log: /'

summarise() { python3 -c 'import json,sys
r=json.load(sys.stdin)
top=", ".join("%s %.2f"%(t["label"],t["score"]) for t in r["top_k"][:3])
print("  %-34s -> %-22s %.3f  [%s] route=%s ep=%s %.1f ms" % (sys.argv[1], r["label"], r["score"], top, r["route"], r["ep"], r["latency_ms"]))' "$1"; }

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
echo "== OIP v2 (Triton/KServe protocol): GET /v2/models/vision-fashion"
curl -sf "$URL/v2/models/vision-fashion"; echo
echo "== a bad request gets a precise error:"
printf 'not an image' | curl -s --data-binary @- "$URL/v1/classify/vision-fashion"; echo
echo "== /metrics (excerpt)"
curl -sf "$URL/metrics" | grep -E '^tandem_(inferences_total|model_info)' | head -8
kill -TERM $PID; wait $PID || true
echo "== agent stopped on SIGTERM"; tail -n 2 "$LOG" | sed 's/^/   log: /'
