# Shared by scripts/demo.sh and its demo-*.sh parts (sourced): starting and waiting for the
# daemons, the operator's calls to the hub's API, and following a rollout.

# hub_api PATH [CURL ARGS...]: the hub's operator routes (/v1/fleet, /v1/rollouts) with the
# operator token the hub wrote at `init` or its first run (demo-out/pki/operator.token, 0600).
hub_api() {
  local path=$1; shift
  local token
  token=$(grep -v '^#' demo-out/pki/operator.token | head -n 1)
  # An HTTP error fails the call with the hub's answer (its error) on stdout.
  curl -s --fail-with-body -H "Authorization: Bearer $token" "$@" "http://127.0.0.1:8480$path"
}

# wait_hub PID LOG: until the hub logs that it is serving (up to 20 s); exits the demo with
# the hub's log if the hub process dies first.
wait_hub() {
  for _ in $(seq 1 200); do
    grep -qs "tandem-hub serving" "$2" && return 0
    kill -0 "$1" 2>/dev/null || { cat "$2"; echo "demo: the hub exited" >&2; exit 1; }
    sleep 0.1
  done
}

# wait_agent URL PID LOG: until the agent at URL is ready (up to 10 s); exits the demo with the
# agent's log if the agent process dies first.
wait_agent() {
  for _ in $(seq 1 100); do
    curl -sf "$1/v2/health/ready" >/dev/null 2>&1 && return 0
    kill -0 "$2" 2>/dev/null || { cat "$3"; echo "demo: the agent exited" >&2; exit 1; }
    sleep 0.1
  done
}

# start_hub_and_agent HUBCONF HUBLOG CONF LOG URL: runs $HUB with HUBCONF (stderr to HUBLOG)
# and, once it serves, $BIN with CONF (stderr to LOG), until the agent at URL is ready. Sets
# HUBPID and PID, and an EXIT trap that kills both however the demo part ends.
start_hub_and_agent() {
  "$HUB" run --config "$1" 2>"$2" &
  HUBPID=$!
  PID=
  trap 'kill $PID $HUBPID 2>/dev/null || true' EXIT
  wait_hub "$HUBPID" "$2"
  "$BIN" run --config "$3" 2>"$4" &
  PID=$!
  wait_agent "$5" "$PID" "$4"
}

# abort_left_rollouts: a rollout left unfinished by an interrupted demo would refuse a new one
# (one at a time); uses $HUB and demo/hub.toml.
abort_left_rollouts() {
  "$HUB" rollout status --config demo/hub.toml | awk '/-> (running|paused)/ {print $1}' | while read -r id; do
    "$HUB" rollout abort "$id" --config demo/hub.toml | sed 's/^/   left from an earlier demo: /'
  done
}

# wait_rollout: until the latest rollout ends (up to 60 s); prints its status line.
wait_rollout() {
  for _ in $(seq 1 120); do
    "$HUB" rollout status --config demo/hub.toml | tail -n 1 | grep -E "succeeded|halted|aborted" >/dev/null && break
    sleep 0.5
  done
  "$HUB" rollout status --config demo/hub.toml | tail -n 1 | sed 's/^/   /'
}
