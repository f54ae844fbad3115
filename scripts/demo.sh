#!/usr/bin/env bash
# End-to-end demo: starts mosquitto on a free port of 127.0.0.1, runs
# mqspool on a temporary spool directory, drops sample files of every
# format, shows them arriving through mosquitto_sub, then stops everything
# it started. Usage: scripts/demo.sh [path/to/mqspool]
set -euo pipefail

bin=$(realpath "${1:-bin/mqspool}")
work=$(mktemp -d /tmp/mqspool-demo.XXXXXX)
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  local port
  for _ in $(seq 1 100); do
    port=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
  echo "no free port found" >&2
  exit 1
}

wait_for_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  exit 1
}

port=$(free_port)
echo "== starting mosquitto on 127.0.0.1:$port"
cat >"$work/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence false
CONF
mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
pids+=($!)
wait_for_port "$port"

echo "== subscribing to demo/# with mosquitto_sub"
mosquitto_sub -V mqttv5 -h 127.0.0.1 -p "$port" -t 'demo/#' -q 1 -F '%t  %p  %P' >"$work/received.txt" &
pids+=($!)

cat >"$work/mqspool.yaml" <<CONF
broker:
  urls: [mqtt://127.0.0.1:$port]
  client_id: mqspool-demo
spool:
  dir: $work/spool
  db: $work/state/spool.db
  min_free_bytes: 0
publish:
  default_topic: demo/default
control:
  socket: $work/mqspool.sock
log:
  level: info
CONF
mkdir -p "$work/state"

echo "== starting mqspool run --config $work/mqspool.yaml"
"$bin" run --config "$work/mqspool.yaml" 2>"$work/mqspool.log" &
mqspool_pid=$!
pids+=($mqspool_pid)
for _ in $(seq 1 100); do [ -d "$work/spool/new" ] && break; sleep 0.1; done

spool=$work/spool
drop() { # drop NAME: write tmp/NAME from stdin, then rename into new/NAME
  mkdir -p "$(dirname "$spool/new/$1")"
  cat >"$spool/tmp/$(basename "$1")"
  mv "$spool/tmp/$(basename "$1")" "$spool/new/$1"
}

echo "== dropping sample files"
printf '{"temp": 21.5}' | drop demo/site1/temp/0001.json
printf 'Topic: demo/site1/status\nQoS: 2\nContent-Type: text/plain\nUser-Property: source=demo\n\nall systems nominal' | drop status.msg
printf '%s\n' '{"topic":"demo/batch/a","payload":"first line"}' \
  '{"topic":"demo/batch/b","payload_base64":"aGVsbG8gYmFzZTY0","user_properties":[["k","v"]]}' \
  '{"topic":"demo/batch/c","payload":"third line","qos":0}' | drop batch.jsonl
"$bin" publish --config "$work/mqspool.yaml" --topic demo/cli --property by=mqspool-publish --message "from mqspool publish" >/dev/null
printf 'Topic: demo/bad/#\n\nwildcards are not allowed in a topic name' | drop bad.msg

expected=6
received() { grep -c '^demo/' "$work/received.txt" || true; }
for _ in $(seq 1 100); do
  [ "$(received)" -ge "$expected" ] && break
  sleep 0.1
done

echo "== received by mosquitto_sub (topic  payload  user properties)"
cat "$work/received.txt"
echo "== mqspool status"
"$bin" status --config "$work/mqspool.yaml" || true
echo "== failed/ (files the daemon could not take, with the reason)"
for f in $(find "$spool/failed" -name '*.reason' | sort); do
  echo "$(basename "$f"): $(cat "$f")"
done

echo "== stopping mqspool with SIGTERM"
kill -TERM "$mqspool_pid"
status=0
wait "$mqspool_pid" || status=$?
echo "mqspool exited with status $status"

got=$(received)
if [ "$got" -lt "$expected" ]; then
  echo "demo failed: $got of $expected messages arrived; mqspool log:" >&2
  cat "$work/mqspool.log" >&2
  exit 1
fi
echo "== demo done: $got messages delivered"
