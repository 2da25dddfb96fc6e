//! The client-side model of the crash tests (`crash.rs`, `seal_crash.rs`): seeds and a
//! seeded generator, every append request with its outcome (acknowledged, refused, or
//! unknown because the server died), and `check_log`, which checks a recovered log
//! against that record; plus the reads, retries and refusals those tests assert with.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::process::{spawn, try_send_whole, Server};
use super::{all_events_paged, assert_timestamp_format, assert_uuid_format, encode, Reply, Req};

/// The variable that replays a run's random choices.
pub const SEED_VAR: &str = "ALLSOURCE_CRASH_SEED";
/// How long a killed or stopped server may take to exit.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// Seeds and a small seeded generator
// ---------------------------------------------------------------------------------------

/// The test's seed: `ALLSOURCE_CRASH_SEED` if set, else from the clock. Printed.
pub fn test_seed(test: &str) -> u64 {
    let seed = match std::env::var(SEED_VAR) {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| panic!("{SEED_VAR}={text:?} is not a u64")),
        Err(_) => {
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
            splitmix(nanos ^ u64::from(std::process::id()).rotate_left(32)) >> 1
        }
    };
    eprintln!("{test}: {SEED_VAR}={seed}");
    seed
}

pub fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xorshift64: plenty for choosing test inputs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(splitmix(seed) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform enough in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// In `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// A random (version 4) UUID, hyphenated, lower case.
    pub fn uuid(&mut self) -> String {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next().to_le_bytes());
        bytes[8..].copy_from_slice(&self.next().to_le_bytes());
        uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
    }

    /// How a batch's items get client ids: none, all, or each by a coin toss.
    pub fn id_mode(&mut self) -> u64 {
        self.below(3)
    }

    /// A client id for an item of a batch of `id_mode`, or none; `upper_percent` of
    /// them in upper case (ids are case-insensitive on input).
    pub fn client_id(&mut self, id_mode: u64, upper_percent: u64) -> Option<String> {
        let give = match id_mode {
            0 => false,
            1 => true,
            _ => self.chance(50),
        };
        give.then(|| {
            let id = self.uuid();
            if self.chance(upper_percent) {
                id.to_uppercase()
            } else {
                id
            }
        })
    }
}

// ---------------------------------------------------------------------------------------
// The client-side model: what was sent, and what the server answered
// ---------------------------------------------------------------------------------------

/// What one append request got.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// `201`/`200`: the stored event (single append) or the batch's receipts.
    Acked { status: u16, reply: Value },
    /// A complete error reply: nothing may have been appended.
    Refused { status: u16, code: String, body: String },
    /// The connection failed (the server was killed): applied or not, nobody knows.
    Unknown(String),
}

/// One append request and its outcome. Every event body carries a unique
/// `payload.tag`, which is how an event found after recovery is traced to its request.
#[derive(Debug, Clone)]
pub struct Sent {
    pub label: String,
    pub batch: bool,
    pub bodies: Vec<Value>,
    pub outcome: Outcome,
}

impl Sent {
    pub fn tags(&self) -> impl Iterator<Item = &str> {
        self.bodies.iter().map(tag_of_body)
    }

    pub fn acked_events(&self) -> usize {
        match &self.outcome {
            Outcome::Acked { .. } => self.bodies.len(),
            _ => 0,
        }
    }
}

pub fn tag_of_body(body: &Value) -> &str {
    body["payload"]["tag"].as_str().unwrap()
}

/// Every request of a test, in the order they were made (per client thread).
#[derive(Default)]
pub struct Model {
    pub requests: Vec<Sent>,
}

impl Model {
    pub fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.requests.iter().filter(|r| f(&r.outcome)).count()
    }
}

/// The request that appends `bodies`: one event, or a JSON batch.
pub fn append_request(batch: bool, bodies: &[Value]) -> Req {
    if batch {
        Req::post_json("/api/v1/events/batch", &json!({ "events": bodies }))
    } else {
        Req::post_json("/api/v1/events", &bodies[0])
    }
}

/// Sends an append; a transport failure is an unknown outcome, not a panic.
pub fn send_append(addr: SocketAddr, batch: bool, bodies: &[Value]) -> Outcome {
    let reply = match try_send_whole(addr, &append_request(batch, bodies)) {
        Ok(reply) => reply,
        Err(error) => return Outcome::Unknown(error.to_string()),
    };
    match (reply.status, serde_json::from_slice::<Value>(&reply.body).ok()) {
        (200 | 201, Some(body)) => Outcome::Acked { status: reply.status, reply: body },
        (status, body) => Outcome::Refused {
            status,
            code: body
                .as_ref()
                .and_then(|body| body["error"]["code"].as_str())
                .unwrap_or("<no error code>")
                .to_string(),
            body: reply.text(),
        },
    }
}

/// A payload with big and negative integers, a float, nested values, and sometimes
/// strings with escapes and a NUL; `tag` makes it unique.
pub fn payload(rng: &mut Rng, tag: &str) -> Value {
    let mut payload = json!({
        "tag": tag,
        "big": rng.next(),
        "neg": -(rng.below(1 << 62) as i64),
        "f": (rng.next() >> 11) as f64 / (1u64 << 53) as f64 * 1000.0,
        "nested": {"list": [1, "two", null, true], "n": rng.below(1000)},
    });
    if rng.chance(25) {
        payload["s"] = json!("é ü 😀 \u{0} \" \\ \n \u{7f} \u{2028}");
    }
    if rng.chance(15) {
        payload["gone"] = Value::Null;
    }
    payload
}

/// Counts acknowledged appends (or events); the main thread waits on it before choosing
/// the kill.
#[derive(Default)]
pub struct Progress {
    acked: Mutex<usize>,
    changed: Condvar,
}

impl Progress {
    pub fn bump(&self) {
        self.add(1);
    }

    pub fn add(&self, n: usize) {
        *self.acked.lock().unwrap() += n;
        self.changed.notify_all();
    }

    pub fn count(&self) -> usize {
        *self.acked.lock().unwrap()
    }

    /// Whether at least `n` were acknowledged within `timeout`.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let acked = self.acked.lock().unwrap();
        let (acked, _) = self.changed.wait_timeout_while(acked, timeout, |acked| *acked < n).unwrap();
        *acked >= n
    }
}

/// Sends a request; a transport failure fails the test with `ctx`.
pub fn call(server: &Server, req: Req, ctx: &str) -> Reply {
    let what = format!("{} {}", req.method, req.target);
    try_send_whole(server.addr, &req).unwrap_or_else(|e| panic!("{ctx}: {what}: {e}"))
}

/// Sends a request, asserts the status, returns the JSON body.
pub fn call_json(server: &Server, req: Req, status: u16, ctx: &str) -> Value {
    let what = format!("{} {}", req.method, req.target);
    let reply = call(server, req, ctx);
    assert_eq!(reply.status, status, "{ctx}: {what}: {}", reply.text());
    serde_json::from_slice(&reply.body).unwrap_or_else(|e| panic!("{ctx}: {what}: not JSON ({e})"))
}

pub fn entity_versions(log: &[Value]) -> HashMap<String, u64> {
    log.iter()
        .map(|e| (e["entity_id"].as_str().unwrap().to_string(), e["version"].as_u64().unwrap()))
        .collect()
}

/// Asserts that a stored event has the content its body asked for.
pub fn assert_same_content(event: &Value, body: &Value, ctx: &str) {
    for field in ["event_type", "entity_id", "payload"] {
        assert_eq!(event[field], body[field], "{ctx}: {field} of {event} differs from what was sent: {body}");
    }
    let metadata = if body.get("metadata").is_some() { body["metadata"].clone() } else { json!({}) };
    assert_eq!(event["metadata"], metadata, "{ctx}: metadata of {event} differs from what was sent: {body}");
    if let Some(id) = body["id"].as_str() {
        assert_eq!(event["id"], id.to_lowercase(), "{ctx}: id of {event} differs from what was sent: {body}");
    }
}

/// Checks the whole log (every event of the store, in position order) against the
/// model: gapless positions, gapless per-entity versions, non-decreasing timestamps,
/// unique ids; every event was sent by a client, with the content sent; every
/// acknowledged event is there with the fields it was acknowledged with; a refused
/// request left nothing (`refusals`: the statuses and codes a refusal may have); a
/// request with an unknown outcome is there whole, at consecutive positions, or not at
/// all. Returns, per unknown-outcome request, whether it was there.
pub fn check_log(model: &Model, log: &[Value], refusals: &[(u16, &str)], ctx: &str) -> HashMap<String, bool> {
    let mut versions: HashMap<&str, u64> = HashMap::new();
    let mut ids: HashSet<&str> = HashSet::new();
    let mut by_tag: HashMap<&str, usize> = HashMap::new();
    let mut last_timestamp = "";
    let sent: HashMap<&str, &Value> =
        model.requests.iter().flat_map(|r| r.bodies.iter()).map(|b| (tag_of_body(b), b)).collect();
    for (index, event) in log.iter().enumerate() {
        assert_eq!(
            event["position"],
            index + 1,
            "{ctx}: positions are not gapless at index {index}: {event}"
        );
        let entity = event["entity_id"].as_str().unwrap_or_else(|| panic!("{ctx}: no entity_id in {event}"));
        let version = versions.entry(entity).or_insert(0);
        *version += 1;
        assert_eq!(event["version"], *version, "{ctx}: entity {entity:?} has a version gap at {event}");
        let timestamp =
            event["timestamp"].as_str().unwrap_or_else(|| panic!("{ctx}: no timestamp in {event}"));
        assert_timestamp_format(timestamp);
        assert!(
            timestamp >= last_timestamp,
            "{ctx}: the timestamp goes back at {event} (previous {last_timestamp})"
        );
        last_timestamp = timestamp;
        let id = event["id"].as_str().unwrap_or_else(|| panic!("{ctx}: no id in {event}"));
        assert_uuid_format(id);
        assert!(ids.insert(id), "{ctx}: id {id} is stored twice");
        let tag = event["payload"]["tag"].as_str();
        let body = tag.and_then(|tag| sent.get(tag));
        let (Some(tag), Some(body)) = (tag, body) else {
            panic!("{ctx}: event at position {} was never sent by a client: {event}", index + 1)
        };
        assert_same_content(event, body, ctx);
        assert!(
            by_tag.insert(tag, index).is_none(),
            "{ctx}: the event tagged {tag} is stored twice: {event}"
        );
    }

    let mut unknown = HashMap::new();
    for request in &model.requests {
        let label = &request.label;
        let found: Vec<Option<usize>> = request.tags().map(|tag| by_tag.get(tag).copied()).collect();
        let present = found.iter().filter(|f| f.is_some()).count();
        let consecutive = || {
            let indexes: Vec<usize> = found.iter().map(|f| f.unwrap()).collect();
            assert!(
                indexes.windows(2).all(|w| w[1] == w[0] + 1),
                "{ctx}: the batch {label} is not at consecutive positions in the order sent: indexes {indexes:?}"
            );
        };
        match &request.outcome {
            Outcome::Acked { status, reply } => {
                assert_eq!(
                    present,
                    found.len(),
                    "{ctx}: {label} was acknowledged ({status}: {reply}) but {} of its {} events are missing \
                     after recovery",
                    found.len() - present,
                    found.len()
                );
                consecutive();
                if request.batch {
                    let receipts =
                        reply["events"].as_array().unwrap_or_else(|| panic!("{ctx}: {label}: {reply}"));
                    assert_eq!(reply["count"], found.len(), "{ctx}: {label}: {reply}");
                    assert_eq!(receipts.len(), found.len(), "{ctx}: {label}: {reply}");
                    for (receipt, index) in receipts.iter().zip(&found) {
                        let event = &log[index.unwrap()];
                        for field in ["id", "entity_id", "version", "position", "timestamp"] {
                            assert_eq!(
                                receipt[field], event[field],
                                "{ctx}: {label} was acknowledged with {receipt}, but recovery has {event}"
                            );
                        }
                    }
                } else {
                    let event = &log[found[0].unwrap()];
                    assert_eq!(
                        reply, event,
                        "{ctx}: {label} was acknowledged with {reply}, but recovery has {event}"
                    );
                }
            }
            Outcome::Refused { status, code, body } => {
                assert!(
                    refusals.contains(&(*status, code.as_str())),
                    "{ctx}: {label} got an unexpected reply {status} {body}"
                );
                assert_eq!(
                    present, 0,
                    "{ctx}: {label} was refused ({status} {body}) but {present} of its events are stored"
                );
            }
            Outcome::Unknown(why) => {
                assert!(
                    present == 0 || present == found.len(),
                    "{ctx}: {label} (outcome unknown: {why}) is only partly stored: {present} of {} events",
                    found.len()
                );
                if present > 0 {
                    consecutive();
                }
                unknown.insert(label.clone(), present > 0);
            }
        }
    }
    unknown
}

/// Reads the store every other way and compares with the log: stats, each event by
/// id, each entity's events, state and snapshot. With `stride` n > 1 only every n-th
/// event (by position) and every n-th entity (by name) is read.
pub fn check_reads(server: &Server, log: &[Value], read_only: bool, stride: usize, ctx: &str) {
    let stats = call_json(server, Req::get("/api/v1/stats"), 200, ctx);
    let entities = entity_versions(log);
    assert_eq!(stats["total_events"], log.len(), "{ctx}: {stats}");
    assert_eq!(stats["total_entities"], entities.len(), "{ctx}: {stats}");
    assert_eq!(stats["read_only"], read_only, "{ctx}: {stats}");
    let stride = stride.max(1);
    let mut entities: Vec<(String, u64)> = entities.into_iter().collect();
    entities.sort_unstable();
    let entities: Vec<(String, u64)> = entities.into_iter().step_by(stride).collect();
    let sample: Vec<&Value> = log.iter().step_by(stride).collect();
    // Events by id, from a few threads.
    let chunk = sample.len().div_ceil(4).max(1);
    std::thread::scope(|scope| {
        for events in sample.chunks(chunk) {
            scope.spawn(move || {
                for &event in events {
                    let id = event["id"].as_str().unwrap();
                    let got = call_json(server, Req::get(format!("/api/v1/events/{id}")), 200, ctx);
                    assert_eq!(&got, event, "{ctx}: GET by id differs from the query");
                }
            });
        }
    });
    for (entity, version) in &entities {
        let path = encode(entity);
        let own: Vec<Value> = log.iter().filter(|e| e["entity_id"] == entity.as_str()).cloned().collect();
        assert_eq!(
            all_events_paged(server, &format!("entity_id={path}")),
            own,
            "{ctx}: the query for entity {entity:?} differs from the log"
        );
        let state = call_json(server, Req::get(format!("/api/v1/entities/{path}/state")), 200, ctx);
        assert_eq!(state["version"], *version, "{ctx}: state of {entity:?}: {state}");
        let snapshot = call_json(server, Req::get(format!("/api/v1/entities/{path}/snapshot")), 200, ctx);
        assert_eq!(snapshot, state, "{ctx}: snapshot and state of {entity:?} differ");
    }
}

pub fn assert_recovered_line(server: &Server, events: usize, ctx: &str) {
    let log = server.startup_log.join("\n");
    assert!(log.contains(&format!("recovered {events} events")), "{ctx}: start-up log:\n{log}");
}

/// Retries (same bodies, same ids) every request of `unknown` whose events all have
/// client ids: one that recovery kept must get `200` (checked against the log later),
/// one it did not keep `201`, or `409 ConcurrencyConflict` if it had an
/// `expected_version`.
pub fn retry_unknown(
    server: &Server,
    model: &mut Model,
    unknown: &HashMap<String, bool>,
    ctx: &str,
) -> usize {
    let retries: Vec<Sent> = model
        .requests
        .iter()
        .filter(|r| unknown.contains_key(&r.label) && r.bodies.iter().all(|b| b.get("id").is_some()))
        .cloned()
        .collect();
    for request in &retries {
        let present = unknown[&request.label];
        let outcome = send_append(server.addr, request.batch, &request.bodies);
        let has_expected = request.bodies.iter().any(|b| b.get("expected_version").is_some());
        let fine = match &outcome {
            Outcome::Acked { status, .. } => *status == if present { 200 } else { 201 },
            Outcome::Refused { status: 409, code, .. } => {
                !present && has_expected && code == "ConcurrencyConflict"
            }
            _ => false,
        };
        assert!(fine, "{ctx}: the retry of {} (kept by recovery: {present}) got {outcome:?}", request.label);
        model.requests.push(Sent { label: format!("{}-retry", request.label), outcome, ..request.clone() });
    }
    retries.len()
}

/// Every file under `dir` (but the lock file, which holds the last opener's pid) and
/// its bytes.
pub fn files_of(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        for entry in std::fs::read_dir(&path).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.file_name().is_some_and(|n| n != "LOCK") {
                files.insert(path.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// Runs the binary on `data`, which it must refuse: a non-zero exit without serving,
/// stderr containing every one of `needles` (the file, the byte offset, ...), and no
/// file changed. Returns its stderr.
pub fn assert_refuses(data: &Path, needles: &[&str], ctx: &str) -> String {
    let before = files_of(data);
    let child = spawn(&["--addr", "127.0.0.1:0", "--data-dir", data.to_str().unwrap()], &[]);
    let (status, stderr) = match Server::try_attach(child) {
        Ok(server) => {
            let log = server.startup_log.join("\n");
            drop(server);
            panic!("{ctx}: the server serves a damaged directory:\n{log}")
        }
        Err(refusal) => refusal,
    };
    assert!(!status.success(), "{ctx}: exit status {status:?}:\n{stderr}");
    assert!(!stderr.contains("listening on"), "{ctx}: it served:\n{stderr}");
    assert!(files_of(data) == before, "{ctx}: the refused start changed files");
    for needle in needles {
        assert!(stderr.contains(needle), "{ctx}: stderr lacks {needle:?}:\n{stderr}");
    }
    stderr
}
