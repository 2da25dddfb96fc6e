#!/usr/bin/env bash
# The pyarrow interop test: builds the `allsource` binary, starts it in memory on a free
# loopback port, runs tests/interop/test_pyarrow.py against it, and stops it again
# (also when anything fails). Needs python3 with pyarrow (`python3 -m pip install
# pyarrow`). Exits non-zero, saying why, on any failure.
#
#   bash tests/interop/run.sh
set -euo pipefail

cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-python3}
STARTUP_SECONDS=30

fail() {
    echo "INTEROP FAILED: $*" >&2
    exit 1
}

command -v "$PYTHON" >/dev/null || fail "$PYTHON not found"
"$PYTHON" -c 'import pyarrow' 2>/dev/null ||
    fail "pyarrow is not installed for $PYTHON (python3 -m pip install pyarrow)"

cargo build --locked -p allsource-server --bin allsource
target_dir=$(cargo metadata --format-version 1 --no-deps |
    "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
binary="$target_dir/debug/allsource"
[ -x "$binary" ] || fail "no binary at $binary"

log=$(mktemp)
server_pid=""
stop_server() {
    local status=$?
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [ "$status" -ne 0 ]; then
        echo "--- the server's log (last 40 lines):" >&2
        tail -n 40 "$log" >&2 || true
    fi
    rm -f "$log"
}
trap stop_server EXIT

RUST_LOG=info "$binary" --in-memory --addr 127.0.0.1:0 2>"$log" &
server_pid=$!

# Its address, from the "listening on ADDR" line of its log (bounded wait).
addr=""
deadline=$((SECONDS + STARTUP_SECONDS))
while [ -z "$addr" ]; do
    kill -0 "$server_pid" 2>/dev/null || fail "the server exited during start-up"
    [ "$SECONDS" -lt "$deadline" ] || fail "no 'listening on' line within ${STARTUP_SECONDS}s"
    addr=$(sed -n 's/.*listening on \([0-9.]*:[0-9]*\).*/\1/p' "$log" | head -n 1)
    [ -n "$addr" ] || sleep 0.1
done
base="http://$addr"
echo "server (pid $server_pid) listening on $addr"

# Ready when GET /health answers (bounded).
"$PYTHON" - "$base" "$STARTUP_SECONDS" <<'PY' || fail "GET /health did not answer 200"
import sys, time, urllib.request
base, seconds = sys.argv[1], float(sys.argv[2])
deadline = time.monotonic() + seconds
while True:
    try:
        with urllib.request.urlopen(base + "/health", timeout=5) as reply:
            if reply.status == 200:
                break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit(1)
    time.sleep(0.05)
PY

"$PYTHON" tests/interop/test_pyarrow.py "$base" || fail "test_pyarrow.py failed"
echo "interop: ok"
