#!/usr/bin/env python3
"""pyarrow reads a data directory's sealed chunks in place: `chunks/*.parquet`, as
docs/storage-format.md promises ("Any Parquet reader reads chunks/*.parquet in place").

Two phases, driven by tests/interop/run.sh around a server with a data directory:

  test_pyarrow_chunks.py load BASE_URL STATE_FILE
      Appends 70,000 events (1,000-event batches from 4 threads) to a fresh server,
      so that the first chunk (65,536 events) is sealed, and writes to STATE_FILE what
      the JSON API answers for a sample of positions and entities.
  (run.sh then stops the server with SIGTERM: a clean stop seals the rest.)
  test_pyarrow_chunks.py chunks DATA_DIR STATE_FILE
      Reads DATA_DIR/chunks/*.parquet with pyarrow.dataset and pyarrow.parquet, and
      checks them against the MANIFEST and STATE_FILE: every event, in position order,
      the schema's columns and types, and the sampled rows equal to the JSON answers.

Prints one line per check and "N passed, M failed"; exits non-zero if any failed.
Needs only the standard library and pyarrow.
"""

import json
import os
import random
import sys
import threading
import uuid

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

import test_pyarrow as common

N_EVENTS = 70_000
BATCH = 1_000
THREADS = 4
CHUNK_EVENTS = 65_536
SAMPLE = 400


def query(params):
    reply = common.get("/api/v1/events/query?" + common.query_string(params))
    assert reply.status == 200, (params, reply.status, reply.body[:500])
    return reply.json()


# --- phase 1: load, and remember what the JSON API says -------------------------------

def load(base, state_file):
    common.BASE = base.rstrip("/")
    health = common.get("/health")
    assert health.status == 200, health.status
    assert query({"limit": 1})["count"] == 0, "the server is not empty"
    bodies = []
    for i in range(N_EVENTS):
        body = {
            "event_type": common.event_type_for(i),
            "entity_id": common.entity_for(i),
            "payload": common.payload_for(i),
            "metadata": common.metadata_for(i),
        }
        if i % 2 == 0:
            body["id"] = str(uuid.uuid4())
        bodies.append(body)
    batches = [bodies[start:start + BATCH] for start in range(0, N_EVENTS, BATCH)]
    failures = []
    lock = threading.Lock()

    def client():
        while True:
            with lock:
                if not batches or failures:
                    return
                batch = batches.pop()
            try:
                reply = common.request("POST", "/api/v1/events/batch", {"events": batch})
                assert reply.status == 201, (reply.status, reply.body[:500])
                assert reply.json()["count"] == len(batch)
            except Exception as error:  # reported by the main thread
                with lock:
                    failures.append(repr(error))

    threads = [threading.Thread(target=client) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[:3]

    stats = common.get("/api/v1/stats").json()
    assert stats["total_events"] == N_EVENTS, stats
    rng = random.Random(N_EVENTS)
    positions = sorted(
        {1, 2, CHUNK_EVENTS - 1, CHUNK_EVENTS, CHUNK_EVENTS + 1, N_EVENTS}
        | {rng.randint(1, N_EVENTS) for _ in range(SAMPLE)}
    )
    sample = []
    for position in positions:
        page = query({"after": position - 1, "limit": 1})
        assert page["count"] == 1 and page["events"][0]["position"] == position, page
        sample.append(page["events"][0])
    # A run across the end of the first chunk.
    run = query({"after": CHUNK_EVENTS - 50, "limit": 100})["events"]
    entity = common.entity_for(5)
    by_entity = common.json_matches({"entity_id": entity})
    by_id = {body["id"]: body for body in bodies if "id" in body}
    sent = {e["id"]: by_id[e["id"]] for e in sample + run if e["id"] in by_id}
    state = {
        "events": N_EVENTS,
        "sample": sample,
        "run": run,
        "entity": entity,
        "entity_positions": [e["position"] for e in by_entity],
        "sent": sent,
    }
    with open(state_file, "w") as out:
        json.dump(state, out)
    print("appended %d events; sealed position %s" % (N_EVENTS, stats["storage"]["sealed_position"]))
    return 0


# --- phase 2: read the chunks in place ---------------------------------------------

DATA = ""
STATE = {}


def manifest():
    with open(os.path.join(DATA, "MANIFEST")) as f:
        return json.load(f)


def chunk_paths():
    return [os.path.join(DATA, "chunks", c["file"]) for c in manifest()["chunks"]]


def test_manifest_lists_every_event_and_only_the_files_there():
    m = manifest()
    assert m["format"] == 1, m
    chunks = m["chunks"]
    # The first chunk sealed under load; a clean stop seals the rest as a partial one.
    assert [(c["first_position"], c["last_position"]) for c in chunks] == [
        (1, CHUNK_EVENTS),
        (CHUNK_EVENTS + 1, STATE["events"]),
    ], chunks
    files = sorted(os.listdir(os.path.join(DATA, "chunks")))
    assert files == sorted(c["file"] for c in chunks), files
    for c in chunks:
        assert c["file"] == "%020d-%020d.parquet" % (c["first_position"], c["last_position"]), c
        assert os.path.getsize(os.path.join(DATA, "chunks", c["file"])) == c["bytes"], c


def test_dataset_reads_every_event_in_order():
    dataset = ds.dataset(chunk_paths(), format="parquet")
    common.check_schema(dataset.schema)
    table = dataset.to_table()
    last = manifest()["chunks"][-1]["last_position"]
    assert table.num_rows == last == STATE["events"], (table.num_rows, last)
    positions = table.column("position")
    assert positions.type == pa.uint64()
    expected = pa.array(range(1, last + 1), type=pa.uint64())
    assert positions.combine_chunks().equals(expected), "positions are not 1..%d in order" % last
    assert len(table.column("id").combine_chunks().unique()) == last, "ids are not unique"
    # Timestamps never decrease along the log.
    timestamps = table.column("timestamp").combine_chunks()
    steps = pc.greater_equal(timestamps.slice(1), timestamps.slice(0, last - 1))
    assert pc.all(steps).as_py(), "a timestamp goes back"


def test_each_chunk_file_has_the_schema_and_the_format():
    for path in chunk_paths():
        table = pq.read_table(path)
        common.check_schema(table.schema)
        meta = pq.ParquetFile(path).metadata
        first, last = [int(n) for n in os.path.basename(path)[: -len(".parquet")].split("-")]
        assert meta.num_rows == last - first + 1, (path, meta.num_rows)
        for group in range(meta.num_row_groups):
            row_group = meta.row_group(group)
            assert row_group.num_rows <= CHUNK_EVENTS, (path, row_group.num_rows)
            for column in range(row_group.num_columns):
                assert row_group.column(column).compression == "ZSTD", (path, column)
            statistics = row_group.column(common.COLUMNS.index("position")).statistics
            assert statistics.has_min_max, path
            assert statistics.min >= first and statistics.max <= last, (path, statistics)


def rows_at(table, positions):
    index = {p: i for i, p in enumerate(table.column("position").to_pylist())}
    return table.take(pa.array([index[p] for p in positions], type=pa.int64()))


def test_sampled_rows_equal_the_json_answers():
    table = ds.dataset(chunk_paths(), format="parquet").to_table()
    # About half were sent with an id: check_rows compares those with what was sent.
    assert len(STATE["sent"]) > len(STATE["sample"]) // 4, len(STATE["sent"])
    for events in [STATE["sample"], STATE["run"]]:
        common.check_rows(rows_at(table, [e["position"] for e in events]), events)


def test_filters_use_the_columns():
    dataset = ds.dataset(chunk_paths(), format="parquet")
    after = dataset.to_table(filter=pc.field("position") > CHUNK_EVENTS - 100)
    assert after.num_rows == STATE["events"] - CHUNK_EVENTS + 100, after.num_rows
    entity = dataset.to_table(filter=pc.field("entity_id") == STATE["entity"], columns=["position", "version"])
    assert entity.column("position").to_pylist() == STATE["entity_positions"]
    assert entity.column("version").to_pylist() == list(range(1, len(STATE["entity_positions"]) + 1))
    # The dictionary-encoded event type compares as a string.
    created = dataset.count_rows(filter=pc.field("event_type") == "created")
    assert 0 < created < STATE["events"], created


def check_chunks(data_dir, state_file):
    global DATA, STATE
    DATA = data_dir
    with open(state_file) as f:
        STATE = json.load(f)
    common.SENT.update(STATE["sent"])
    return common.run_tests(globals())


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("load", "chunks"):
        print(__doc__, file=sys.stderr)
        return 2
    print("pyarrow %s" % pa.__version__)
    if sys.argv[1] == "load":
        return load(sys.argv[2], sys.argv[3])
    return check_chunks(sys.argv[2], sys.argv[3])


if __name__ == "__main__":
    sys.exit(main())
