#!/usr/bin/env python3
"""pyarrow reads what AllSource writes: the Arrow IPC query responses and the
Parquet and Arrow exports, checked value by value against the JSON API.

Usage: test_pyarrow.py BASE_URL   (e.g. http://127.0.0.1:8080; tests/interop/run.sh
starts a server and passes its URL). Appends a few hundred events (its own entities,
so a store with other events is fine), runs every check, prints one line per check and
a closing "N passed, M failed", and exits non-zero if any failed.

Needs only the standard library and pyarrow.
"""

import datetime
import json
import sys
import traceback
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pyarrow as pa
import pyarrow.compute
import pyarrow.ipc
import pyarrow.parquet as pq

ARROW = "application/vnd.apache.arrow.stream"
PARQUET = "application/vnd.apache.parquet"
TIMEOUT = 60  # seconds, per request
N_EVENTS = 300

COLUMNS = ["id", "event_type", "entity_id", "payload", "metadata", "timestamp", "version", "position"]
TYPES = {
    "id": pa.binary(16),
    "event_type": pa.dictionary(pa.int32(), pa.utf8()),
    "entity_id": pa.utf8(),
    "payload": pa.utf8(),
    "metadata": pa.utf8(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "version": pa.uint64(),
    "position": pa.uint64(),
}

BASE = ""
RUN = uuid.uuid4().hex[:8]  # this run's entities: "<RUN>-..."
SENT = {}  # id -> the event body as sent


class Reply:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name):
        return self.headers.get(name)

    def json(self):
        return json.loads(self.body)


def request(method, path, body=None, headers=None):
    data = None
    headers = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(BASE + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            return Reply(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as error:
        with error:
            return Reply(error.code, error.headers, error.read())


def get(path, accept=None):
    return request("GET", path, headers={"Accept": accept} if accept else None)


def query_string(params):
    return urllib.parse.urlencode(params, quote_via=urllib.parse.quote)


# --- the events ----------------------------------------------------------------------

def payload_for(i):
    """Varied payloads: nested, unicode, 64-bit integers at the ends, floats, null,
    escapes, NUL, scalars and arrays."""
    kinds = [
        lambda: {"i": i, "nested": {"list": [1, [2, [3, {"deep": None}]]], "empty": {}, "arr": []}},
        lambda: {"unicode": "ünïcödé ✓ 日本語 \U0001F600", "nul": "a\u0000b", "escapes": "\"\\/\b\f\n\r\t\u001f"},
        lambda: {"max_i64": 2**63 - 1, "min_i64": -(2**63), "max_u64": 2**64 - 1, "neg": -i},
        lambda: {"floats": [0.1, 1e-300, 5e-324, 1.7976931348623157e308, -2.5e-7, 1 / 3, float(i) + 0.5]},
        lambda: None,
        lambda: i,
        lambda: "a plain string %d" % i,
        lambda: [True, False, None, 0, -0.0, "", {"k": "v"}],
        lambda: {"big_text": "x" * (i * 37 % 5000), "n": i},
    ]
    return kinds[i % len(kinds)]()


def metadata_for(i):
    if i % 4 == 0:
        return {}
    return {"trace": "t-%d" % i, "source": "interop ✓", "n": i, "big": 2**63 - 1}


def entity_for(i):
    return "%s-%s" % (RUN, ["user/%d" % (i % 7), "order-%d" % (i % 5), "ünï-%d" % (i % 3)][i % 3])


def event_type_for(i):
    return ["created", "updated", "deleted", "renamed"][(i // 3) % 4]


def append_events():
    bodies = []
    for i in range(N_EVENTS):
        body = {
            "id": str(uuid.uuid4()),
            "event_type": event_type_for(i),
            "entity_id": entity_for(i),
            "payload": payload_for(i),
            "metadata": metadata_for(i),
        }
        bodies.append(body)
        SENT[body["id"]] = body
    # One by one for a few, the rest in batches of varied sizes.
    for body in bodies[:10]:
        reply = request("POST", "/api/v1/events", body)
        assert reply.status == 201, (reply.status, reply.body[:500])
    start, size = 10, 1
    while start < len(bodies):
        batch = bodies[start:start + size]
        reply = request("POST", "/api/v1/events/batch", {"events": batch})
        assert reply.status == 201, (reply.status, reply.body[:500])
        assert reply.json()["count"] == len(batch)
        start += size
        size = size * 2 + 1


def json_matches(params):
    """Every match of `params` by the JSON API, paging with next_after."""
    events, after = [], None
    while True:
        page_params = dict(params, limit=1000)
        if after is not None:
            page_params["after"] = after
        reply = get("/api/v1/events/query?" + query_string(page_params))
        assert reply.status == 200, (reply.status, reply.body[:500])
        body = reply.json()
        events.extend(body["events"])
        after = body["next_after"]
        if after is None:
            return events


# --- checks of a table against the JSON API -----------------------------------------

def check_schema(schema):
    assert schema.names == COLUMNS, schema.names
    for field in schema:
        want = TYPES[field.name]
        assert field.type == want, (field.name, field.type, want)
        assert not field.nullable, field.name
    metadata = schema.metadata or {}
    assert metadata.get(b"allsource.schema") == b"events/1", metadata


def rfc3339(value):
    assert value.tzinfo is not None, value
    utc = value.astimezone(datetime.timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def check_rows(table, expected):
    """`table` holds exactly the events `expected` (JSON API events), every field."""
    assert table.num_rows == len(expected), (table.num_rows, len(expected))
    rows = table.to_pylist()
    for row, want in zip(rows, expected):
        where = "position %s" % want["position"]
        assert isinstance(row["id"], bytes) and len(row["id"]) == 16, where
        assert str(uuid.UUID(bytes=row["id"])) == want["id"], where
        assert row["event_type"] == want["event_type"], where
        assert row["entity_id"] == want["entity_id"], where
        payload = json.loads(row["payload"])
        metadata = json.loads(row["metadata"])
        assert payload == want["payload"], where
        assert metadata == want["metadata"], where
        # Exactly what was sent, for this run's events (ints to the last digit, floats
        # to the last bit: json.loads reads the shortest round-trip text back exactly).
        sent = SENT.get(want["id"])
        if sent is not None:
            assert payload == sent["payload"], where
            assert json.dumps(payload, sort_keys=True) == json.dumps(sent["payload"], sort_keys=True), where
            assert metadata == sent["metadata"], where
            assert row["entity_id"] == sent["entity_id"] and row["event_type"] == sent["event_type"], where
        assert rfc3339(row["timestamp"]) == want["timestamp"], (where, row["timestamp"], want["timestamp"])
        assert row["version"] == want["version"], where
        assert row["position"] == want["position"], where


def read_stream(body):
    reader = pa.ipc.open_stream(pa.BufferReader(body))
    schema = reader.schema
    batches = list(reader)
    return schema, batches


# --- the checks ---------------------------------------------------------------------

def test_arrow_query_pages_equal_json_pages():
    """Page by page, with X-Next-After, the Arrow answer is the JSON answer."""
    for params in [{}, {"entity_id": entity_for(1)}, {"event_type": "renamed"}, {"entity_id": RUN + "-nobody"}]:
        after, seen = None, []
        for _ in range(N_EVENTS + 2):
            page_params = dict(params, limit=64)
            if after is not None:
                page_params["after"] = after
            target = "/api/v1/events/query?" + query_string(page_params)
            reply = get(target, accept=ARROW)
            assert reply.status == 200, (target, reply.status, reply.body[:500])
            assert reply.header("Content-Type") == ARROW, reply.header("Content-Type")
            schema, batches = read_stream(reply.body)
            check_schema(schema)
            assert len(batches) == 1, len(batches)
            table = pa.Table.from_batches(batches, schema=schema)
            page = get(target).json()
            assert int(reply.header("X-Count")) == page["count"] == table.num_rows
            next_after = reply.header("X-Next-After")
            assert (None if next_after is None else int(next_after)) == page["next_after"], (next_after, page)
            check_rows(table, page["events"])
            seen.extend(page["events"])
            after = page["next_after"]
            if after is None:
                break
        assert seen == json_matches(params), params
        assert len({e["position"] for e in seen}) == len(seen)


def test_arrow_query_sees_every_sent_event():
    events = json_matches({})
    ours = [e for e in events if e["id"] in SENT]
    assert len(ours) == N_EVENTS, len(ours)
    reply = get("/api/v1/events/query?limit=10000", accept=ARROW)
    assert reply.status == 200
    schema, batches = read_stream(reply.body)
    table = pa.Table.from_batches(batches, schema=schema)
    check_rows(table, events)
    # Typed access works as pyarrow users expect.
    positions = table.column("position").to_pylist()
    assert positions == sorted(positions)
    assert pa.compute.min(table.column("timestamp")).as_py().tzinfo is not None
    assert set(table.column("event_type").unique().to_pylist()) >= {"created", "updated", "deleted", "renamed"}


def test_parquet_export_equals_all_matches():
    reply = get("/api/v1/export/parquet")
    assert reply.status == 200, (reply.status, reply.body[:500])
    assert reply.header("Content-Type") == PARQUET, reply.header("Content-Type")
    assert reply.header("Content-Disposition") == 'attachment; filename="allsource-events.parquet"'
    assert reply.body[:4] == b"PAR1" and reply.body[-4:] == b"PAR1"
    table = pq.read_table(pa.BufferReader(reply.body))
    check_schema(table.schema)
    check_rows(table, json_matches({}))
    meta = pq.ParquetFile(pa.BufferReader(reply.body)).metadata
    column = meta.row_group(0).column(0)
    assert column.compression == "ZSTD", column.compression
    assert meta.row_group(0).column(COLUMNS.index("position")).statistics.has_min_max


def test_parquet_export_with_filters():
    entity = entity_for(2)
    for params in [
        {"entity_id": entity},
        {"event_type": "updated", "after": 50},
        {"entity_id": entity, "event_type": "created"},
        {"entity_id": RUN + "-nobody"},
    ]:
        reply = get("/api/v1/export/parquet?" + query_string(params))
        assert reply.status == 200, (params, reply.status, reply.body[:500])
        table = pq.read_table(pa.BufferReader(reply.body))
        check_rows(table, json_matches(params))


def test_arrow_export_equals_all_matches():
    reply = get("/api/v1/export/arrow?" + query_string({"since": "1970-01-01T00:00:00Z"}))
    assert reply.status == 200, (reply.status, reply.body[:500])
    assert reply.header("Content-Type") == ARROW
    assert reply.header("Content-Disposition") == 'attachment; filename="allsource-events.arrows"'
    schema, batches = read_stream(reply.body)
    check_schema(schema)
    check_rows(pa.Table.from_batches(batches, schema=schema), json_matches({}))


def test_errors_are_json():
    for target, accept in [
        ("/api/v1/events/query?limit=0", ARROW),
        ("/api/v1/events/query?since=yesterday", ARROW),
        ("/api/v1/export/parquet?limit=10", None),
        ("/api/v1/export/parquet?until=nope", None),
        ("/api/v1/export/arrow?entity_id=", ARROW),
    ]:
        reply = get(target, accept=accept)
        assert reply.status == 400, (target, reply.status)
        assert reply.header("Content-Type").startswith("application/json"), reply.header("Content-Type")
        assert reply.json()["error"]["code"] == "ValidationError", reply.body


def test_json_stays_the_default():
    for accept in [None, "*/*", "application/json", "text/html"]:
        reply = get("/api/v1/events/query?limit=1", accept=accept)
        assert reply.status == 200
        assert reply.header("Content-Type").startswith("application/json"), (accept, reply.header("Content-Type"))
        assert reply.json()["count"] == 1


def run_tests(namespace):
    """Runs every `test_*` function of `namespace` (a module's globals), printing each
    outcome; returns the exit status: 1 if any failed."""
    tests = [(name, fn) for name, fn in sorted(namespace.items()) if name.startswith("test_") and callable(fn)]
    passed, failed = 0, 0
    for name, fn in tests:
        try:
            fn()
        except Exception:  # an assertion or anything else: this check failed
            failed += 1
            print("FAIL %s" % name)
            traceback.print_exc()
        else:
            passed += 1
            print("ok   %s" % name)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


def main():
    global BASE
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    BASE = sys.argv[1].rstrip("/")
    print("pyarrow %s, server %s" % (pa.__version__, BASE))
    health = get("/health")
    assert health.status == 200, health.status
    append_events()
    return run_tests(globals())


if __name__ == "__main__":
    sys.exit(main())
