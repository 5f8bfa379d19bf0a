#!/usr/bin/env bash
# The detection part of `make demo` (issue 14): the hub (cloud detectors) and the agent (edge
# NanoDet-g INT8 and CenterFace, cascade policy) on the demo's ports. Real photos go through
# POST /v1/detect/detect-coco and their boxes are drawn into demo-out/detect/*.boxes.jpg; the
# unsure street-party photo is offloaded and answered with the hub's boxes; two frames of a
# street video posted to a camera stream give an object event on MQTT
# (tandem/demo-cam/events/objects); and the offloaded photo as the hub stored it (its hard
# example, faces blurred by the agent) is saved to demo-out/detect/upload-blurred.jpg.
# Runs after scripts/demo.sh; both daemons stop on SIGTERM before it returns.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/demo-lib.sh
. scripts/demo-lib.sh
OUT=demo-out/detect
BIN=${BIN:-target/release/tandem-agent}
HUB=${HUB:-target/release/tandem-hub}
URL=http://127.0.0.1:8470
CONF=demo/agent.toml
CAM=porch-1
# PIL (in the project's venv, `make setup`) draws the boxes.
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
mkdir -p "$OUT" demo-out/logs
# Kept after the demo, to look into.
LOG=demo-out/logs/detect-agent.log
HUBLOG=demo-out/logs/detect-hub.log
EVENTS=$OUT/object-events.jsonl
rm -f "$OUT"/*.jpg "$OUT"/*.json "$EVENTS"

[ -f demo-out/pki/ca.key ] || "$HUB" init --dir demo-out/pki
[ -f demo-out/pki/devices/demo-cam.pem ] || "$HUB" device add demo-cam --dir demo-out/pki
# A read-only subscriber identity of its own (docs/mqtt.md "Subscribers"): the broker makes
# the certificate's CN the client id, so borrowing the hub's identity would push the hub's own
# MQTT link off the broker.
[ -f demo-out/pki/subscribers/demo-events.pem ] || "$HUB" subscriber add demo-events --dir demo-out/pki
"$HUB" run --config demo/hub.toml 2>"$HUBLOG" &
HUBPID=$!
PID=
SUBPID=
trap 'kill $PID $HUBPID $SUBPID 2>/dev/null || true' EXIT
wait_hub $HUBPID "$HUBLOG"
# The first object event the device publishes (docs/mqtt.md "Object events").
mosquitto_sub -h 127.0.0.1 -p 8883 --cafile demo-out/pki/ca.pem \
  --cert demo-out/pki/subscribers/demo-events.pem --key demo-out/pki/subscribers/demo-events.key -q 1 -t 'tandem/demo-cam/events/objects' -C 1 -W 30 >"$EVENTS" 2>/dev/null &
SUBPID=$!
"$BIN" run --config "$CONF" 2>"$LOG" &
PID=$!
wait_agent "$URL" $PID "$LOG"

# draw ANSWER.json PHOTO OUT.jpg: the answer's boxes (green; the device's own, when the hub
# answered, thin red) and a one-line summary.
draw() {
  "$PY" - "$@" <<'EOF'
import json, sys
from PIL import Image, ImageDraw
answer, photo, out = sys.argv[1:4]
r = json.load(open(answer))
img = Image.open(photo).convert("RGB")
d = ImageDraw.Draw(img)
local = (r.get("local") or {}).get("detections") or []
for b in local:
    d.rectangle(b["box"], outline=(230, 40, 40), width=1)
for b in r["detections"]:
    x1, y1, x2, y2 = b["box"]
    d.rectangle((x1, y1, x2, y2), outline=(40, 220, 40), width=3)
    d.text((x1 + 4, y1 + 2), "%s %.2f" % (b["label"], b["score"]), fill=(40, 220, 40))
img.save(out, quality=90)
labels = ", ".join("%s %.2f" % (b["label"], b["score"]) for b in r["detections"][:4])
more = " +%d" % (len(r["detections"]) - 4) if len(r["detections"]) > 4 else ""
print("  %-24s %2d boxes (%s%s) route=%s -> %s" % (
    photo.split("/")[-1][:24], len(r["detections"]), labels, more, r["route"], out))
EOF
}

echo
echo "== detection on real photos (POST /v1/detect/detect-coco; boxes drawn into $OUT/)"
for f in models/detect-coco/samples/*.jpg; do
  name=$(basename "$f" .jpg)
  curl -sf --data-binary @"$f" "$URL/v1/detect/detect-coco" >"$OUT/$name.json"
  draw "$OUT/$name.json" "$f" "$OUT/$name.boxes.jpg"
done
f=models/detect-face/samples/dlib-bald_guys.jpg
curl -sf --data-binary @"$f" "$URL/v1/detect/detect-face" >"$OUT/faces.json"
draw "$OUT/faces.json" "$f" "$OUT/faces.boxes.jpg"

OFFLOADED=$OUT/voc-2011_000006.json
echo "== an offloaded frame: many boxes in the uncertain band, answered with the hub's boxes"
"$PY" - "$OFFLOADED" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
local = (r.get("local") or {}).get("detections") or []
print("   route=%s variant=%s reason=%s: the hub's %d boxes (the device's %d beside them, %d uncertain)"
      % (r["route"], r["variant"], r["reason"], len(r["detections"]), len(local), r["signals"]["uncertain"]))
EOF

echo "== a camera stream: two frames of a street video (POST /v1/cameras/$CAM/frames/detect-coco)"
for _ in 1 2; do
  curl -sf -o /dev/null --data-binary @models/detection-set/images/labelme-video-00000104.jpg \
    "$URL/v1/cameras/$CAM/frames/detect-coco"
done
for _ in $(seq 1 100); do
  [ -s "$EVENTS" ] && break
  sleep 0.1
done
echo "   MQTT tandem/demo-cam/events/objects:"
"$PY" -c 'import json,sys
for line in open(sys.argv[1]):
    e = json.loads(line)
    print("   %s %s %s (best score %.2f, box %s) track %s" % (e["camera"], e["label"], e["type"],
          e["best_score"], [round(v) for v in e["box"]], e["id"]))' "$EVENTS"

echo "== the offloaded frame as the hub stored it (hard example, faces blurred on the device)"
rid=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["request_id"])' "$OFFLOADED")
# The store lists records in arrival order, a page of at most 1000 at a time: the demo's
# earlier parts stored more than that, so follow the cursor to the end.
digest=
for _ in $(seq 1 100); do
  digest=$("$PY" - "$rid" <<'EOF'
import json, sys, urllib.request
token = next(l.strip() for l in open("demo-out/pki/operator.token") if not l.startswith("#"))
after = 0
while True:
    req = urllib.request.Request(
        "http://127.0.0.1:8480/v1/feedback/records?after=%s&limit=1000" % after,
        headers={"Authorization": "Bearer " + token})
    page = json.load(urllib.request.urlopen(req))
    for r in page["items"]:
        if (r.get("example") or {}).get("request_id") == sys.argv[1] and r.get("digest"):
            print(r["digest"])
            sys.exit(0)
    if not page["more"]:
        break
    after = page["cursor"]
EOF
)
  [ -n "$digest" ] && break
  sleep 0.2
done
[ -n "$digest" ] || { echo "demo-detect: the hub never stored the offloaded frame" >&2; exit 1; }
hub_api "/v1/feedback/inputs/$digest" -o "$OUT/upload-blurred.jpg"
curl -sf "$URL/metrics" | grep -E '^tandem_privacy_(images_blurred|faces_blurred)_total' | sed 's/^/   /'
echo "   saved: $OUT/upload-blurred.jpg (the original: models/detect-coco/samples/voc-2011_000006.jpg)"

kill -TERM $PID; wait $PID || true
kill -TERM $HUBPID; wait $HUBPID || true
kill $SUBPID 2>/dev/null || true
wait $SUBPID 2>/dev/null || true
echo "== agent and hub stopped"
