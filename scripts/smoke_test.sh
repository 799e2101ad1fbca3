#!/usr/bin/env bash
# Smoke test: start the whole system, wait for every service to be ready, check every health
# endpoint and that events flow on the bus, then stop it and check nothing is left running.
set -euo pipefail

STATE_DIR=${HEAN_STATE_DIR:-$(mktemp -d)/state}
export HEAN_STATE_DIR=$STATE_DIR
export HEAN_PORT_BASE=${HEAN_PORT_BASE:-8100}
export HEAN_UP_NATS_PORT=${HEAN_UP_NATS_PORT:-0}
unset HEAN_NATS_URL || true
LOG=$(mktemp)

hean up >"$LOG" 2>&1 &
UP_PID=$!
cleanup() { kill "$UP_PID" 2>/dev/null || true; }
trap cleanup EXIT

echo "waiting for every service to be ready (hean up pid $UP_PID, log $LOG)"
for _ in $(seq 1 120); do
  if hean status >/dev/null 2>&1; then break; fi
  if ! kill -0 "$UP_PID" 2>/dev/null; then echo "hean up exited"; cat "$LOG"; exit 1; fi
  sleep 1
done
hean status

python - <<'PY'
import json, os, sys, urllib.request
run = json.load(open(os.path.join(os.environ["HEAN_STATE_DIR"], "run.json")))
bad = []
for name, info in run["services"].items():
    if name == "exchange-sim":
        continue
    for path in ("/healthz", "/readyz", "/metrics"):
        url = f"http://127.0.0.1:{info['port']}{path}"
        try:
            code = urllib.request.urlopen(url, timeout=3).status
        except Exception as exc:
            code = exc
        print(f"{name:24} {path:9} {code}")
        if code != 200:
            bad.append(url)
sys.exit(1 if bad else 0)
PY

echo "events on the bus:"
hean tap 'hean.>' --count 5 --timeout 30

kill -TERM "$UP_PID"
wait "$UP_PID"
trap - EXIT
if pgrep -f "hean.cli.main service" >/dev/null && [ -n "${SMOKE_STRICT:-}" ]; then
  echo "processes left behind"; exit 1
fi
echo "smoke test passed"
