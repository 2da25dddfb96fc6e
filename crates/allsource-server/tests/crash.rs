//! Crash and fault tests: the real `allsource` binary on real files in temporary
//! directories, killed with SIGKILL under concurrent load, restarted on damaged data
//! directories, and run out of file space. They check the "Durability" section of the
//! HTTP contract and the crash protocol of `docs/storage-format.md` from outside.
//!
//! Randomness (what clients send, when the kill comes, which byte is damaged) comes from
//! one seed per test, printed at its start (run with `--nocapture` to see it on
//! success) and part of every assertion message. Set `ALLSOURCE_CRASH_SEED=<u64>` to
//! replay a run's choices (where the kill lands in the server's work still depends on
//! scheduling).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::model::*;
use common::process::{spawn, try_send_whole, Server};
use common::{all_events_paged, Req};
use serde_json::{json, Value};

/// Concurrent client threads during a crash cycle.
const CLIENT_THREADS: usize = 6;
/// Acknowledged appends to wait for before the random delay that picks the kill moment.
const ACKS_BEFORE_KILL: usize = 20;
/// Entities every client thread writes to (one needs percent-encoding in a path).
const SHARED_ENTITIES: [&str; 4] = ["shared-0", "shared-1", "shared/ü 2", "shared-3"];
const EVENT_TYPES: [&str; 3] = ["crash.created", "crash.updated", "crash.noted"];

/// A request of client `thread`: a single event or a batch of 1..=5, on shared and
/// private entities, some with client ids (some in upper case), some with an
/// `expected_version` from what the client last saw (`versions`).
fn make_request(
    rng: &mut Rng,
    thread: usize,
    label: &str,
    versions: &HashMap<String, u64>,
) -> (bool, Vec<Value>) {
    let batch = rng.chance(50);
    let count = if batch { rng.range(1, 5) } else { 1 };
    let ids = rng.id_mode();
    let mut in_batch: HashMap<String, u64> = HashMap::new();
    let mut bodies = Vec::new();
    for item in 0..count {
        let entity = if rng.chance(40) {
            rng.pick(&SHARED_ENTITIES).to_string()
        } else {
            format!("t{thread}-{}", rng.below(3))
        };
        let tag = format!("{label}i{item}");
        let mut body = json!({
            "event_type": rng.pick(&EVENT_TYPES),
            "entity_id": entity,
            "payload": payload(rng, &tag),
        });
        if rng.chance(50) {
            body["metadata"] = json!({"thread": thread, "label": label});
        }
        if let Some(id) = rng.client_id(ids, 20) {
            body["id"] = json!(id);
        }
        let current = in_batch.get(&entity).or(versions.get(&entity)).copied().unwrap_or(0);
        if rng.chance(30) {
            body["expected_version"] = json!(current);
        }
        in_batch.insert(entity, current + 1);
        bodies.push(body);
    }
    (batch, bodies)
}

/// Learns entity versions from an append's outcome.
fn learn_versions(versions: &mut HashMap<String, u64>, batch: bool, bodies: &[Value], outcome: &Outcome) {
    match outcome {
        Outcome::Acked { reply, .. } => {
            let events = if batch {
                reply["events"].as_array().cloned().unwrap_or_default()
            } else {
                vec![reply.clone()]
            };
            for event in events {
                if let (Some(entity), Some(version)) =
                    (event["entity_id"].as_str(), event["version"].as_u64())
                {
                    versions.insert(entity.to_string(), version);
                }
            }
        }
        Outcome::Refused { status: 409, body, .. } => {
            let Ok(body) = serde_json::from_str::<Value>(body) else { return };
            let Some(current) = body["error"]["current_version"].as_u64() else { return };
            let message = body["error"]["message"].as_str().unwrap_or_default();
            // A batch's error names its item; the version counts earlier items of the batch.
            let index = if batch {
                let Some(index) = message
                    .strip_prefix("batch item ")
                    .and_then(|rest| rest.split(':').next())
                    .and_then(|n| n.parse::<usize>().ok())
                else {
                    return;
                };
                index
            } else {
                0
            };
            let Some(entity) = bodies.get(index).and_then(|b| b["entity_id"].as_str()) else { return };
            let earlier = bodies[..index].iter().filter(|b| b["entity_id"] == entity).count() as u64;
            if let Some(stored) = current.checked_sub(earlier) {
                versions.insert(entity.to_string(), stored);
            }
        }
        _ => {}
    }
}

/// One client thread: appends until told to stop or until its connection fails (the
/// server is gone), recording every request and its outcome.
fn client_thread(
    addr: SocketAddr,
    thread: usize,
    cycle: usize,
    seed: u64,
    mut versions: HashMap<String, u64>,
    stop: &AtomicBool,
    progress: &Progress,
) -> Vec<Sent> {
    let mut rng = Rng::new(seed ^ splitmix((cycle as u64) << 16 | thread as u64));
    let mut sent = Vec::new();
    for request in 0..100_000 {
        if stop.load(Ordering::Acquire) {
            break;
        }
        let label = format!("c{cycle}t{thread}r{request}");
        let (batch, bodies) = make_request(&mut rng, thread, &label, &versions);
        let outcome = send_append(addr, batch, &bodies);
        learn_versions(&mut versions, batch, &bodies, &outcome);
        let unknown = matches!(outcome, Outcome::Unknown(_));
        if matches!(outcome, Outcome::Acked { .. }) {
            progress.bump();
        }
        sent.push(Sent { label, batch, bodies, outcome });
        if unknown {
            break;
        }
    }
    sent
}

// ---------------------------------------------------------------------------------------
// Checking a recovered log against the model
// ---------------------------------------------------------------------------------------

/// Appends one event after recovery: it continues at the next position, with the next
/// version of its entity and a timestamp no earlier than the last.
fn append_after_recovery(server: &Server, model: &mut Model, log: &[Value], label: &str, ctx: &str) {
    let entity = SHARED_ENTITIES[0];
    let body = json!({"event_type": "crash.after", "entity_id": entity, "payload": {"tag": label}});
    let stored = call_json(server, append_request(false, std::slice::from_ref(&body)), 201, ctx);
    assert_eq!(stored["position"], log.len() + 1, "{ctx}: the first append after recovery: {stored}");
    let version = entity_versions(log).get(entity).copied().unwrap_or(0);
    assert_eq!(stored["version"], version + 1, "{ctx}: the first append after recovery: {stored}");
    if let Some(last) = log.last() {
        assert!(
            stored["timestamp"].as_str() >= last["timestamp"].as_str(),
            "{ctx}: the first append after recovery {stored} is earlier than the last recovered {last}"
        );
    }
    model.requests.push(Sent {
        label: label.to_string(),
        batch: false,
        bodies: vec![body],
        outcome: Outcome::Acked { status: 201, reply: stored },
    });
}

// ---------------------------------------------------------------------------------------
// 1 and 2: kill -9 under concurrent load, restart, check, repeat
// ---------------------------------------------------------------------------------------

/// Runs the clients against `server`, kills it with SIGKILL after at least
/// `ACKS_BEFORE_KILL` acknowledgements and a further `delay`, and returns every request.
fn load_and_kill(
    server: &Server,
    cycle: usize,
    seed: u64,
    versions: &HashMap<String, u64>,
    delay: Duration,
    ctx: &str,
) -> Vec<Sent> {
    let stop = AtomicBool::new(false);
    let progress = Progress::default();
    let addr = server.addr;
    std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENT_THREADS)
            .map(|thread| {
                let versions = versions.clone();
                let (stop, progress) = (&stop, &progress);
                scope.spawn(move || client_thread(addr, thread, cycle, seed, versions, stop, progress))
            })
            .collect();
        let loaded = progress.wait_for(ACKS_BEFORE_KILL, Duration::from_secs(20));
        if loaded {
            // Not a synchronisation: this only chooses the moment of the crash.
            std::thread::sleep(delay);
        }
        server.signal("KILL");
        stop.store(true, Ordering::Release);
        let status = server.wait_exit(EXIT_TIMEOUT);
        let requests: Vec<Sent> = clients.into_iter().flat_map(|client| client.join().unwrap()).collect();
        assert!(loaded, "{ctx}: fewer than {ACKS_BEFORE_KILL} appends were acknowledged within 20 s");
        assert_eq!(status.signal(), Some(9), "{ctx}: the server did not die of SIGKILL: {status:?}");
        requests
    })
}

/// The size of a WAL segment, and so of a spare (docs/storage-format.md).
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Appends batches of 1 MiB until the server writes into a spare WAL segment
/// (docs/storage-format.md, "Spare segments"): once its first segment holds 16 MiB, a
/// 64 MiB file of zeros is made, and the segment is closed early to go on in it. Returns
/// the events appended, acknowledged, in the model.
fn fill_into_a_spare(server: &Server, data: &Path, model: &mut Model, ctx: &str) -> usize {
    let pad = "z".repeat(4_000);
    let deadline = Instant::now() + Duration::from_secs(120);
    for batch in 0..400 {
        let bodies: Vec<Value> = (0..250)
            .map(|i| {
                json!({"event_type": "crash.fill", "entity_id": format!("fill-{}", i % 16),
                       "payload": {"tag": format!("fill-b{batch}i{i}"), "pad": pad}})
            })
            .collect();
        let reply = call_json(server, append_request(true, &bodies), 201, ctx);
        model.requests.push(Sent {
            label: format!("fill-b{batch}"),
            batch: true,
            bodies,
            outcome: Outcome::Acked { status: 201, reply },
        });
        // A spare in use: a later segment that is records, then zeros to 64 MiB.
        let segments = segments(data);
        let last = segments.last().unwrap();
        if segments.len() >= 2 && std::fs::metadata(last).unwrap().len() == SEGMENT_BYTES {
            let bytes = std::fs::read(last).unwrap();
            let (records, end) = wal_records(&bytes);
            if !records.is_empty() && bytes[end..].iter().all(|&b| b == 0) {
                return (batch + 1) * 250;
            }
        }
        assert!(Instant::now() < deadline, "{ctx}: no spare segment after {batch} batches");
    }
    panic!("{ctx}: no spare segment after 400 MiB");
}

/// Kills the server under load `cycles` times on one data directory, checking after
/// each restart everything the contract promises about what survives. With `spare`,
/// the store first holds enough to write into a spare WAL segment, so that the kills
/// land on writes over zeros.
fn kill_cycles(test: &str, sync: &str, cycles: usize, spare: bool) {
    let seed = test_seed(test);
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let args = ["--data-dir", data, "--sync", sync];
    let mut rng = Rng::new(seed);
    let mut model = Model::default();
    let mut server = Server::start_with(&args);
    let mut log: Vec<Value> = Vec::new();
    if spare {
        let ctx = format!("{test}, {SEED_VAR}={seed}, filling");
        let filled = fill_into_a_spare(&server, Path::new(data), &mut model, &ctx);
        log = all_events_paged(&server, "");
        assert_eq!(log.len(), filled, "{ctx}");
    }
    for cycle in 1..=cycles {
        let ctx = format!("{test}, {SEED_VAR}={seed}, cycle {cycle}");
        let delay = Duration::from_millis(rng.range(50, 400));
        let requests = load_and_kill(&server, cycle, seed, &entity_versions(&log), delay, &ctx);
        let sent = requests.len();
        let acked: usize = requests.iter().map(Sent::acked_events).sum();
        let this_cycle: HashSet<String> = requests.iter().map(|r| r.label.clone()).collect();
        model.requests.extend(requests);
        drop(server);

        server = Server::start_with(&args);
        log = all_events_paged(&server, "");
        assert_recovered_line(&server, log.len(), &ctx);
        let mut unknown = check_log(&model, &log, &[(409, "ConcurrencyConflict")], &ctx);
        unknown.retain(|label, _| this_cycle.contains(label));
        check_reads(&server, &log, false, 1, &ctx);
        let stats = call_json(&server, Req::get("/api/v1/stats"), 200, &ctx);
        assert_eq!(stats["total_ingested"], 0, "{ctx}: {stats}");
        assert_eq!(stats["storage"]["sync"], sync, "{ctx}: {stats}");
        let kept = unknown.values().filter(|&&kept| kept).count();
        eprintln!(
            "{ctx}: killed after {delay:?}: {sent} requests, {acked} events acknowledged, {} events recovered, \
             {} requests of unknown outcome ({kept} kept by recovery)",
            log.len(),
            unknown.len()
        );

        append_after_recovery(&server, &mut model, &log, &format!("c{cycle}-after"), &ctx);
        let retried = retry_unknown(&server, &mut model, &unknown, &ctx);
        log = all_events_paged(&server, "");
        check_log(&model, &log, &[(409, "ConcurrencyConflict")], &format!("{ctx}, after {retried} retries"));
    }

    // A clean stop keeps the very same log.
    let ctx = format!("{test}, {SEED_VAR}={seed}, after a clean stop");
    server.signal("TERM");
    assert_eq!(server.wait_exit(EXIT_TIMEOUT).code(), Some(0), "{ctx}");
    drop(server);
    let server = Server::start_with(&args);
    assert_recovered_line(&server, log.len(), &ctx);
    assert_eq!(all_events_paged(&server, ""), log, "{ctx}: the log changed");
    eprintln!(
        "{test}: {SEED_VAR}={seed}: {} requests ({} acknowledged, {} refused, {} unknown), {} events, {:?}",
        model.requests.len(),
        model.count(|o| matches!(o, Outcome::Acked { .. })),
        model.count(|o| matches!(o, Outcome::Refused { .. })),
        model.count(|o| matches!(o, Outcome::Unknown(_))),
        log.len(),
        started.elapsed()
    );
}

/// Test 1: kill -9 at a random moment under concurrent appends, three times on one
/// directory (so recovered data is recovered again), with `--sync always`.
#[test]
fn kill_9_under_load_loses_nothing_acknowledged() {
    kill_cycles("kill_9_under_load_loses_nothing_acknowledged", "always", 3, false);
}

/// Test 1b: the same while the WAL writes over the zeros of a spare segment, the way
/// every segment after a store's first 16 MiB is written.
#[test]
fn kill_9_while_writing_over_a_spare_segment_loses_nothing_acknowledged() {
    kill_cycles("kill_9_while_writing_over_a_spare_segment_loses_nothing_acknowledged", "always", 3, true);
}

/// Test 2: with `--sync none` an acknowledged write is in the kernel's page cache,
/// which survives the death of the process.
#[test]
fn kill_9_with_sync_none_loses_nothing_acknowledged() {
    kill_cycles("kill_9_with_sync_none_loses_nothing_acknowledged", "none", 1, false);
}

// ---------------------------------------------------------------------------------------
// WAL files, read with the test's own reading of docs/storage-format.md
// ---------------------------------------------------------------------------------------

const SEGMENT_HEADER_BYTES: usize = 32;
const RECORD_HEADER_BYTES: usize = 16;
const RECORD_MAGIC: u32 = 0xA115_0C0D;

/// CRC32C (Castagnoli), bit by bit: the format's checksum, without a dependency.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}

/// A record checksum of a segment (format 2) whose first position is `first`: the
/// CRC32C of that position's 8 bytes, then `bytes` (docs/storage-format.md, "Records").
fn record_crc(first: u64, bytes: &[u8]) -> u32 {
    crc32c(&[&first.to_le_bytes()[..], bytes].concat())
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// A segment header naming `first_position`.
fn segment_header(first_position: u64) -> Vec<u8> {
    let mut header = vec![0u8; SEGMENT_HEADER_BYTES];
    header[0..8].copy_from_slice(b"ALLSWAL\0");
    header[8..12].copy_from_slice(&2u32.to_le_bytes());
    header[16..24].copy_from_slice(&first_position.to_le_bytes());
    let crc = crc32c(&header[0..24]);
    header[24..28].copy_from_slice(&crc.to_le_bytes());
    header
}

fn segment_name(first_position: u64) -> String {
    format!("{first_position:020}.wal")
}

/// One record of a segment, as its framing says.
#[derive(Debug, Clone, Copy)]
struct WalRecord {
    /// Where the record starts in the segment.
    offset: usize,
    /// Its length, header included.
    len: usize,
    /// Its event count and first position, from its body.
    count: u64,
    first: u64,
}

/// The valid records of a segment, walked by their framing with both CRCs checked,
/// up to the first one that does not fit or fails a check; and the end of the last
/// valid one. Asserts a valid segment header (which also checks the test's CRC32C).
fn wal_records(bytes: &[u8]) -> (Vec<WalRecord>, usize) {
    assert_eq!(&bytes[..8], b"ALLSWAL\0", "not a segment");
    assert_eq!(
        crc32c(&bytes[..24]),
        u32_at(bytes, 24),
        "the test's CRC32C disagrees with the segment header"
    );
    assert_eq!(
        segment_header(u64_at(bytes, 16)),
        bytes[..SEGMENT_HEADER_BYTES],
        "the header is not as documented"
    );
    let segment_first = u64_at(bytes, 16);
    let mut records = Vec::new();
    let mut at = SEGMENT_HEADER_BYTES;
    while at + RECORD_HEADER_BYTES <= bytes.len() {
        let header = &bytes[at..at + RECORD_HEADER_BYTES];
        if u32_at(header, 0) != RECORD_MAGIC || record_crc(segment_first, &header[..12]) != u32_at(header, 12)
        {
            break;
        }
        let body_len = u32_at(header, 4) as usize;
        let Some(body) = bytes.get(at + RECORD_HEADER_BYTES..at + RECORD_HEADER_BYTES + body_len) else {
            break;
        };
        if record_crc(segment_first, body) != u32_at(header, 8) {
            break;
        }
        let (count, first) = (u64::from(u32_at(body, 4)), u64_at(body, 8));
        records.push(WalRecord { offset: at, len: RECORD_HEADER_BYTES + body_len, count, first });
        at += RECORD_HEADER_BYTES + body_len;
    }
    (records, at)
}

/// `bytes` with one random bit of the byte at `at` flipped.
fn flip_bit(rng: &mut Rng, at: usize, bytes: &[u8]) -> Vec<u8> {
    let mut damaged = bytes.to_vec();
    damaged[at] ^= 1 << rng.below(8);
    damaged
}

/// Recomputes a record's body and header CRCs after its body was edited: a record
/// whose checksums pass but whose content is wrong.
fn reseal_record(bytes: &mut [u8], record: WalRecord) {
    let segment_first = u64_at(bytes, 16);
    let body = record.offset + RECORD_HEADER_BYTES..record.offset + record.len;
    let body_crc = record_crc(segment_first, &bytes[body]);
    bytes[record.offset + 8..record.offset + 12].copy_from_slice(&body_crc.to_le_bytes());
    let header_crc = record_crc(segment_first, &bytes[record.offset..record.offset + 12]);
    bytes[record.offset + 12..record.offset + 16].copy_from_slice(&header_crc.to_le_bytes());
}

/// The segment files of a data directory, sorted.
fn segments(data: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data.join("wal"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "wal"))
        .collect();
    files.sort();
    files
}

/// A copy of data directory `from` (its WAL; no lock file) in a new temporary dir.
fn copy_data_dir(from: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("wal")).unwrap();
    for segment in segments(from) {
        std::fs::copy(&segment, data.join("wal").join(segment.file_name().unwrap())).unwrap();
    }
    (dir, data)
}

fn data_args(data: &Path) -> [&str; 2] {
    ["--data-dir", data.to_str().unwrap()]
}

/// A data directory holding 10 single events and then a batch of 3 (the last record),
/// written by a server that was then stopped cleanly; and its events.
fn cleanly_stopped_dir(rng: &mut Rng, ctx: &str) -> (tempfile::TempDir, PathBuf, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with(&data_args(&data));
    let versions = HashMap::new();
    for n in 0..10 {
        let (_, bodies) = make_request(rng, 0, &format!("s{n}"), &versions);
        let mut body = bodies[0].clone();
        body.as_object_mut().unwrap().remove("expected_version");
        call_json(&server, append_request(false, &[body]), 201, ctx);
    }
    let batch: Vec<Value> = (0..3)
        .map(|i| json!({"event_type": "t", "entity_id": "batch", "payload": payload(rng, &format!("b{i}"))}))
        .collect();
    call_json(&server, append_request(true, &batch), 201, ctx);
    let events = all_events_paged(&server, "");
    assert_eq!(events.len(), 13, "{ctx}");
    server.signal("TERM");
    assert_eq!(server.wait_exit(EXIT_TIMEOUT).code(), Some(0), "{ctx}: SIGTERM");
    drop(server);
    let files = segments(&data);
    assert_eq!(files.len(), 1, "{ctx}: {files:?}");
    assert!(files[0].ends_with(segment_name(1)), "{ctx}: {files:?}");
    let bytes = std::fs::read(&files[0]).unwrap();
    let (records, end) = wal_records(&bytes);
    assert_eq!(end, bytes.len(), "{ctx}: a cleanly stopped segment ends with a whole record");
    assert_eq!(records.len(), 11, "{ctx}: one record per acknowledged request: {records:?}");
    let last = records[10];
    assert_eq!((last.count, last.first), (3, 11), "{ctx}: the batch is one record: {last:?}");
    (dir, data, events)
}

// ---------------------------------------------------------------------------------------
// 3: a torn tail is cut, logged, and appending goes on
// ---------------------------------------------------------------------------------------

/// Test 3: damage to the tail of the last segment that a crash can leave (garbage after
/// the last record, the last record cut short, the last record garbled with nothing
/// after it) is cut at start-up, with a log line giving the byte count; every event
/// before the damaged record is kept, and appends continue. Zeros after the last record
/// are the rest of a spare segment: nothing is cut, and appends go over them.
#[test]
fn a_torn_tail_is_cut_and_logged_and_appends_continue() {
    let test = "a_torn_tail_is_cut_and_logged_and_appends_continue";
    let seed = test_seed(test);
    let mut rng = Rng::new(seed);
    let ctx = format!("{test}, {SEED_VAR}={seed}");
    let (_dir, original, events) = cleanly_stopped_dir(&mut rng, &ctx);
    let bytes = std::fs::read(&segments(&original)[0]).unwrap();
    let last = *wal_records(&bytes).0.last().unwrap();

    let garbage: Vec<u8> = (0..rng.range(1, 200)).map(|_| rng.next() as u8).collect();
    let cut_body = last.offset + rng.range(RECORD_HEADER_BYTES as u64, last.len as u64 - 1) as usize;
    let cut_header = last.offset + rng.range(1, RECORD_HEADER_BYTES as u64 - 1) as usize;
    let flip = last.offset + rng.range(RECORD_HEADER_BYTES as u64, last.len as u64 - 1) as usize;
    // (case, the damaged segment, events kept, where the segment is cut: none for zeros)
    let cases: Vec<(String, Vec<u8>, usize, Option<usize>)> = vec![
        (
            format!("{} bytes of garbage appended", garbage.len()),
            [&bytes[..], &garbage].concat(),
            13,
            Some(bytes.len()),
        ),
        ("4096 zero bytes appended".to_string(), [&bytes[..], &[0u8; 4096]].concat(), 13, None),
        (
            format!("the last record cut at byte {cut_body}, in its body"),
            bytes[..cut_body].to_vec(),
            10,
            Some(last.offset),
        ),
        (
            format!("the last record cut at byte {cut_header}, in its header"),
            bytes[..cut_header].to_vec(),
            10,
            Some(last.offset),
        ),
        (
            format!("a bit flipped at byte {flip} of the last record"),
            flip_bit(&mut rng, flip, &bytes),
            10,
            Some(last.offset),
        ),
    ];
    for (case, damaged, kept, cut_at) in cases {
        let ctx = format!("{ctx}, {case}");
        let (_copy, data) = copy_data_dir(&original);
        let segment = data.join("wal").join(segment_name(1));
        std::fs::write(&segment, &damaged).unwrap();

        let server = Server::start_with(&data_args(&data));
        let log = server.startup_log.join("\n");
        let cut_line =
            server.startup_log.iter().find(|line| line.contains("cutting a torn tail from the WAL"));
        if let Some(cut_at) = cut_at {
            let cut_line =
                cut_line.unwrap_or_else(|| panic!("{ctx}: no torn-tail line in the start-up log:\n{log}"));
            let cut = damaged.len() - cut_at;
            assert!(
                cut_line.contains(&format!("bytes_cut={cut}")),
                "{ctx}: expected {cut} bytes cut: {cut_line}"
            );
            assert!(
                cut_line.contains(&format!("offset={cut_at}")),
                "{ctx}: expected the cut at {cut_at}: {cut_line}"
            );
            assert!(
                cut_line.contains(&segment_name(1)),
                "{ctx}: the line should name the segment: {cut_line}"
            );
        } else {
            assert!(cut_line.is_none(), "{ctx}: zeros are not a torn tail:\n{log}");
        }
        assert_recovered_line(&server, kept, &ctx);
        assert_eq!(
            std::fs::metadata(&segment).unwrap().len(),
            cut_at.unwrap_or(damaged.len()) as u64,
            "{ctx}: the segment was not cut where it should be"
        );
        assert_eq!(all_events_paged(&server, ""), events[..kept], "{ctx}: the kept events differ");
        let stats = call_json(&server, Req::get("/api/v1/stats"), 200, &ctx);
        assert_eq!(stats["total_events"], kept, "{ctx}: {stats}");

        let mut model = Model::default();
        append_after_recovery(&server, &mut model, &events[..kept], "after-cut", &ctx);
        if cut_at.is_none() {
            // The record went over the zeros: the file kept its length.
            let grown = std::fs::metadata(&segment).unwrap().len();
            assert_eq!(grown, damaged.len() as u64, "{ctx}: the append did not go over the zeros");
        }
        let after = all_events_paged(&server, "");
        server.signal("TERM");
        assert_eq!(server.wait_exit(EXIT_TIMEOUT).code(), Some(0), "{ctx}: SIGTERM");
        drop(server);

        // The cut was for good: the next start finds a clean log.
        let server = Server::start_with(&data_args(&data));
        let log = server.startup_log.join("\n");
        assert!(!log.contains("torn tail"), "{ctx}: a second cut after restart:\n{log}");
        assert_recovered_line(&server, kept + 1, &ctx);
        assert_eq!(all_events_paged(&server, ""), after, "{ctx}: after a restart");
    }
}

// ---------------------------------------------------------------------------------------
// 4: damage that is not a torn tail: refuse to start, change nothing
// ---------------------------------------------------------------------------------------

/// Test 4: a flipped bit in a record followed by valid records, in a segment header,
/// or in the last record of a segment that is not the last, and records whose
/// checksums pass but whose positions are wrong, are corruption: the binary exits
/// non-zero with the file and byte offset, and leaves every file as it was.
#[test]
fn corruption_before_the_tail_refuses_to_start_and_changes_nothing() {
    let test = "corruption_before_the_tail_refuses_to_start_and_changes_nothing";
    let seed = test_seed(test);
    let mut rng = Rng::new(seed);
    let ctx = format!("{test}, {SEED_VAR}={seed}");
    let (_dir, original, _) = cleanly_stopped_dir(&mut rng, &ctx);
    let bytes = std::fs::read(&segments(&original)[0]).unwrap();
    let records = wal_records(&bytes).0;
    let victim = records[1 + rng.below(8) as usize];
    let last = records[10];
    let first = segment_name(1);

    let in_body =
        victim.offset + RECORD_HEADER_BYTES + rng.below((victim.len - RECORD_HEADER_BYTES) as u64) as usize;
    let in_header = victim.offset + rng.below(RECORD_HEADER_BYTES as u64) as usize;
    let in_segment_header = rng.below(SEGMENT_HEADER_BYTES as u64) as usize;
    let in_last = last.offset + rng.below(last.len as u64) as usize;
    let mut wrong_position = bytes.clone();
    let at = last.offset + RECORD_HEADER_BYTES + 8;
    wrong_position[at..at + 8].copy_from_slice(&12u64.to_le_bytes());
    reseal_record(&mut wrong_position, last);
    assert_eq!(wal_records(&wrong_position).1, bytes.len(), "{ctx}: the resealed record passes its CRCs");

    let cases = [
        Damage {
            case: format!("a bit flipped at byte {in_body}, in the body of the record at {}", victim.offset),
            segment: flip_bit(&mut rng, in_body, &bytes),
            next: None,
            refused: (first.clone(), victim.offset),
        },
        Damage {
            case: format!(
                "a bit flipped at byte {in_header}, in the header of the record at {}",
                victim.offset
            ),
            segment: flip_bit(&mut rng, in_header, &bytes),
            next: None,
            refused: (first.clone(), victim.offset),
        },
        Damage {
            case: format!("a bit flipped at byte {in_segment_header}, in the segment header"),
            segment: flip_bit(&mut rng, in_segment_header, &bytes),
            next: None,
            refused: (first.clone(), 0),
        },
        Damage {
            case: format!("a bit flipped at byte {in_last} of the last record, and a later (empty) segment"),
            segment: flip_bit(&mut rng, in_last, &bytes),
            next: Some((segment_name(14), segment_header(14))),
            refused: (first.clone(), last.offset),
        },
        Damage {
            case: "the last record resealed with a wrong first position".to_string(),
            segment: wrong_position,
            next: None,
            refused: (first.clone(), last.offset),
        },
        Damage {
            case: "a later segment that skips positions".to_string(),
            segment: bytes.clone(),
            next: Some((segment_name(15), segment_header(15))),
            refused: (segment_name(15), 0),
        },
    ];
    for Damage { case, segment, next, refused: (file, offset) } in cases {
        let ctx = format!("{ctx}, {case}");
        let (_copy, data) = copy_data_dir(&original);
        std::fs::write(data.join("wal").join(&first), &segment).unwrap();
        if let Some((name, bytes)) = next {
            std::fs::write(data.join("wal").join(name), bytes).unwrap();
        }
        assert_refuses(&data, &[&file, &format!("byte offset {offset}")], &ctx);
    }
}

/// A damaged data directory: segment 1's bytes, maybe a second segment, and the file
/// and byte offset the refusal must name.
struct Damage {
    case: String,
    segment: Vec<u8>,
    next: Option<(String, Vec<u8>)>,
    refused: (String, usize),
}

/// Test 4b: records whose checksums pass but that break the log's rules (a version gap,
/// a timestamp that goes back) are corruption too ("Corruption that is not a torn
/// tail" in docs/storage-format.md): refused with the file and the byte offset.
#[test]
fn a_resealed_record_breaking_versions_or_time_refuses_with_file_and_offset() {
    let test = "a_resealed_record_breaking_versions_or_time_refuses_with_file_and_offset";
    let seed = test_seed(test);
    let mut rng = Rng::new(seed);
    let ctx = format!("{test}, {SEED_VAR}={seed}");
    let (_dir, original, events) = cleanly_stopped_dir(&mut rng, &ctx);
    let bytes = std::fs::read(&segments(&original)[0]).unwrap();
    let last = wal_records(&bytes).0[10];
    // The first event of the last record (the batch, entity "batch", version 1).
    let event = last.offset + RECORD_HEADER_BYTES + 16;
    assert_eq!(u64_at(&bytes, event + 16), 11, "{ctx}: the test's reading of the event layout");
    assert_eq!(u64_at(&bytes, event + 24), 1, "{ctx}: the test's reading of the event layout");
    let first = segment_name(1);
    let mut version_gap = bytes.clone();
    version_gap[event + 24..event + 32].copy_from_slice(&2u64.to_le_bytes());
    let mut time_back = bytes.clone();
    time_back[event + 32..event + 40].copy_from_slice(&0i64.to_le_bytes());
    assert!(events[9]["timestamp"].as_str().unwrap() > "1970-01-01T00:00:00.000000Z", "{ctx}");
    // Both cases run even if the first fails, so that a failure reports both.
    let mut failed = Vec::new();
    for (case, mut segment) in [("a version gap", version_gap), ("a timestamp going back", time_back)] {
        let ctx = format!("{ctx}, {case} in the record at {}", last.offset);
        reseal_record(&mut segment, last);
        let (_copy, data) = copy_data_dir(&original);
        std::fs::write(data.join("wal").join(&first), &segment).unwrap();
        let refused = std::panic::catch_unwind(|| {
            assert_refuses(&data, &[&first, &format!("byte offset {}", last.offset)], &ctx)
        });
        if refused.is_err() {
            failed.push(case);
        }
    }
    assert!(failed.is_empty(), "{ctx}: not refused as the format says: {failed:?} (see the messages above)");
}

// ---------------------------------------------------------------------------------------
// 5: out of file space (RLIMIT_FSIZE), without root
// ---------------------------------------------------------------------------------------

/// The bytes of one `ulimit -f` block in `bash`, measured: what `ulimit -f 1` lets
/// through.
fn ulimit_block_bytes() -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let probe = dir.path().join("probe");
    let _ = Command::new("bash")
        .arg("-c")
        .arg(r#"trap "" XFSZ; ulimit -f 1 && head -c 5000 /dev/zero > "$0""#)
        .arg(&probe)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let bytes = std::fs::metadata(&probe).unwrap().len();
    assert!(bytes == 512 || bytes == 1024, "`ulimit -f 1` let {bytes} bytes through");
    bytes
}

/// The server on `data`, started through bash with SIGXFSZ ignored (a disposition that
/// survives `exec`) and a file size limit of `limit` bytes: a write past it fails with
/// EFBIG, as on a full disk.
fn start_with_file_limit(data: &Path, limit: u64) -> Server {
    let blocks = limit / ulimit_block_bytes();
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(format!(r#"trap "" XFSZ; ulimit -f {blocks} || exit 97; exec "$0" "$@""#))
        .arg(env!("CARGO_BIN_EXE_allsource"))
        .args(["--addr", "127.0.0.1:0", "--data-dir", data.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .env_remove("ALLSOURCE_ADDR")
        .env_remove("ALLSOURCE_DATA_DIR")
        .env_remove("ALLSOURCE_IN_MEMORY")
        .env_remove("ALLSOURCE_SYNC")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    Server::attach(command.spawn().unwrap())
}

/// Test 5: appends until the WAL cannot grow: that append gets `503 StorageError`, so
/// does every later one, while reads go on serving exactly the acknowledged events
/// (stats say read-only); after kill -9 and a restart without the limit every
/// acknowledged event is there, nothing of the failed write is, and appends work
/// (the failed request, retried with its ids, is new: `201`).
#[test]
fn a_full_disk_turns_the_store_read_only_and_loses_nothing() {
    let test = "a_full_disk_turns_the_store_read_only_and_loses_nothing";
    let seed = test_seed(test);
    let mut rng = Rng::new(seed);
    let ctx = format!("{test}, {SEED_VAR}={seed}");
    const LIMIT: u64 = 64 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start_with_file_limit(&data, LIMIT);
    let segment = data.join("wal").join(segment_name(1));

    let mut model = Model::default();
    let mut versions = HashMap::new();
    let mut failed = None;
    for request in 0..5000 {
        let label = format!("f{request}");
        let (batch, bodies) = make_request(&mut rng, 0, &label, &versions);
        let outcome = send_append(server.addr, batch, &bodies);
        learn_versions(&mut versions, batch, &bodies, &outcome);
        let sent = Sent { label, batch, bodies, outcome };
        model.requests.push(sent.clone());
        if !matches!(sent.outcome, Outcome::Acked { status: 201, .. }) {
            failed = Some(sent);
            break;
        }
    }
    let failed = failed.unwrap_or_else(|| panic!("{ctx}: 5000 appends fit under a {LIMIT}-byte file limit"));
    assert!(
        matches!(&failed.outcome, Outcome::Refused { status: 503, code, .. } if code == "StorageError"),
        "{ctx}: the first failed append ({}) got {:?}",
        failed.label,
        failed.outcome
    );
    let acked: usize = model.requests.iter().map(Sent::acked_events).sum();
    let on_disk = std::fs::metadata(&segment).unwrap().len();
    eprintln!(
        "{ctx}: {acked} events acknowledged before the append {} failed; the segment has {on_disk} bytes",
        failed.label
    );
    assert!(acked >= 100, "{ctx}: only {acked} events fit in {LIMIT} bytes");
    assert!(on_disk <= LIMIT, "{ctx}: the segment has {on_disk} bytes: the limit did not hold");

    // Read-only: every later append fails, even a tiny one.
    for (n, batch) in [false, true, false].into_iter().enumerate() {
        let label = format!("read-only-{n}");
        let bodies: Vec<Value> = (0..if batch { 2 } else { 1 })
            .map(|i| json!({"id": rng.uuid(), "event_type": "t", "entity_id": "x", "payload": {"tag": format!("{label}i{i}")}}))
            .collect();
        let outcome = send_append(server.addr, batch, &bodies);
        assert!(
            matches!(&outcome, Outcome::Refused { status: 503, code, .. } if code == "StorageError"),
            "{ctx}: {label} on a read-only store got {outcome:?}"
        );
        model.requests.push(Sent { label, batch, bodies, outcome });
    }
    // Reads still serve exactly the acknowledged events.
    let log = all_events_paged(&server, "");
    assert_eq!(log.len(), acked, "{ctx}: the store serves other events than those acknowledged");
    let refusal = [(503, "StorageError")];
    check_log(&model, &log, &refusal, &ctx);
    check_reads(&server, &log, true, 1, &ctx);
    for request in model.requests.iter().filter(|r| matches!(r.outcome, Outcome::Refused { .. })) {
        for id in request.bodies.iter().filter_map(|b| b["id"].as_str()) {
            let reply = call(&server, Req::get(format!("/api/v1/events/{id}")), &ctx);
            assert_eq!(
                reply.status,
                404,
                "{ctx}: the refused event {id} of {} is served: {}",
                request.label,
                reply.text()
            );
        }
    }

    server.signal("KILL");
    assert_eq!(server.wait_exit(EXIT_TIMEOUT).signal(), Some(9), "{ctx}");
    drop(server);
    // On disk: whole records holding exactly the acknowledged events, then at most a
    // torn piece of the failed write.
    let bytes = std::fs::read(&segment).unwrap();
    let (records, valid_end) = wal_records(&bytes);
    let recorded: u64 = records.iter().map(|r| r.count).sum();
    assert_eq!(
        recorded, acked as u64,
        "{ctx}: the segment's whole records hold other events than acknowledged"
    );
    let torn = bytes.len() - valid_end;
    // Of them, the zeros at the end: a segment written ahead of time, never written.
    let zeros = bytes[valid_end..].iter().rev().take_while(|&&b| b == 0).count();

    let server = Server::start_with(&data_args(&data));
    let startup = server.startup_log.join("\n");
    if torn > 0 {
        assert!(
            startup.contains("cutting a torn tail from the WAL")
                && startup.contains(&format!("bytes_cut={torn}"))
                && startup.contains(&format!("zeros_cut={zeros}")),
            "{ctx}: the failed write left {torn} bytes, {zeros} of them zeros at the end; expected them cut:\n{startup}"
        );
    } else {
        assert!(!startup.contains("torn tail"), "{ctx}: nothing to cut, yet:\n{startup}");
    }
    assert_recovered_line(&server, acked, &ctx);
    assert_eq!(all_events_paged(&server, ""), log, "{ctx}: after restart");
    check_reads(&server, &log, false, 1, &ctx);

    // The failed append was never acknowledged: retried, it is new.
    let retry = send_append(server.addr, failed.batch, &failed.bodies);
    let Outcome::Acked { status: 201, reply } = &retry else {
        panic!("{ctx}: the retry of the failed append {} got {retry:?}", failed.label)
    };
    let position = if failed.batch { &reply["events"][0]["position"] } else { &reply["position"] };
    assert_eq!(*position, acked + 1, "{ctx}: {reply}");
    model.requests.retain(|r| r.label != failed.label);
    model.requests.push(Sent { outcome: retry, ..failed });
    let log = all_events_paged(&server, "");
    check_log(&model, &log, &refusal, &ctx);
    let mut next = Model::default();
    append_after_recovery(&server, &mut next, &log, "after-full", &ctx);
    eprintln!("{ctx}: {} bytes of torn tail cut", torn);
}

// ---------------------------------------------------------------------------------------
// 6 and 7: the lock under a race; crash images of a segment rotation
// ---------------------------------------------------------------------------------------

/// A child process whose stderr lines a thread collects.
struct Watched {
    child: Child,
    lines: Receiver<String>,
    log: Vec<String>,
}

impl Watched {
    fn spawn(args: &[&str]) -> Watched {
        let mut child = spawn(args, &[]);
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Watched { child, lines, log: Vec::new() }
    }

    fn drain(&mut self) {
        self.log.extend(self.lines.try_iter());
    }

    /// After the process exited: every line up to the end of its stderr.
    fn drain_to_end(&mut self) {
        while let Ok(line) = self.lines.recv_timeout(EXIT_TIMEOUT) {
            self.log.push(line);
        }
    }

    fn listening(&self) -> Option<SocketAddr> {
        self.log
            .iter()
            .find_map(|line| line.split("listening on ").nth(1)?.split_whitespace().next()?.parse().ok())
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Test 6: two servers started together on one fresh directory: exactly one serves,
/// the other exits non-zero saying the directory is in use.
#[test]
fn two_servers_racing_for_one_directory_exactly_one_serves() {
    let test = "two_servers_racing_for_one_directory_exactly_one_serves";
    for round in 0..3 {
        let ctx = format!("{test}, round {round}");
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let args = ["--addr", "127.0.0.1:0", "--data-dir", data.to_str().unwrap()];
        let mut racers = [Watched::spawn(&args), Watched::spawn(&args)];
        let deadline = Instant::now() + EXIT_TIMEOUT;
        let (winner, loser) = loop {
            let exited = [racers[0].exited(), racers[1].exited()];
            racers.iter_mut().for_each(Watched::drain);
            let serving = [racers[0].listening(), racers[1].listening()];
            match (exited, serving) {
                ([Some(_), Some(_)], _) => {
                    panic!("{ctx}: both exited: {:#?} {:#?}", racers[0].log, racers[1].log)
                }
                (_, [Some(_), Some(_)]) => {
                    panic!("{ctx}: both serve: {:#?} {:#?}", racers[0].log, racers[1].log)
                }
                ([None, Some(status)], [Some(addr), None]) => break ((0, addr), (1, status)),
                ([Some(status), None], [None, Some(addr)]) => break ((1, addr), (0, status)),
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "{ctx}: no decision: {:#?} {:#?}",
                racers[0].log,
                racers[1].log
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let ((winner, addr), (loser, status)) = (winner, loser);
        racers[loser].drain_to_end();
        let log = racers[loser].log.join("\n");
        assert!(!status.success(), "{ctx}: the loser exited with {status:?}:\n{log}");
        assert!(log.contains("in use"), "{ctx}: the loser does not say the directory is in use:\n{log}");
        assert!(!log.contains("listening on"), "{ctx}: the loser served:\n{log}");
        let body = json!({"event_type": "t", "entity_id": "race", "payload": {"round": round}});
        let reply = try_send_whole(addr, &append_request(false, &[body])).unwrap();
        assert_eq!(reply.status, 201, "{ctx}: the winner does not append: {}", reply.text());
        assert!(racers[winner].exited().is_none(), "{ctx}: the winner exited");
    }
}

/// Test 7: the crash images of a segment rotation. A new segment shorter than its
/// header (the crash came before the header was synced) is removed with a log line and
/// appending continues in a fresh one; a new segment with a header and no record is
/// normal. Either way the next append is the first record of segment 14.
#[test]
fn crash_images_of_a_segment_rotation_recover() {
    let test = "crash_images_of_a_segment_rotation_recover";
    let seed = test_seed(test);
    let mut rng = Rng::new(seed);
    let ctx = format!("{test}, {SEED_VAR}={seed}");
    let (_dir, original, events) = cleanly_stopped_dir(&mut rng, &ctx);
    let first = segment_name(1);
    let second = segment_name(14);
    let original_bytes = std::fs::read(original.join("wal").join(&first)).unwrap();
    let short = rng.range(0, SEGMENT_HEADER_BYTES as u64 - 1) as usize;

    for (case, new_segment) in [
        (
            format!("a new segment of {short} bytes, shorter than its header"),
            segment_header(14)[..short].to_vec(),
        ),
        ("a new segment with a header and no records".to_string(), segment_header(14)),
    ] {
        let ctx = format!("{ctx}, {case}");
        let whole = new_segment.len() == SEGMENT_HEADER_BYTES;
        let (_copy, data) = copy_data_dir(&original);
        std::fs::write(data.join("wal").join(&second), &new_segment).unwrap();
        let server = Server::start_with(&data_args(&data));
        let log = server.startup_log.join("\n");
        assert_eq!(log.contains("removing an unfinished WAL segment"), !whole, "{ctx}:\n{log}");
        assert!(!log.contains("torn tail"), "{ctx}:\n{log}");
        assert_recovered_line(&server, 13, &ctx);
        assert_eq!(all_events_paged(&server, ""), events, "{ctx}");
        let names = || -> Vec<String> {
            segments(&data).iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect()
        };
        let expected = if whole { vec![first.clone(), second.clone()] } else { vec![first.clone()] };
        assert_eq!(names(), expected, "{ctx}: the segments after recovery");
        let mut model = Model::default();
        append_after_recovery(&server, &mut model, &events, "after-rotation", &ctx);
        let after = all_events_paged(&server, "");
        // Either way the append is in a new segment 14 and the old one is unchanged.
        assert_eq!(names(), [first.clone(), second.clone()], "{ctx}: the segments after an append");
        let old = std::fs::read(data.join("wal").join(&first)).unwrap();
        assert!(old == original_bytes, "{ctx}: the old segment changed");
        let records = wal_records(&std::fs::read(data.join("wal").join(&second)).unwrap()).0;
        assert_eq!(records.len(), 1, "{ctx}: the append should be the new segment's record: {records:?}");
        assert_eq!((records[0].first, records[0].count), (14, 1), "{ctx}: {records:?}");
        server.signal("TERM");
        assert_eq!(server.wait_exit(EXIT_TIMEOUT).code(), Some(0), "{ctx}: SIGTERM");
        drop(server);
        let server = Server::start_with(&data_args(&data));
        assert_recovered_line(&server, 14, &ctx);
        assert_eq!(all_events_paged(&server, ""), after, "{ctx}: after a restart");
    }
}
