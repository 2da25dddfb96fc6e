//! Crash tests of the sealed side of a data directory: the Parquet chunks, their
//! `MANIFEST`, the merging of small chunks and the projection `CHECKPOINT` ("Sealed
//! chunks and the manifest", "Compaction", "Projection checkpoints" and "Recovery" in
//! `docs/storage-format.md`), from outside: the real `allsource` binary on real files in
//! temporary directories, loaded over loopback HTTP with 1,000-event batches until a
//! chunk (65,536 events) is sealed, killed with SIGKILL around that moment or while it
//! merges chunks, stopped cleanly, restarted on a damaged checkpoint or chunk.
//!
//! Randomness (what clients send, when the kill comes, what is damaged) comes from one
//! seed per test, printed at its start (run with `--nocapture` to see it on success) and
//! part of every assertion message. Set `ALLSOURCE_CRASH_SEED=<u64>` to replay a run's
//! choices (where the kill lands in the server's work still depends on scheduling).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::model::*;
use common::process::{spawn, Server};
use common::{encode, Req};
use serde_json::{json, Value};

/// Events per sealed chunk (`WalConfig::chunk_events`, not configurable from outside).
const CHUNK_EVENTS: usize = 65_536;
/// Events per append request.
const BATCH_EVENTS: usize = 1_000;
/// Concurrent client threads while loading.
const CLIENT_THREADS: usize = 4;
/// Entities the events are spread over (every 500th needs percent-encoding in a path).
const ENTITIES: u64 = 3_000;
const EVENT_TYPES: [&str; 4] = ["seal.created", "seal.updated", "seal.moved", "seal.noted"];
/// Kill-restart cycles around a seal on one data directory.
const CYCLES: usize = 2;
/// The largest query page.
const PAGE: usize = 10_000;
/// How long a seal (or a start-up) may take to show.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// Load: client threads appending 1,000-event batches
// ---------------------------------------------------------------------------------------

fn entity(n: u64) -> String {
    if n % 500 == 7 {
        format!("ent/ü {n}")
    } else {
        format!("e{n}")
    }
}

/// A small payload (the log is fetched whole after every restart): a big integer and a
/// float, sometimes a string with escapes, a NUL and non-BMP characters, a key removed
/// (`null`), nested values; `tag` makes it unique.
fn small_payload(rng: &mut Rng, tag: &str) -> Value {
    let mut payload =
        json!({"tag": tag, "n": rng.next() >> rng.below(64), "f": rng.below(1 << 20) as f64 / 7.0});
    match rng.below(20) {
        0 => payload["s"] = json!("é ü 😀 \u{0} \" \\ \n \u{7f} \u{2028}"),
        1 => payload["n"] = Value::Null,
        2 => payload["nested"] = json!({"list": [1, "two", null, true], "neg": -(rng.below(1 << 62) as i64)}),
        _ => {}
    }
    payload
}

/// A batch of `BATCH_EVENTS` events on random entities: with client ids for all, none or
/// about half of them (some in upper case), some with metadata.
fn make_batch(rng: &mut Rng, label: &str) -> Vec<Value> {
    let ids = rng.id_mode();
    (0..BATCH_EVENTS)
        .map(|item| {
            let tag = format!("{label}i{item}");
            let mut body = json!({
                "event_type": rng.pick(&EVENT_TYPES),
                "entity_id": entity(rng.below(ENTITIES)),
                "payload": small_payload(rng, &tag),
            });
            if rng.chance(30) {
                body["metadata"] = json!({"label": label, "item": item});
            }
            if let Some(id) = rng.client_id(ids, 10) {
                body["id"] = json!(id);
            }
            body
        })
        .collect()
}

/// What the client threads share: when to stop, how many batches are left to send,
/// and the count of acknowledged events.
struct Load {
    addr: SocketAddr,
    cycle: usize,
    seed: u64,
    stop: AtomicBool,
    batches: AtomicUsize,
    acked: Progress,
    /// Client threads that have finished.
    done: AtomicUsize,
}

impl Load {
    fn new(addr: SocketAddr, cycle: usize, seed: u64, batches: usize) -> Load {
        Load {
            addr,
            cycle,
            seed,
            stop: AtomicBool::new(false),
            batches: AtomicUsize::new(batches),
            acked: Progress::default(),
            done: AtomicUsize::new(0),
        }
    }

    /// One client thread: appends batches until told to stop, until the batches run
    /// out, or until its connection fails (the server is gone).
    fn client(&self, thread: usize) -> Vec<Sent> {
        let mut rng = Rng::new(self.seed ^ splitmix((self.cycle as u64) << 16 | thread as u64));
        let mut sent = Vec::new();
        for request in 0.. {
            let more = self.batches.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
            if self.stop.load(Ordering::Acquire) || more.is_err() {
                break;
            }
            let label = format!("c{}t{thread}r{request}", self.cycle);
            let bodies = make_batch(&mut rng, &label);
            let outcome = send_append(self.addr, true, &bodies);
            if matches!(outcome, Outcome::Acked { .. }) {
                self.acked.add(bodies.len());
            }
            let unknown = matches!(outcome, Outcome::Unknown(_));
            sent.push(Sent { label, batch: true, bodies, outcome });
            if unknown {
                break;
            }
        }
        self.done.fetch_add(1, Ordering::AcqRel);
        self.acked.add(0);
        sent
    }
}

/// Appends `batches` batches from `CLIENT_THREADS` threads, every one of which must be
/// acknowledged with `201`; returns the requests.
fn load(server: &Server, cycle: usize, seed: u64, batches: usize, ctx: &str) -> Vec<Sent> {
    let load = Load::new(server.addr, cycle, seed, batches);
    let requests: Vec<Sent> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENT_THREADS)
            .map(|thread| {
                let load = &load;
                scope.spawn(move || load.client(thread))
            })
            .collect();
        clients.into_iter().flat_map(|client| client.join().unwrap()).collect()
    });
    for request in &requests {
        assert!(
            matches!(request.outcome, Outcome::Acked { status: 201, .. }),
            "{ctx}: {} got {:?}",
            request.label,
            request.outcome
        );
    }
    assert_eq!(requests.len(), batches, "{ctx}");
    requests
}

// ---------------------------------------------------------------------------------------
// Reading the server and the data directory
// ---------------------------------------------------------------------------------------

/// The events at positions `after + 1 ..= last`, in pages of 10,000.
fn events_between(server: &Server, mut after: usize, last: usize, ctx: &str) -> Vec<Value> {
    let mut events = Vec::new();
    while after < last {
        let limit = (last - after).min(PAGE);
        let target = format!("/api/v1/events/query?limit={limit}&after={after}");
        let body = call_json(server, Req::get(target), 200, ctx);
        let page = body["events"].as_array().unwrap();
        assert_eq!(page.len(), limit, "{ctx}: a page after {after} up to {last} is short");
        events.extend(page.iter().cloned());
        after += limit;
    }
    events
}

/// Every event after position `after`, in position order: fetched in four parts at
/// once (the log is fetched whole after every restart; this halves the time on two
/// cores).
fn events_after(server: &Server, after: usize, ctx: &str) -> Vec<Value> {
    let last = stats(server, ctx)["committed_position"].as_u64().unwrap() as usize;
    let part = last.saturating_sub(after).div_ceil(4).max(1);
    let mut events: Vec<Value> = std::thread::scope(|scope| {
        let parts: Vec<_> = (0..4)
            .map(|n| {
                let from = (after + n * part).min(last);
                let to = (from + part).min(last);
                scope.spawn(move || events_between(server, from, to, ctx))
            })
            .collect();
        parts.into_iter().flat_map(|part| part.join().unwrap()).collect()
    });
    // Nothing follows unless something is appended meanwhile; if so, that too.
    let body = call_json(
        server,
        Req::get(format!("/api/v1/events/query?limit={PAGE}&after={}", last.max(after))),
        200,
        ctx,
    );
    events.extend(body["events"].as_array().unwrap().iter().cloned());
    assert!(body["next_after"].is_null(), "{ctx}: appends while the log is read");
    events
}

fn stats(server: &Server, ctx: &str) -> Value {
    call_json(server, Req::get("/api/v1/stats"), 200, ctx)
}

fn sealed_position(server: &Server, ctx: &str) -> usize {
    let stats = stats(server, ctx);
    stats["storage"]["sealed_position"].as_u64().unwrap_or_else(|| panic!("{ctx}: {stats}")) as usize
}

/// Waits (polling the stats, bounded) until the sealed position is `expected`: the
/// sealer seals on its own thread, also right after a start-up that recovered a full
/// chunk's worth of unsealed events.
fn wait_sealed(server: &Server, expected: usize, ctx: &str) {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let sealed = sealed_position(server, ctx);
        if sealed == expected {
            return;
        }
        assert!(sealed < expected, "{ctx}: sealed position {sealed}, more than the expected {expected}");
        assert!(
            Instant::now() < deadline,
            "{ctx}: sealed position {sealed} after {SETTLE_TIMEOUT:?}, not {expected}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The file names in `dir`, sorted (none if it does not exist).
fn names(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<String> =
        entries.map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// The manifest, if there is one; it must always read (it is replaced atomically).
fn manifest(data: &Path, ctx: &str) -> Option<Value> {
    let bytes = match std::fs::read(data.join("MANIFEST")) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("{ctx}: cannot read the MANIFEST: {e}"),
    };
    Some(serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!("{ctx}: the MANIFEST does not read ({e}): {:?}", String::from_utf8_lossy(&bytes))
    }))
}

/// The manifest's chunk file names and its last position (0 without a manifest).
fn manifest_chunks(data: &Path, ctx: &str) -> (Vec<String>, usize) {
    let Some(manifest) = manifest(data, ctx) else { return (Vec::new(), 0) };
    let chunks = manifest["chunks"].as_array().unwrap_or_else(|| panic!("{ctx}: {manifest}"));
    let files = chunks.iter().map(|c| c["file"].as_str().unwrap().to_string()).collect();
    let last = chunks.last().map_or(0, |c| c["last_position"].as_u64().unwrap() as usize);
    (files, last)
}

fn chunk_name(first: usize, last: usize) -> String {
    format!("{first:020}-{last:020}.parquet")
}

/// Checks a data directory (not while it seals or merges): the manifest lists chunks
/// that run gapless from position 1 to `sealed`, none of more than `2 × 65,536` events,
/// each named by its positions and there with the size the manifest says; and
/// `chunks/` holds no temporary file and no file the manifest does not list. Returns
/// the chunks' event counts.
fn check_archive(data: &Path, sealed: usize, ctx: &str) -> Vec<usize> {
    let manifest = manifest(data, ctx);
    let chunks: Vec<Value> = match &manifest {
        None => Vec::new(),
        Some(manifest) => {
            assert_eq!(manifest["format"], 1, "{ctx}: {manifest}");
            manifest["chunks"].as_array().unwrap().clone()
        }
    };
    let mut next = 1;
    let mut sizes = Vec::new();
    for chunk in &chunks {
        let (first, last) = (
            chunk["first_position"].as_u64().unwrap() as usize,
            chunk["last_position"].as_u64().unwrap() as usize,
        );
        assert!(
            first == next && last >= first && last - first < 2 * CHUNK_EVENTS,
            "{ctx}: chunk {chunk} in {manifest:?}"
        );
        let file = chunk_name(first, last);
        assert_eq!(chunk["file"], file, "{ctx}: {chunk}");
        let bytes = std::fs::metadata(data.join("chunks").join(&file))
            .unwrap_or_else(|e| panic!("{ctx}: the listed chunk {file}: {e}"))
            .len();
        assert_eq!(chunk["bytes"], bytes, "{ctx}: the size of {file}");
        sizes.push(last - first + 1);
        next = last + 1;
    }
    assert_eq!(next - 1, sealed, "{ctx}: the MANIFEST ends at {}, not {sealed}: {manifest:?}", next - 1);
    let listed: Vec<String> = chunks.iter().map(|c| c["file"].as_str().unwrap().to_string()).collect();
    assert_eq!(
        names(&data.join("chunks")),
        listed,
        "{ctx}: chunks/ holds other files than the MANIFEST lists"
    );
    sizes
}

/// What SIGKILL left in a data directory.
#[derive(Debug)]
struct CrashImage {
    /// The manifest's last position.
    sealed: usize,
    /// Files recovery must remove: temporary files, chunk files the manifest does not
    /// list.
    leftovers: Vec<String>,
}

impl CrashImage {
    fn read(data: &Path, ctx: &str) -> CrashImage {
        let (listed, sealed) = manifest_chunks(data, ctx);
        let chunks = names(&data.join("chunks"));
        for file in &listed {
            assert!(
                chunks.contains(file),
                "{ctx}: the MANIFEST lists {file}, which is not in chunks/ {chunks:?}"
            );
        }
        let mut leftovers: Vec<String> = names(data).into_iter().filter(|n| n.ends_with(".tmp")).collect();
        leftovers.extend(chunks.iter().filter(|n| !listed.contains(n)).cloned());
        CrashImage { sealed, leftovers }
    }
}

/// Microseconds since the epoch of an RFC 3339 timestamp as the API writes it
/// (`2026-11-27T10:00:01.000001Z`).
fn micros(timestamp: &str) -> i64 {
    let number = |range: std::ops::Range<usize>| timestamp[range].parse::<i64>().unwrap();
    let (year, month, day) = (number(0..4), number(5..7), number(8..10));
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + number(11..13) * 3_600 + number(14..16) * 60 + number(17..19);
    seconds * 1_000_000 + number(20..26)
}

/// Copies data directory `from` (every file but the lock) to `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The entities of `log`, sorted by name.
fn entities(log: &[Value]) -> Vec<String> {
    let set: BTreeSet<&str> = log.iter().map(|e| e["entity_id"].as_str().unwrap()).collect();
    set.into_iter().map(str::to_string).collect()
}

/// Asserts that the snapshot (the projection) of each entity equals its state (a
/// replay of its events).
fn assert_snapshots_are_states<'a>(server: &Server, entities: impl Iterator<Item = &'a String>, ctx: &str) {
    for entity in entities {
        let path = encode(entity);
        let state = call_json(server, Req::get(format!("/api/v1/entities/{path}/state")), 200, ctx);
        let snapshot = call_json(server, Req::get(format!("/api/v1/entities/{path}/snapshot")), 200, ctx);
        assert_eq!(snapshot, state, "{ctx}: snapshot and state of {entity:?} differ");
    }
}

fn has_line(server: &Server, needles: &[&str]) -> bool {
    server.startup_log.iter().any(|line| needles.iter().all(|n| line.contains(n)))
}

// ---------------------------------------------------------------------------------------
// 1: kill -9 around a seal, twice on one directory
// ---------------------------------------------------------------------------------------

/// When a cycle's kill comes, relative to the seal of the chunk ending at `boundary`.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// When this many events (positions) are acknowledged: anywhere from 5,536 before
    /// the boundary to 4,464 after it (60,000..70,000 for the first chunk).
    Acked(usize),
    /// As soon as the chunk's temporary file shows in `chunks/`: during the write of
    /// the Parquet file.
    ChunkTemp,
    /// As soon as the MANIFEST lists the chunk: just after the commit point, while the
    /// WAL is trimmed and the checkpoint written.
    Committed,
    /// As soon as `CHECKPOINT.tmp` shows: while the checkpoint is written.
    CheckpointTemp,
}

impl Moment {
    /// The moments of `cycles` cycles, all different while they last, in seeded order;
    /// the `Acked` ones once just past the boundary and once anywhere around it.
    fn choose(rng: &mut Rng, cycles: usize) -> Vec<(u8, usize)> {
        let mut kinds: Vec<u8> = (0..5).collect();
        for i in (1..kinds.len()).rev() {
            kinds.swap(i, rng.below(i as u64 + 1) as usize);
        }
        (0..cycles)
            .map(|cycle| {
                let kind = kinds[cycle % kinds.len()];
                let offset = match kind {
                    0 => rng.range(0, 10_000) as usize,
                    1 => 5_536 + rng.range(0, 1_500) as usize,
                    _ => 0,
                };
                (kind, offset)
            })
            .collect()
    }

    fn new((kind, offset): (u8, usize), boundary: usize) -> Moment {
        match kind {
            0 | 1 => Moment::Acked(boundary - 5_536 + offset),
            2 => Moment::ChunkTemp,
            3 => Moment::Committed,
            _ => Moment::CheckpointTemp,
        }
    }

    /// Whether the moment has come, with `acked` events of the log acknowledged.
    fn reached(self, data: &Path, boundary: usize, acked: usize, ctx: &str) -> bool {
        let first = boundary - CHUNK_EVENTS + 1;
        match self {
            Moment::Acked(at) => acked >= at,
            Moment::ChunkTemp => {
                data.join("chunks").join(format!("{}.tmp", chunk_name(first, boundary))).exists()
            }
            Moment::Committed => manifest_chunks(data, ctx).1 >= boundary,
            Moment::CheckpointTemp => {
                manifest_chunks(data, ctx).1 >= boundary && data.join("CHECKPOINT.tmp").exists()
            }
        }
    }
}

/// Loads the server from `CLIENT_THREADS` threads up to 10,000 events past `boundary`
/// and kills it with SIGKILL at `moment` (or, if that never comes, 10 s after the load
/// ended). `base`: the events in the log before. Returns every request and whether the
/// moment came.
fn load_and_kill(
    server: &Server,
    data: &Path,
    (cycle, seed): (usize, u64),
    base: usize,
    boundary: usize,
    moment: Moment,
    ctx: &str,
) -> (Vec<Sent>, bool) {
    let load = Load::new(server.addr, cycle, seed, (boundary + 10_000 - base).div_ceil(BATCH_EVENTS));
    std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENT_THREADS)
            .map(|thread| {
                let load = &load;
                scope.spawn(move || load.client(thread))
            })
            .collect();
        let mut ended: Option<Instant> = None;
        let came = loop {
            let acked = base + load.acked.count();
            if moment.reached(data, boundary, acked, ctx) {
                break true;
            }
            if load.done.load(Ordering::Acquire) == CLIENT_THREADS
                && ended.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(10)
            {
                break false;
            }
            // Wakes at the next acknowledgement, or after a millisecond to look at the
            // files again.
            load.acked.wait_for(acked - base + 1, Duration::from_millis(1));
        };
        server.kill();
        load.stop.store(true, Ordering::Release);
        let status = server.wait_exit(EXIT_TIMEOUT);
        let requests: Vec<Sent> = clients.into_iter().flat_map(|client| client.join().unwrap()).collect();
        assert_eq!(status.signal(), Some(9), "{ctx}: the server did not die of SIGKILL: {status:?}");
        (requests, came)
    })
}

/// Restarts the server on `args` after a kill that left `image` and checks what
/// recovery did: every leftover removed with a log line (and nothing else), the sealed
/// position not behind the manifest's, "recovered N events" for the whole log, and
/// the log against the model (`check_log`). Returns the server, the log, and per
/// request of unknown outcome whether it was kept.
fn restart_after_kill(
    args: &[&str],
    image: &CrashImage,
    model: &Model,
    ctx: &str,
) -> (Server, Vec<Value>, HashMap<String, bool>) {
    let server = Server::start_with(args);
    let startup = server.startup_log.join("\n");
    for leftover in &image.leftovers {
        // The line names what the crash interrupted.
        let interrupted = if leftover == "MANIFEST.tmp" {
            "interrupted manifest update"
        } else if leftover == "CHECKPOINT.tmp" {
            "interrupted checkpoint"
        } else {
            "interrupted seal or merge"
        };
        assert!(
            has_line(&server, &["removing a file left by an", interrupted, leftover]),
            "{ctx}: {leftover} was not removed with a log line naming an {interrupted}:\n{startup}"
        );
    }
    let removals = server.startup_log.iter().filter(|l| l.contains("removing a file left by an")).count();
    assert_eq!(removals, image.leftovers.len(), "{ctx}: files removed at start-up:\n{startup}");
    let sealed = sealed_position(&server, ctx);
    let log = events_after(&server, 0, ctx);
    assert_recovered_line(&server, log.len(), ctx);
    assert!(
        sealed >= image.sealed && sealed <= log.len(),
        "{ctx}: sealed position {sealed} after recovering {} events",
        log.len()
    );
    let unknown = check_log(model, &log, &[], ctx);
    (server, log, unknown)
}

/// Test 1: appends ~70,000 events from four threads in 1,000-event batches and kills
/// the server with SIGKILL around the seal of the first chunk (at a random count of
/// acknowledged events between 60,000 and 70,000, just past 65,536, while the chunk
/// file is written, just after the manifest swap, or while the checkpoint is written);
/// restarts and checks that every acknowledged event is there and identical, nothing
/// else is, batches of unknown outcome are whole or absent (the model's `check_log`),
/// leftovers are removed with a log line, the sealed position is a whole number of
/// chunks, the manifest and `chunks/` agree, and snapshots equal states. Then appends
/// more on the same directory and does it again around the next chunk; then stops
/// cleanly and restarts from the checkpoint.
#[test]
fn kill_9_while_sealing_loses_nothing() {
    let test = "kill_9_while_sealing_loses_nothing";
    let seed = test_seed(test);
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = ["--data-dir", data.to_str().unwrap()];
    let moments = Moment::choose(&mut rng, CYCLES);
    let mut model = Model::default();
    let mut server = Server::start_with(&args);
    let mut log: Vec<Value> = Vec::new();
    for (cycle, &choice) in (1..=CYCLES).zip(&moments) {
        let cycle_started = Instant::now();
        let base = log.len();
        let boundary = (base / CHUNK_EVENTS + 1) * CHUNK_EVENTS;
        let moment = Moment::new(choice, boundary);
        let ctx =
            format!("{test}, {SEED_VAR}={seed}, cycle {cycle} (kill at {moment:?}, chunk to {boundary})");
        let (requests, came) = load_and_kill(&server, &data, (cycle, seed), base, boundary, moment, &ctx);
        let acked: usize = requests.iter().map(Sent::acked_events).sum();
        let this_cycle: HashSet<String> = requests.iter().map(|r| r.label.clone()).collect();
        model.requests.extend(requests);
        drop(server);
        let image = CrashImage::read(&data, &ctx);
        let ctx = format!("{ctx}, crash image {image:?}, chunks/ {:?}", names(&data.join("chunks")));
        let loaded = cycle_started.elapsed();

        let (restarted, recovered, mut unknown) = restart_after_kill(&args, &image, &model, &ctx);
        server = restarted;
        log = recovered;
        let sealed = sealed_position(&server, &ctx);
        assert_eq!(sealed % CHUNK_EVENTS, 0, "{ctx}: sealed position {sealed} after kills only");
        // A full chunk's worth of unsealed events is sealed right after start-up.
        let settled = log.len() / CHUNK_EVENTS * CHUNK_EVENTS;
        wait_sealed(&server, settled, &ctx);
        let sizes = check_archive(&data, settled, &ctx);
        assert!(
            sizes.iter().all(|&n| n == CHUNK_EVENTS),
            "{ctx}: chunks of {sizes:?} events after kills only"
        );
        unknown.retain(|label, _| this_cycle.contains(label));
        check_reads(&server, &log, false, 97, &ctx);
        assert_snapshots_are_states(&server, entities(&log).iter().step_by(10), &ctx);
        let restored = has_line(&server, &["restored projections from a checkpoint"]);
        let kept = unknown.values().filter(|&&kept| kept).count();
        eprintln!(
            "{ctx}: the moment {}; {acked} events acknowledged in {loaded:?}; {} recovered (sealed {} at the \
             kill, {sealed} after start-up); {} batches of unknown outcome ({kept} kept); projections {}; cycle \
             took {:?}",
            if came { "came" } else { "never came: killed 10 s after the load" },
            log.len(),
            image.sealed,
            unknown.len(),
            if restored { "restored from a checkpoint" } else { "replayed" },
            cycle_started.elapsed(),
        );

        let retried = retry_unknown(&server, &mut model, &unknown, &ctx);
        if retried > 0 {
            let tail = events_after(&server, log.len(), &ctx);
            log.extend(tail);
            check_log(&model, &log, &[], &format!("{ctx}, after {retried} retries"));
        }
    }

    // A clean stop seals the rest and checkpoints the last position; the restart
    // restores it. (One more batch first: that a clean stop with nothing appended since
    // the start also checkpoints is test 3's.)
    let ctx = format!("{test}, {SEED_VAR}={seed}, after a clean stop");
    model.requests.extend(load(&server, CYCLES + 1, seed, 1, &ctx));
    log.extend(events_after(&server, log.len(), &ctx));
    check_log(&model, &log, &[], &ctx);
    server.signal("TERM");
    assert_eq!(server.wait_exit(EXIT_TIMEOUT).code(), Some(0), "{ctx}");
    drop(server);
    check_archive(&data, log.len(), &ctx);
    let server = Server::start_with(&args);
    assert_recovered_line(&server, log.len(), &ctx);
    let position = format!("position={}", log.len());
    assert!(
        has_line(&server, &["restored projections from a checkpoint", &position]),
        "{ctx}:\n{}",
        server.startup_log.join("\n")
    );
    let last = events_after(&server, log.len() - 1, &ctx);
    assert_eq!(last, log[log.len() - 1..], "{ctx}: the last event");
    assert_snapshots_are_states(&server, entities(&log).iter().step_by(50), &ctx);
    eprintln!(
        "{test}: {SEED_VAR}={seed}: {} requests ({} acknowledged, {} unknown), {} events, {:?}",
        model.requests.len(),
        model.count(|o| matches!(o, Outcome::Acked { .. })),
        model.count(|o| matches!(o, Outcome::Unknown(_))),
        log.len(),
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// 2: kill -9 while small chunks are merged
// ---------------------------------------------------------------------------------------

/// Waits (polling the files, bounded) until the merging is done: no two adjacent
/// chunks under 65,536 events, and `chunks/` holds only what the manifest lists.
fn wait_merged(data: &Path, ctx: &str) {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let manifest = manifest(data, ctx);
        let chunks = manifest.as_ref().map(|m| m["chunks"].as_array().unwrap().clone()).unwrap_or_default();
        let small: Vec<bool> = chunks
            .iter()
            .map(|c| {
                c["last_position"].as_u64().unwrap() - c["first_position"].as_u64().unwrap()
                    < CHUNK_EVENTS as u64 - 1
            })
            .collect();
        let listed: Vec<String> = chunks.iter().map(|c| c["file"].as_str().unwrap().to_string()).collect();
        if !small.windows(2).any(|w| w[0] && w[1]) && names(&data.join("chunks")) == listed {
            return;
        }
        assert!(Instant::now() < deadline, "{ctx}: not merged after {SETTLE_TIMEOUT:?}: {manifest:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Test 2: a clean stop seals the rest as a small chunk, and the next start merges
/// adjacent small chunks. Three rounds on one directory of: 8,000 more events, a clean
/// stop (two small chunks now), a start killed with SIGKILL while it merges them (as
/// the merged file is being written, just after the manifest swap, or at a random
/// moment after the merge began), and a restart: every event is there, as served
/// before, leftovers are removed with a log line, the merge completes, the manifest and
/// `chunks/` agree, snapshots equal states.
#[test]
fn kill_9_while_merging_small_chunks_loses_nothing() {
    let test = "kill_9_while_merging_small_chunks_loses_nothing";
    let seed = test_seed(test);
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = ["--data-dir", data.to_str().unwrap()];
    let mut model = Model::default();
    // A first small chunk.
    let ctx = format!("{test}, {SEED_VAR}={seed}");
    let server = Server::start_with(&args);
    model.requests.extend(load(&server, 0, seed, 8, &ctx));
    server.signal("TERM");
    assert_eq!(server.wait_exit(EXIT_TIMEOUT).code(), Some(0), "{ctx}: SIGTERM");
    drop(server);
    assert_eq!(check_archive(&data, 8_000, &ctx), [8_000], "{ctx}");
    let mut server = Server::start_with(&args);
    let mut log: Vec<Value> = Vec::new();
    let mut moments = [0, 1, 2];
    for i in (1..moments.len()).rev() {
        moments.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for round in 1..=3 {
        let ctx = format!("{ctx}, round {round}");
        model.requests.extend(load(&server, round, seed, 8, &ctx));
        let before = events_after(&server, 0, &ctx);
        assert_eq!(before.len(), 8_000 * (round + 1), "{ctx}");
        log = before;
        server.signal("TERM");
        assert_eq!(server.wait_exit(EXIT_TIMEOUT).code(), Some(0), "{ctx}: SIGTERM");
        drop(server);
        // Two small chunks, to be merged at the next start.
        assert_eq!(check_archive(&data, log.len(), &ctx), [8_000 * round, 8_000], "{ctx}");
        let merged = chunk_name(1, log.len());
        let moment = moments[round - 1];
        let delay = Duration::from_millis(rng.range(0, 300));
        let temp = data.join("chunks").join(format!("{merged}.tmp"));
        let mut child = spawn(&["--addr", "127.0.0.1:0", "--data-dir", data.to_str().unwrap()], &[]);
        let spawned = Instant::now();
        let mut writing: Option<Instant> = None;
        let came = loop {
            let swapped = manifest_chunks(&data, &ctx).0.first() == Some(&merged);
            if writing.is_none() && (temp.exists() || swapped) {
                writing = Some(Instant::now());
            }
            let reached = match moment {
                0 => writing.is_some(),
                1 => swapped,
                _ => writing.is_some_and(|since| since.elapsed() >= delay),
            };
            if reached {
                break true;
            }
            if spawned.elapsed() > SETTLE_TIMEOUT || child.try_wait().unwrap().is_some() {
                break false;
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        let _ = child.kill();
        let status = child.wait().unwrap();
        let image = CrashImage::read(&data, &ctx);
        let ctx = format!(
            "{ctx} (kill {}), crash image {image:?}, chunks/ {:?}",
            [
                "as the merged file is being written",
                "after the manifest swap",
                &format!("{delay:?} after the merged file showed")
            ][moment],
            names(&data.join("chunks"))
        );
        assert!(came, "{ctx}: the moment never came; the server exited with {status:?}");

        let (restarted, recovered, unknown) = restart_after_kill(&args, &image, &model, &ctx);
        server = restarted;
        assert!(unknown.is_empty(), "{ctx}");
        assert_eq!(recovered, log, "{ctx}: the events differ from what was served before the kill");
        wait_merged(&data, &ctx);
        let sizes = check_archive(&data, log.len(), &ctx);
        assert_eq!(sizes, [log.len()], "{ctx}: the chunks after the merge");
        assert_snapshots_are_states(&server, entities(&log).iter().step_by(10), &ctx);
        eprintln!("{ctx}: chunks of {sizes:?} events after the restart");
    }
    eprintln!("{test}: {SEED_VAR}={seed}: {} events, {:?}", log.len(), started.elapsed());
}

// ---------------------------------------------------------------------------------------
// 3: the checkpoint of a clean stop, and damaged checkpoints
// ---------------------------------------------------------------------------------------

/// The requests whose answers must not change across restarts, chosen from the log.
fn probes(log: &[Value], rng: &mut Rng) -> Vec<String> {
    let mut targets = vec![
        "/api/v1/stats".to_string(),
        "/api/v1/projections".to_string(),
        "/api/v1/events/query?limit=10".to_string(),
        // Across the end of the chunk.
        format!("/api/v1/events/query?after={}&limit=1000", CHUNK_EVENTS - 500),
        format!("/api/v1/events/query?after={}", log.len() - 10),
        format!("/api/v1/events/query?event_type={}&after=30000&limit=500", EVENT_TYPES[2]),
    ];
    for event_type in EVENT_TYPES {
        targets.push(format!("/api/v1/projections/event_counters/{event_type}"));
    }
    for position in [1, CHUNK_EVENTS, CHUNK_EVENTS + 1, log.len()] {
        targets.push(format!("/api/v1/events/{}", log[position - 1]["id"].as_str().unwrap()));
    }
    for _ in 0..3 {
        let from = rng.below(log.len() as u64 - 200) as usize;
        let since = encode(log[from]["timestamp"].as_str().unwrap());
        let until = encode(log[from + 150]["timestamp"].as_str().unwrap());
        targets.push(format!("/api/v1/events/query?since={since}&until={until}&limit=1000"));
    }
    let entities = entities(log);
    for (n, entity) in entities.iter().enumerate() {
        let path = encode(entity);
        // The projection of a sample; every way of reading a smaller one.
        if n % 10 == 0 {
            targets.push(format!("/api/v1/entities/{path}/snapshot"));
        }
        if n % 100 == 0 {
            let as_of = encode(log[rng.below(log.len() as u64) as usize]["timestamp"].as_str().unwrap());
            targets.push(format!("/api/v1/entities/{path}/state"));
            targets.push(format!("/api/v1/entities/{path}/state?as_of={as_of}"));
            targets.push(format!("/api/v1/projections/entity_snapshots/{path}"));
            targets.push(format!("/api/v1/events/query?entity_id={path}"));
        }
    }
    targets
}

/// The answers to `probes`: status and body, without what counts since start-up or
/// names the directory.
fn answers(server: &Server, probes: &[String], ctx: &str) -> Vec<(u16, Value)> {
    probes
        .iter()
        .map(|target| {
            let reply = call(server, Req::get(target.clone()), ctx);
            let mut body: Value = serde_json::from_slice(&reply.body)
                .unwrap_or_else(|e| panic!("{ctx}: GET {target}: not JSON ({e}): {}", reply.text()));
            if target == "/api/v1/stats" {
                body.as_object_mut().unwrap().remove("total_ingested");
                // Memory, not content: columns decoded from Parquet have other buffer
                // capacities than columns built from events.
                body.as_object_mut().unwrap().remove("columnar_bytes");
                let storage = body["storage"].as_object_mut().unwrap();
                // A clean stop seals the rest: the archive's figures change (checked apart).
                for volatile in [
                    "syncs",
                    "synced_events",
                    "last_sync_micros",
                    "data_dir",
                    "sealed_position",
                    "chunks",
                    "chunk_bytes",
                ] {
                    storage.remove(volatile);
                }
            }
            (reply.status, body)
        })
        .collect()
}

/// Asserts the stats describe the archive of a cleanly stopped directory: all 70,000
/// events sealed, in the two chunks of `chunk_bytes`.
fn assert_all_sealed(server: &Server, chunk_bytes: u64, ctx: &str) {
    let storage = &stats(server, ctx)["storage"];
    assert_eq!(
        (&storage["sealed_position"], &storage["chunks"], &storage["chunk_bytes"]),
        (&json!(70_000), &json!(2), &json!(chunk_bytes)),
        "{ctx}: {storage}"
    );
}

fn assert_same_answers(probes: &[String], before: &[(u16, Value)], after: &[(u16, Value)], ctx: &str) {
    for ((target, before), after) in probes.iter().zip(before).zip(after) {
        assert_eq!(after, before, "{ctx}: GET {target} answers differently (left: now, right: before)");
    }
}

/// Test 3: appends 70,000 events (the first 65,536 are sealed), stops the server with
/// SIGTERM: `CHECKPOINT` names the last position, and a restart restores the projections
/// from it and answers exactly as before (stats, queries across the chunk's end,
/// states, snapshots, counters). Then, each on a copy of the directory, a checkpoint
/// with another event id, another timestamp, a position past the log, garbage, a
/// projection state that does not restore, or an older matching one: the server starts,
/// logs what it did with the checkpoint, and answers exactly as before; and a clean stop
/// then (nothing appended) checkpoints the last position.
#[test]
fn clean_restart_uses_the_checkpoint_and_answers_the_same() {
    let test = "clean_restart_uses_the_checkpoint_and_answers_the_same";
    let seed = test_seed(test);
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    let ctx = format!("{test}, {SEED_VAR}={seed}");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with(&["--data-dir", data.to_str().unwrap()]);

    // 66,000 events; the seal of the first chunk writes a checkpoint.
    load(&server, 1, seed, 66, &ctx);
    wait_sealed(&server, CHUNK_EVENTS, &ctx);
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let early = loop {
        if let Ok(bytes) = std::fs::read(data.join("CHECKPOINT")) {
            break bytes;
        }
        assert!(Instant::now() < deadline, "{ctx}: no CHECKPOINT after the seal: {:?}", names(&data));
        std::thread::sleep(Duration::from_millis(20));
    };
    let early_position = serde_json::from_slice::<Value>(&early).unwrap()["position"].as_u64().unwrap();
    assert!(
        (CHUNK_EVENTS as u64..=66_000).contains(&early_position),
        "{ctx}: the checkpoint after the seal is at {early_position}"
    );
    load(&server, 2, seed, 4, &ctx);
    let log = events_after(&server, 0, &ctx);
    assert_eq!(log.len(), 70_000, "{ctx}");
    let probes = probes(&log, &mut rng);
    let before = answers(&server, &probes, &ctx);
    server.signal("TERM");
    assert_eq!(server.wait_exit(EXIT_TIMEOUT).code(), Some(0), "{ctx}: SIGTERM");
    drop(server);

    // The clean stop sealed the rest; its checkpoint names the last event.
    assert_eq!(check_archive(&data, 70_000, &ctx), [CHUNK_EVENTS, 70_000 - CHUNK_EVENTS], "{ctx}");
    let checkpoint: Value = serde_json::from_slice(&std::fs::read(data.join("CHECKPOINT")).unwrap()).unwrap();
    let last = &log[69_999];
    assert_eq!(checkpoint["position"], 70_000, "{ctx}: the checkpoint of a clean stop");
    assert_eq!(checkpoint["event_id"], last["id"], "{ctx}: the checkpoint's event id");
    assert_eq!(
        checkpoint["timestamp_micros"],
        micros(last["timestamp"].as_str().unwrap()),
        "{ctx}: the checkpoint's timestamp, for {last}"
    );
    let projections: Vec<&String> = checkpoint["projections"].as_object().unwrap().keys().collect();
    assert_eq!(projections, ["entity_snapshots", "event_counters"], "{ctx}");
    let chunk_bytes: u64 = names(&data.join("chunks"))
        .iter()
        .map(|name| std::fs::metadata(data.join("chunks").join(name)).unwrap().len())
        .sum();
    let pristine = tempfile::tempdir().unwrap();
    copy_dir(&data, pristine.path());

    // A clean restart restores the projections from the checkpoint and answers the same,
    // also after more appends.
    let restart = Instant::now();
    let server = Server::start_with(&["--data-dir", data.to_str().unwrap()]);
    let restart = restart.elapsed();
    assert_recovered_line(&server, 70_000, &ctx);
    assert!(
        has_line(&server, &["restored projections from a checkpoint", "position=70000"]),
        "{ctx}: the checkpoint was not used:\n{}",
        server.startup_log.join("\n")
    );
    assert_same_answers(&probes, &before, &answers(&server, &probes, &ctx), &format!("{ctx}, clean restart"));
    assert_all_sealed(&server, chunk_bytes, &ctx);
    let more = load(&server, 3, seed, 2, &ctx);
    let touched: BTreeSet<String> =
        more.iter().flat_map(|r| &r.bodies).map(|b| b["entity_id"].as_str().unwrap().to_string()).collect();
    assert_snapshots_are_states(
        &server,
        touched.iter().step_by(5),
        &format!("{ctx}, appends after a restore"),
    );
    drop(server);

    // Damaged or older checkpoints: the server starts, says what it did, answers the same.
    let random_id = rng.uuid();
    let garbage: Vec<u8> = (0..rng.range(1, 4096)).map(|_| rng.next() as u8).collect();
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut checkpoint = checkpoint.clone();
        f(&mut checkpoint);
        serde_json::to_vec(&checkpoint).unwrap()
    };
    const MISMATCH: &str = "ignoring a projection checkpoint that does not match the log";
    let older = format!("position={early_position}");
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        ("another event id", edit(&|c| c["event_id"] = json!(random_id)), vec![MISMATCH]),
        (
            "another timestamp",
            edit(&|c| c["timestamp_micros"] = json!(c["timestamp_micros"].as_i64().unwrap() + 1)),
            vec![MISMATCH],
        ),
        ("a position past the log", edit(&|c| c["position"] = json!(70_001)), vec![MISMATCH]),
        ("garbage", garbage, vec!["ignoring a checkpoint that does not read"]),
        (
            "event counters that do not restore (after entity snapshots that do)",
            edit(&|c| c["projections"]["event_counters"][EVENT_TYPES[0]] = json!("many")),
            vec!["ignoring a projection checkpoint that does not restore"],
        ),
        ("the older checkpoint written after the seal", early, vec!["restored projections", &older]),
    ];
    let mut not_checkpointed = Vec::new();
    for (case, bytes, expected) in cases {
        let ctx = format!("{ctx}, a CHECKPOINT with {case}");
        let copy = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), copy.path());
        std::fs::write(copy.path().join("CHECKPOINT"), &bytes).unwrap();
        let server = Server::start_with(&["--data-dir", copy.path().to_str().unwrap()]);
        let log = server.startup_log.join("\n");
        assert!(has_line(&server, &expected), "{ctx}: no line with {expected:?}:\n{log}");
        if !expected.contains(&"restored projections") {
            assert!(!log.contains("restored projections"), "{ctx}: a damaged checkpoint was used:\n{log}");
        }
        assert_recovered_line(&server, 70_000, &ctx);
        assert_same_answers(&probes, &before, &answers(&server, &probes, &ctx), &ctx);
        assert_all_sealed(&server, chunk_bytes, &ctx);
        // A clean stop checkpoints the last position, so that the next start replays
        // nothing: also when nothing was appended since the start, which rebuilt the
        // projections by replay. The same log, the same state: the same checkpoint as
        // the first clean stop's. Checked after the other cases ran, to report them all.
        server.signal("TERM");
        assert_eq!(server.wait_exit(EXIT_TIMEOUT).code(), Some(0), "{ctx}: SIGTERM");
        let after = std::fs::read(copy.path().join("CHECKPOINT")).unwrap();
        let after: Value = serde_json::from_slice(&after).unwrap_or(Value::Null);
        if after != checkpoint {
            not_checkpointed.push(format!(
                "{case}: after a start and a clean stop, CHECKPOINT {} (position {}, id {}, timestamp {})",
                if after.is_null() { "does not read" } else { "differs from the clean stop's" },
                after["position"],
                after["event_id"],
                after["timestamp_micros"]
            ));
        }
    }
    assert!(
        not_checkpointed.is_empty(),
        "{ctx}: a clean stop did not checkpoint the last position:\n{}",
        not_checkpointed.join("\n")
    );
    eprintln!(
        "{test}: {SEED_VAR}={seed}: {} probes, clean restart in {restart:?}, {:?}",
        probes.len(),
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// 4: a damaged chunk
// ---------------------------------------------------------------------------------------

/// Test 4: a chunk file cut short, missing, or with bytes flipped in its middle is
/// corruption: the binary exits non-zero without serving, names the chunk file, and
/// changes no file. Every case runs, so that a failure reports them all; a server that
/// starts anyway is compared with what it served before, to say what it got wrong.
#[test]
fn a_damaged_chunk_refuses_to_start_and_changes_nothing() {
    let test = "a_damaged_chunk_refuses_to_start_and_changes_nothing";
    let seed = test_seed(test);
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    let ctx = format!("{test}, {SEED_VAR}={seed}");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with(&["--data-dir", data.to_str().unwrap()]);
    // A clean stop seals the 20,000 events as one (small) chunk.
    load(&server, 1, seed, 20, &ctx);
    let served_before = events_after(&server, 0, &ctx);
    server.signal("TERM");
    assert_eq!(server.wait_exit(EXIT_TIMEOUT).code(), Some(0), "{ctx}: SIGTERM");
    drop(server);
    assert_eq!(check_archive(&data, 20_000, &ctx), [20_000], "{ctx}");
    let name = chunk_name(1, 20_000);
    let chunk = std::fs::read(data.join("chunks").join(&name)).unwrap();
    let len = chunk.len();

    let mut cases: Vec<(String, Option<Vec<u8>>)> = Vec::new();
    let cut = rng.range(len as u64 / 3, 2 * len as u64 / 3) as usize;
    cases.push((format!("cut to {cut} of {len} bytes"), Some(chunk[..cut].to_vec())));
    cases.push((format!("its last byte cut ({len} bytes)"), Some(chunk[..len - 1].to_vec())));
    cases.push(("missing".to_string(), None));
    for _ in 0..6 {
        let at = rng.range(len as u64 / 3, 2 * len as u64 / 3) as usize;
        let bit = rng.below(8);
        let mut damaged = chunk.clone();
        damaged[at] ^= 1 << bit;
        cases.push((format!("bit {bit} of byte {at} (of {len}) flipped"), Some(damaged)));
    }
    let at = rng.range(len as u64 / 3, 2 * len as u64 / 3) as usize;
    let mut damaged = chunk.clone();
    damaged[at..at + 16].iter_mut().for_each(|b| *b = !*b);
    cases.push((format!("bytes {at}..{} (of {len}) inverted", at + 16), Some(damaged)));

    let mut failed = Vec::new();
    for (case, bytes) in cases {
        let ctx = format!("{ctx}, the chunk {case}");
        let copy = tempfile::tempdir().unwrap();
        copy_dir(&data, copy.path());
        let path = copy.path().join("chunks").join(&name);
        match bytes {
            Some(bytes) => std::fs::write(&path, bytes).unwrap(),
            None => std::fs::remove_file(&path).unwrap(),
        }
        let before = files_of(copy.path());
        let child = spawn(&["--addr", "127.0.0.1:0", "--data-dir", copy.path().to_str().unwrap()], &[]);
        let problem = match Server::try_attach(child) {
            Err((status, stderr)) if status.success() => Some(format!("exit status {status:?}:\n{stderr}")),
            Err((_, stderr)) if !stderr.contains(&name) => {
                // anyhow's report (the error, "Caused by:", the cause), or a panic's.
                let after = |start: &str, label: &str| {
                    let line = stderr.lines().skip_while(|line| !line.starts_with(start)).nth(1);
                    line.map(|line| format!("{label} {}", line.trim()))
                };
                let cause = after("Caused by:", "caused by:")
                    .or_else(|| after("thread 'main'", "it panicked:"))
                    .unwrap_or_default();
                Some(format!("refused, but stderr does not name {name}: {cause}\n{stderr}"))
            }
            Err(_) => None,
            Ok(server) => {
                let served = events_after(&server, 0, &ctx);
                let altered: Vec<String> = served
                    .iter()
                    .zip(&served_before)
                    .filter(|(now, was)| now != was)
                    .map(|(now, was)| format!("position {}: now {now}, was {was}", was["position"]))
                    .collect();
                drop(server);
                Some(format!(
                    "the server started and serves {} events, {} of the first {} altered{}",
                    served.len(),
                    altered.len(),
                    served_before.len(),
                    altered.iter().take(3).map(|a| format!("\n  {a}")).collect::<String>()
                ))
            }
        };
        let problem = match problem {
            None if files_of(copy.path()) != before => Some("the refused start changed files".to_string()),
            problem => problem,
        };
        if let Some(problem) = problem {
            eprintln!("{ctx}: {problem}");
            failed.push(format!("{case}: {}", problem.lines().next().unwrap_or_default()));
        }
    }
    eprintln!("{test}: {SEED_VAR}={seed}: {:?}", started.elapsed());
    assert!(
        failed.is_empty(),
        "{ctx}: not refused as the format says (details above):\n{}",
        failed.join("\n")
    );
}
