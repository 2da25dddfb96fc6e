# Shared by the scripts under tests/ that drive the real binary: source it after
# defining `fail MESSAGE` (prints and exits non-zero), PYTHON and STARTUP_SECONDS.
#
#   build_server       builds `allsource` (debug) and sets $binary
#   start_server ARGS  starts it with ARGS on a free loopback port, its log in $log;
#                      sets $server_pid and $base once GET /health answers 200
#                      (bounded waits)
#
# Sourcing it makes a temporary directory $work (with $log in it) and a trap that stops
# a server still running, prints the end of its log when the script fails, and removes
# $work.

build_server() {
    cargo build --locked -p allsource-server --bin allsource
    local target_dir
    target_dir=$(cargo metadata --format-version 1 --no-deps |
        "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    binary="$target_dir/debug/allsource"
    [ -x "$binary" ] || fail "no binary at $binary"
}

work=$(mktemp -d)
log="$work/server.log"
server_pid=""
cleanup() {
    local status=$?
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [ "$status" -ne 0 ] && [ -f "$log" ]; then
        echo "--- the server's log (last 40 lines):" >&2
        tail -n 40 "$log" >&2 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

start_server() {
    : >"$log"
    RUST_LOG=info "$binary" --addr 127.0.0.1:0 "$@" 2>"$log" &
    server_pid=$!
    # Its address, from the "listening on ADDR" line of its log.
    local addr="" deadline=$((SECONDS + STARTUP_SECONDS))
    while [ -z "$addr" ]; do
        kill -0 "$server_pid" 2>/dev/null || fail "the server exited during start-up"
        [ "$SECONDS" -lt "$deadline" ] || fail "no 'listening on' line within ${STARTUP_SECONDS}s"
        addr=$(sed -n 's/.*listening on \([0-9.]*:[0-9]*\).*/\1/p' "$log" | head -n 1)
        [ -n "$addr" ] || sleep 0.1
    done
    base="http://$addr"
    echo "server (pid $server_pid, $*) listening on $addr"

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
}
