#!/usr/bin/env bash
# The pyarrow interop test: builds the `allsource` binary, then
#  1. starts it in memory on a free loopback port and runs tests/interop/test_pyarrow.py
#     against it (Arrow IPC responses, Parquet and Arrow exports);
#  2. starts it on a fresh temporary data directory, appends 70,000 events
#     (test_pyarrow_chunks.py load; the first 65,536 are sealed into a chunk), stops it
#     with SIGTERM (a clean stop seals the rest), and reads the data directory's
#     chunks/*.parquet in place with pyarrow (test_pyarrow_chunks.py chunks).
# Stops every server it started and removes its files, also when anything fails. Needs
# python3 with pyarrow (`python3 -m pip install pyarrow`). Exits non-zero, saying why,
# on any failure.
#
#   bash tests/interop/run.sh
set -euo pipefail

cd "$(dirname "$0")/../.."

PYTHON=${PYTHON:-python3}
STARTUP_SECONDS=30
STOP_SECONDS=60

fail() {
    echo "INTEROP FAILED: $*" >&2
    exit 1
}

command -v "$PYTHON" >/dev/null || fail "$PYTHON not found"
"$PYTHON" -c 'import pyarrow, pyarrow.dataset' 2>/dev/null ||
    fail "pyarrow is not installed for $PYTHON (python3 -m pip install pyarrow)"

# shellcheck source=../server.sh
. tests/server.sh
build_server

# Stops the server with SIGTERM and waits (bounded: SIGKILL after STOP_SECONDS) for it
# to exit; fails unless it exits 0.
stop_server() {
    kill -TERM "$server_pid"
    local status=0 deadline=$((SECONDS + STOP_SECONDS))
    while kill -0 "$server_pid" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            kill -KILL "$server_pid" 2>/dev/null || true
            fail "the server did not exit within ${STOP_SECONDS}s of SIGTERM"
        fi
        sleep 0.1
    done
    wait "$server_pid" || status=$?
    server_pid=""
    [ "$status" -eq 0 ] || fail "the server exited with status $status after SIGTERM"
    grep -q "stopped" "$log" || fail "the server's log has no 'stopped' line"
}

# 1. The HTTP answers, from a server in memory.
start_server --in-memory
"$PYTHON" tests/interop/test_pyarrow.py "$base" || fail "test_pyarrow.py failed"
stop_server

# 2. The chunk files of a data directory, read in place after a clean stop.
data="$work/data"
state="$work/state.json"
start_server --data-dir "$data"
"$PYTHON" tests/interop/test_pyarrow_chunks.py load "$base" "$state" || fail "test_pyarrow_chunks.py load failed"
stop_server
"$PYTHON" tests/interop/test_pyarrow_chunks.py chunks "$data" "$state" || fail "test_pyarrow_chunks.py chunks failed"
echo "interop: ok"
