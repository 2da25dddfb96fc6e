//! `GET /metrics` and request ids, through the real binary over real HTTP: after a
//! known mix of appends (created, idempotent retries, each kind of refusal), queries
//! and unknown routes, the scraped text parses and every counter equals what was done;
//! the WAL's fsync histogram saw the appends; a restart reports its recovery; every
//! response carries an `x-request-id`, the client's own when it sent one, and the log
//! line of the request names it. One test runs in process, with a log that fails, to
//! see a storage failure in the metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::process::{send_raw, Server};
use common::{append, append_batch, check, event, ok, Client, Req};
use serde_json::json;

const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// One scrape: each sample by its name and its labels (sorted, `k="v"` joined by
/// commas, `le` included), e.g. `("allsource_http_responses_total", "class=\"2xx\"")`.
#[derive(Debug)]
struct Scrape {
    samples: BTreeMap<(String, String), f64>,
    text: String,
}

impl Scrape {
    /// The sample, or 0 when the series does not exist (yet).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples.get(&(name.to_string(), label_key(labels))).copied().unwrap_or(0.0)
    }

    /// The sample, which must exist.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        *self
            .samples
            .get(&(name.to_string(), label_key(labels)))
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in:\n{}", self.text))
    }
}

fn label_key(labels: &[(&str, &str)]) -> String {
    let mut labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    labels.sort();
    labels.join(",")
}

/// Parses the Prometheus text format (0.0.4): `# HELP` / `# TYPE` lines, then samples
/// `name{k="v",...} value`, label values with `\\`, `\"` and `\n` escapes. Panics on
/// anything else, and on a sample whose family has no `# TYPE` line.
fn parse(text: &str) -> Scrape {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram", "untyped"].contains(&kind), "{line}");
            assert!(types.insert(name.to_string(), kind.to_string()).is_none(), "family twice: {line}");
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        let (name, labels, value) = parse_sample(line);
        let family = types.keys().find(|family| {
            name == **family
                || ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| name.strip_suffix(suffix) == Some(family.as_str()))
        });
        assert!(family.is_some(), "sample without a # TYPE: {line}");
        let mut labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        labels.sort();
        assert!(samples.insert((name, labels.join(",")), value).is_none(), "sample twice: {line}");
    }
    Scrape { samples, text: text.to_string() }
}

fn parse_sample(line: &str) -> (String, Vec<(String, String)>, f64) {
    let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("no value: {line}"));
    let name = &line[..name_end];
    assert!(
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "bad name: {line}"
    );
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("bad label: {line}"));
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c @ ('\\' | '"'))) => value.push(c),
                        other => panic!("bad escape {other:?}: {line}"),
                    },
                    Some((_, c)) => value.push(c),
                    None => panic!("unterminated label value: {line}"),
                }
            };
            labels.push((key.to_string(), value));
            rest = &after[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }
    let value = rest.strip_prefix(' ').unwrap_or_else(|| panic!("no value: {line}"));
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().unwrap_or_else(|e| panic!("bad value ({e}): {line}")),
    };
    (name.to_string(), labels, value)
}

fn scrape(client: &impl Client) -> Scrape {
    let reply = client.send(Req::get("/metrics"));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let content_type = reply.header("content-type").unwrap_or_default();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    parse(&reply.text())
}

const SINGLE: &str = "/api/v1/events";
const BATCH: &str = "/api/v1/events/batch";

/// Counts what the test sends, by status class, as the server should.
#[derive(Default)]
struct Sent {
    classes: BTreeMap<&'static str, u64>,
}

impl Sent {
    fn add(&mut self, status: u16) {
        let class = match status {
            200..=299 => "2xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        *self.classes.entry(class).or_default() += 1;
    }
}

#[test]
fn counters_equal_what_was_done() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(&["--data-dir", dir.path().to_str().unwrap()]);
    let before = scrape(&server);
    let mut sent = Sent::default();
    sent.add(200); // the scrape above, seen by the next one

    // 12 single appends with ids, each retried once (idempotent), 2 without ids.
    let mut ids = Vec::new();
    for n in 0..12 {
        let id = uuid::Uuid::new_v4().to_string();
        let mut body = event(&format!("order-{n}"), "order.placed", json!({"n": n}));
        body["id"] = json!(id);
        append(&server, &body);
        assert_eq!(ok(&server, Req::post_json(SINGLE, &body), 200)["id"], id);
        sent.add(201);
        sent.add(200);
        ids.push(id);
    }
    for n in 0..2 {
        append(&server, &event("anonymous", "order.placed", json!({"n": n})));
        sent.add(201);
    }
    // 3 batches of 10 (created), and a batch of retries only (200, nothing appended).
    let mut batch_ids = Vec::new();
    for b in 0..3 {
        let events: Vec<_> = (0..10)
            .map(|n| {
                let mut body = event(&format!("batch-{b}"), "item.added", json!({"n": n}));
                body["id"] = json!(uuid::Uuid::new_v4().to_string());
                body
            })
            .collect();
        append_batch(&server, &events);
        sent.add(201);
        batch_ids.push(events);
    }
    ok(&server, Req::post_json(BATCH, &json!({ "events": batch_ids[0] })), 200);
    sent.add(200);
    let created_events = 12 + 2 + 30;

    // Refusals, each with its code.
    let refusals: [(Req, u16, &str); 6] = [
        (Req::post_json(SINGLE, &event("", "t", json!({}))), 400, "ValidationError"),
        (Req::post(SINGLE, Some("application/json"), "{not json"), 400, "InvalidEvent"),
        (Req::post(SINGLE, Some("text/plain"), "{}"), 415, "UnsupportedMediaType"),
        (
            Req::post_json(
                SINGLE,
                &json!({"event_type": "t", "entity_id": "order-0", "payload": {},
                "expected_version": 0}),
            ),
            409,
            "ConcurrencyConflict",
        ),
        (
            Req::post_json(
                SINGLE,
                &json!({"event_type": "t", "entity_id": "x", "payload": {"other": 1},
                "id": ids[0]}),
            ),
            409,
            "DuplicateEventId",
        ),
        (Req::post_json(BATCH, &json!({"events": [event("", "t", json!({}))]})), 400, "ValidationError"),
    ];
    for (req, status, code) in refusals {
        check(&server, req, status, code);
        sent.add(status);
    }

    // Reads: 4 queries, 3 gets (one unknown id), 2 states, stats; an unknown route.
    for filter in ["", "entity_id=order-1", "event_type=item.added&limit=5", "after=10"] {
        ok(&server, Req::get(format!("/api/v1/events/query?{filter}")), 200);
        sent.add(200);
    }
    for id in &ids[..2] {
        ok(&server, Req::get(format!("/api/v1/events/{id}")), 200);
        sent.add(200);
    }
    check(&server, Req::get(format!("/api/v1/events/{}", uuid::Uuid::new_v4())), 404, "EventNotFound");
    sent.add(404);
    for entity in ["order-3", "batch-1"] {
        ok(&server, Req::get(format!("/api/v1/entities/{entity}/state")), 200);
        sent.add(200);
    }
    check(&server, Req::get("/nope"), 404, "NotFound");
    sent.add(404);
    // A request hyper cannot read, answered before the router: counted all the same.
    assert_eq!(send_raw(server.addr, b"GARBAGE\r\n\r\n").unwrap().status, 400);
    sent.add(400);

    let after = scrape(&server);
    let delta = |name: &str, labels: &[(&str, &str)]| after.value(name, labels) - before.value(name, labels);

    // Appends by route and outcome.
    let appends = "allsource_append_requests_total";
    for (route, outcome, want) in [
        (SINGLE, "created", 14.0),
        (SINGLE, "idempotent", 12.0),
        (SINGLE, "ValidationError", 1.0),
        (SINGLE, "InvalidEvent", 1.0),
        (SINGLE, "UnsupportedMediaType", 1.0),
        (SINGLE, "ConcurrencyConflict", 1.0),
        (SINGLE, "DuplicateEventId", 1.0),
        (BATCH, "created", 3.0),
        (BATCH, "idempotent", 1.0),
        (BATCH, "ValidationError", 1.0),
    ] {
        assert_eq!(delta(appends, &[("route", route), ("outcome", outcome)]), want, "{route} {outcome}");
    }
    let all_appends: f64 =
        after.samples.iter().filter(|((name, _), _)| name == appends).map(|(_, value)| value).sum();
    assert_eq!(all_appends, 14.0 + 12.0 + 5.0 + 3.0 + 1.0 + 1.0, "{}", after.text);

    // Latency histograms: one observation per request, by route template.
    let count = |name: &str, route: &str| after.value(name, &[("route", route)]);
    assert_eq!(count("allsource_append_duration_seconds_count", SINGLE), 14.0 + 12.0 + 5.0);
    assert_eq!(count("allsource_append_duration_seconds_count", BATCH), 5.0);
    let queries = "allsource_query_duration_seconds_count";
    assert_eq!(count(queries, "/api/v1/events/query"), 4.0);
    assert_eq!(count(queries, "/api/v1/events/{id}"), 3.0);
    assert_eq!(count(queries, "/api/v1/entities/{entity_id}/state"), 2.0);
    let inf = after
        .get("allsource_query_duration_seconds_bucket", &[("route", "/api/v1/events/query"), ("le", "+Inf")]);
    assert_eq!(inf, 4.0);
    // Never a raw path: no id, no entity in any label.
    for id in &ids {
        assert!(!after.text.contains(id.as_str()), "{id} in the metrics");
    }
    assert!(!after.text.contains("order-3"), "{}", after.text);

    // Responses by status class.
    for (class, want) in &sent.classes {
        assert_eq!(delta("allsource_http_responses_total", &[("class", class)]), *want as f64, "{class}");
    }
    assert_eq!(delta("allsource_http_responses_total", &[("class", "5xx")]), 0.0);

    // The store: what was appended, and the WAL's syncs covered exactly that.
    assert_eq!(after.get("allsource_events_appended_total", &[]), created_events as f64);
    assert_eq!(after.get("allsource_events_stored", &[]), created_events as f64);
    assert_eq!(after.get("allsource_entities", &[]), 12.0 + 1.0 + 3.0);
    assert_eq!(after.get("allsource_read_only", &[]), 0.0);
    assert!(after.get("allsource_storage_bytes", &[("kind", "wal")]) > 0.0);
    let syncs = after.get("allsource_wal_fsync_duration_seconds_count", &[]);
    assert!(syncs > 0.0, "{}", after.text);
    assert!(after.get("allsource_wal_fsync_duration_seconds_sum", &[]) > 0.0);
    assert_eq!(after.get("allsource_wal_events_per_sync_count", &[]), syncs);
    assert_eq!(after.get("allsource_wal_events_per_sync_sum", &[]), created_events as f64);
    assert_eq!(after.get("allsource_wal_events_per_sync_bucket", &[("le", "+Inf")]), syncs);
    // Sequential requests: every single append synced alone, every batch in one sync.
    assert_eq!(after.get("allsource_wal_events_per_sync_bucket", &[("le", "1")]), 14.0);
    assert_eq!(after.get("allsource_wal_events_per_sync_bucket", &[("le", "8")]), 14.0);
    assert_eq!(after.get("allsource_wal_events_per_sync_bucket", &[("le", "16")]), 17.0);

    assert_eq!(after.get("allsource_subscribers", &[]), 0.0);
    assert!(after.get("allsource_uptime_seconds", &[]) > 0.0);
    assert_eq!(after.get("allsource_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);
}

/// A restart reports how long recovery took and what it found; the new process has
/// appended nothing itself.
#[test]
fn recovery_is_reported_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    {
        let server = Server::start_with(&["--data-dir", data_dir]);
        let fresh = scrape(&server);
        assert_eq!(fresh.get("allsource_recovered_events", &[]), 0.0);
        append_batch(&server, &(0..7).map(|n| event("e", "t", json!({"n": n}))).collect::<Vec<_>>());
        server.signal("TERM");
        assert!(server.wait_exit(EXIT_TIMEOUT).success());
    }
    let server = Server::start_with(&["--data-dir", data_dir]);
    let after = scrape(&server);
    assert_eq!(after.get("allsource_recovered_events", &[]), 7.0);
    assert!(after.get("allsource_recovery_seconds", &[]) > 0.0, "{}", after.text);
    assert_eq!(after.get("allsource_events_stored", &[]), 7.0);
    assert_eq!(after.get("allsource_events_appended_total", &[]), 0.0);
    assert_eq!(after.get("allsource_wal_events_per_sync_count", &[]), 0.0);
}

/// In memory there is no WAL: no storage figures, the rest as usual.
#[test]
fn in_memory_has_no_storage_figures() {
    let server = Server::start();
    append(&server, &event("e", "t", json!({})));
    let after = scrape(&server);
    assert_eq!(after.get("allsource_events_appended_total", &[]), 1.0);
    assert_eq!(after.get("allsource_recovery_seconds", &[]), 0.0);
    assert!(!after.text.contains("allsource_wal_"), "{}", after.text);
    assert!(!after.text.contains("allsource_storage_bytes"), "{}", after.text);
}

/// Every response has an `x-request-id`: the client's when it sent one, else a fresh
/// UUID; and the request's log line names it, with the route template and status.
#[test]
fn request_ids_are_echoed_and_logged() {
    let server = Server::launch(
        &["--addr", "127.0.0.1:0", "--in-memory"],
        &[("RUST_LOG", "info,allsource_server::guard=debug")],
    );
    let mut fresh = Vec::new();
    for req in [Req::get("/health"), Req::get("/nope"), Req::get("/metrics"), Req::get("/api/v1/stats")] {
        let reply = server.send(req);
        let id = reply.header("x-request-id").unwrap_or_else(|| panic!("no x-request-id: {reply:?}"));
        assert!(uuid::Uuid::try_parse(id).is_ok(), "{id}");
        fresh.push(id.to_string());
    }
    // An empty id counts as none: the request gets a fresh one.
    let reply = server.send(Req::get("/health").header("x-request-id", ""));
    let id = reply.header("x-request-id").unwrap_or_else(|| panic!("no x-request-id: {reply:?}"));
    assert!(uuid::Uuid::try_parse(id).is_ok(), "an empty x-request-id is replaced: {id:?}");
    fresh.push(id.to_string());
    fresh.sort();
    fresh.dedup();
    assert_eq!(fresh.len(), 5, "request ids repeat: {fresh:?}");

    let given = "client-chosen-id-42";
    let reply = server.send(
        Req::post_json("/api/v1/events", &event("user-7", "t", json!({}))).header("x-request-id", given),
    );
    assert_eq!(reply.status, 201);
    assert_eq!(reply.header("x-request-id"), Some(given));
    let line = server.wait_for_log(&["request_id=client-chosen-id-42", "finished"], EXIT_TIMEOUT);
    assert!(line.contains("route=/api/v1/events "), "{line}");
    assert!(line.contains("method=POST"), "{line}");
    assert!(line.contains("status=201"), "{line}");

    // A request id that is no plain text is echoed, but not written to the log.
    let odd = "has spaces and \"quotes\"";
    let reply = server.send(Req::get("/api/v1/events/query?entity_id=user-7").header("x-request-id", odd));
    assert_eq!(reply.header("x-request-id"), Some(odd));
    let line = server.wait_for_log(&["route=/api/v1/events/query", "finished"], EXIT_TIMEOUT);
    assert!(line.contains("request_id=<invalid>"), "{line}");
    assert!(!line.contains("user-7"), "the raw path is not in the span: {line}");
}

/// The subscribers gauge counts open streams: one while a stream is open, none once
/// its client has gone (noticed at the next heartbeat, every 50 ms here).
#[test]
fn subscribers_are_counted_while_open() {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpStream;
    use std::time::Instant;

    let server = Server::start_with(&["--in-memory", "--heartbeat-ms", "50"]);
    assert_eq!(scrape(&server).get("allsource_subscribers", &[]), 0.0);
    let stream = TcpStream::connect_timeout(&server.addr, EXIT_TIMEOUT).unwrap();
    stream.set_read_timeout(Some(EXIT_TIMEOUT)).unwrap();
    let request = common::process::request_bytes(server.addr, &Req::get("/api/v1/events/stream"));
    (&stream).write_all(&request).unwrap();
    let mut status_line = String::new();
    BufReader::new(&stream).read_line(&mut status_line).unwrap();
    assert!(status_line.starts_with("HTTP/1.1 200"), "{status_line}");
    assert_eq!(scrape(&server).get("allsource_subscribers", &[]), 1.0);
    // A stream is not a query: no latency series for it.
    assert!(!scrape(&server).text.contains("/api/v1/events/stream"));

    drop(stream);
    let deadline = Instant::now() + EXIT_TIMEOUT;
    while scrape(&server).get("allsource_subscribers", &[]) != 0.0 {
        assert!(Instant::now() < deadline, "the closed stream is still counted");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `--log-format json`: one JSON object a line, the request span's fields in `span`.
#[test]
fn json_logs_carry_the_request_span() {
    let server = Server::launch(
        &["--addr", "127.0.0.1:0", "--in-memory", "--log-format", "json"],
        &[("RUST_LOG", "info,allsource_server::guard=debug")],
    );
    let listening: serde_json::Value =
        serde_json::from_str(server.startup_log.last().unwrap()).expect("the start-up log is JSON");
    assert!(listening["fields"]["message"].as_str().unwrap().starts_with("listening on"), "{listening}");

    let reply = server.send(Req::get("/api/v1/entities/nobody/state").header("x-request-id", "json-7"));
    assert_eq!(reply.status, 404);
    let line = server.wait_for_log(&["json-7", "finished"], EXIT_TIMEOUT);
    let line: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(line["level"], "DEBUG", "{line}");
    assert_eq!(line["fields"]["message"], "finished", "{line}");
    assert!(line["fields"]["latency_us"].is_u64(), "{line}");
    let span = &line["span"];
    assert_eq!(span["name"], "request", "{line}");
    assert_eq!(span["request_id"], "json-7", "{line}");
    assert_eq!(span["method"], "GET", "{line}");
    assert_eq!(span["route"], "/api/v1/entities/{entity_id}/state", "{line}");
    assert_eq!(span["status"], 404, "{line}");
}

/// A log that accepts `n_ok` appends, then fails every one after.
struct FailingLog {
    n_ok: std::sync::atomic::AtomicUsize,
}

impl allsource_core::Log for FailingLog {
    fn append(&self, _events: &[std::sync::Arc<allsource_core::Event>]) -> allsource_core::Result<()> {
        use std::sync::atomic::Ordering;
        if self.n_ok.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_err() {
            return Err(allsource_core::Error::Storage {
                message: "disk full (simulated)".into(),
                read_only: false,
            });
        }
        Ok(())
    }
    fn recover(&self) -> allsource_core::Result<allsource_core::Recovered> {
        Ok(allsource_core::Recovered::default())
    }
    fn describe(&self) -> allsource_core::LogInfo {
        allsource_core::LogInfo { kind: "failing", durable: true, ..allsource_core::LogInfo::default() }
    }
}

/// A storage failure shows: appends refused with `StorageError` by route, `5xx`
/// responses, and the store's read-only gauge at 1. In process, with a log that fails.
#[test]
fn a_storage_failure_shows_in_the_metrics() {
    let log = FailingLog { n_ok: std::sync::atomic::AtomicUsize::new(1) };
    let store = allsource_core::EventStore::open(Box::new(log)).unwrap();
    let c = common::inproc::InProcess::with_store(std::sync::Arc::new(store));
    append(&c, &event("acct", "t", json!({"a": 1})));
    assert_eq!(scrape(&c).get("allsource_read_only", &[]), 0.0);
    for _ in 0..2 {
        check(&c, Req::post_json(SINGLE, &event("acct", "t", json!({}))), 503, "StorageError");
    }
    check(&c, Req::post_json(BATCH, &json!({"events": [event("x", "t", json!({}))]})), 503, "StorageError");

    let after = scrape(&c);
    assert_eq!(after.get("allsource_read_only", &[]), 1.0);
    let outcome = |route, outcome| {
        after.value("allsource_append_requests_total", &[("route", route), ("outcome", outcome)])
    };
    assert_eq!((outcome(SINGLE, "created"), outcome(SINGLE, "StorageError")), (1.0, 2.0));
    assert_eq!(outcome(BATCH, "StorageError"), 1.0);
    assert_eq!(after.get("allsource_http_responses_total", &[("class", "5xx")]), 3.0);
    assert_eq!(after.get("allsource_events_appended_total", &[]), 1.0);
}
