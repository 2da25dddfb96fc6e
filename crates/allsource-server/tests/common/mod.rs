//! Test helpers shared by the in-process tests (`api.rs`) and the end-to-end tests
//! (`e2e.rs`): one request type, one reply type, one `Client` trait with two
//! transports, and the `check` helpers every test asserts through, so that a change
//! of the API touches one function here.
//!
//! Each test crate uses only part of this module.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod columnar;
pub mod inproc;
pub mod model;
pub mod process;
pub mod scenarios;

use serde_json::{json, Value};

/// Every shared scenario (`scenarios` and `columnar`) as a `#[test]`, each on a fresh
/// client made by `$client`: one list for the in-process and the end-to-end tests.
#[allow(unused_macros)] // the crash tests include this module too
macro_rules! shared_scenario_tests {
    ($client:expr) => {
        $crate::common::shared_scenario_tests!(@tests $client;
            scenarios: health, append_and_read_back, round_trip_exactness, payload_text_as_sent, routing_errors,
                content_type_errors, body_errors, not_found_errors, size_limits, body_too_large,
                declared_body_too_large, query_validation, paging, as_of_state,
                percent_encoded_entity_ids, idempotent_retry, batch_append, batch_atomicity,
                batch_expected_version, ndjson_batch, stats_and_projections,
                optimistic_concurrency;
            columnar: arrow_query_matches_json, arrow_accept_negotiation, columnar_errors_are_json,
                export_matches_query);
    };
    (@tests $client:expr; scenarios: $($scenario:ident),*; columnar: $($columnar:ident),*) => {
        $(
            #[test]
            fn $scenario() {
                $crate::common::scenarios::$scenario(&$client);
            }
        )*
        $(
            #[test]
            fn $columnar() {
                $crate::common::columnar::$columnar(&$client);
            }
        )*
    };
}
#[allow(unused_imports)]
pub(crate) use shared_scenario_tests;

/// A request, independent of the transport.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    /// Path and query, already percent-encoded as they go on the wire.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Req {
    pub fn new(method: &str, target: impl Into<String>) -> Req {
        Req { method: method.to_string(), target: target.into(), headers: Vec::new(), body: Vec::new() }
    }

    pub fn get(target: impl Into<String>) -> Req {
        Req::new("GET", target)
    }

    /// A POST with a JSON body.
    pub fn post_json(target: impl Into<String>, body: &Value) -> Req {
        Req::post(target, Some("application/json"), serde_json::to_vec(body).unwrap())
    }

    /// A POST with any body and content type (`None`: no Content-Type header).
    pub fn post(target: impl Into<String>, content_type: Option<&str>, body: impl Into<Vec<u8>>) -> Req {
        let mut req = Req::new("POST", target);
        if let Some(content_type) = content_type {
            req = req.header("content-type", content_type);
        }
        req.body = body.into();
        req
    }

    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// A response, independent of the transport.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("status {}: body is not JSON ({e}): {:?}", self.status, self.text()))
    }
}

/// Something that answers requests: the router in process, or the real binary.
pub trait Client: Sync {
    fn send(&self, req: Req) -> Reply;
}

/// Sends `req`, asserts the status and that the body is JSON, returns the body.
pub fn ok(client: &impl Client, req: Req, status: u16) -> Value {
    let what = format!("{} {}", req.method, req.target);
    let reply = client.send(req);
    assert_eq!(reply.status, status, "{what}: {}", reply.text());
    assert_json_content_type(&reply, &what);
    reply.json()
}

/// Sends `req`, asserts an error reply with this status and code in the contract's
/// shape, returns the `error` object.
pub fn check(client: &impl Client, req: Req, status: u16, code: &str) -> Value {
    let what = format!("{} {}", req.method, req.target);
    let reply = client.send(req);
    assert_error(&reply, status, code, &what)
}

/// Asserts `reply` is `{"error": {"code": code, "message": "..."}}` with `status`.
pub fn assert_error(reply: &Reply, status: u16, code: &str, what: &str) -> Value {
    assert_eq!(reply.status, status, "{what}: {}", reply.text());
    assert_json_content_type(reply, what);
    let body = reply.json();
    let error = body.get("error").unwrap_or_else(|| panic!("{what}: no `error` in {body}"));
    assert_eq!(error["code"], code, "{what}: {body}");
    let message = error["message"].as_str().unwrap_or_else(|| panic!("{what}: no message in {body}"));
    assert!(!message.is_empty(), "{what}: empty message");
    error.clone()
}

/// Like [`check`], and the message contains `needle`.
pub fn check_message(client: &impl Client, req: Req, status: u16, code: &str, needle: &str) -> Value {
    let error = check(client, req, status, code);
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "message {message:?} should contain {needle:?}");
    error
}

fn assert_json_content_type(reply: &Reply, what: &str) {
    let content_type = reply.header("content-type").unwrap_or_default();
    assert!(content_type.starts_with("application/json"), "{what}: content-type {content_type:?}");
}

/// An append body.
pub fn event(entity_id: &str, event_type: &str, payload: Value) -> Value {
    json!({ "event_type": event_type, "entity_id": entity_id, "payload": payload })
}

/// Appends one event, expecting `201`; returns the stored event.
pub fn append(client: &impl Client, body: &Value) -> Value {
    ok(client, Req::post_json("/api/v1/events", body), 201)
}

/// Appends a JSON batch, expecting `201`; returns the response body.
pub fn append_batch(client: &impl Client, events: &[Value]) -> Value {
    ok(client, Req::post_json("/api/v1/events/batch", &json!({ "events": events })), 201)
}

pub fn stats(client: &impl Client) -> Value {
    ok(client, Req::get("/api/v1/stats"), 200)
}

/// `batches` append batches of `per_batch` events to entities `e0`, `e1`, ... with
/// `pad_bytes` of padding each: what the stalled-client tests append, far more than
/// the socket buffers on both sides and the HTTP layer's buffer hold.
pub fn padded_batches(batches: usize, per_batch: usize, pad_bytes: usize) -> Vec<Vec<Value>> {
    let pad = "p".repeat(pad_bytes);
    (0..batches)
        .map(|batch| {
            (0..per_batch).map(|i| event(&format!("e{i}"), "t", json!({"b": batch, "pad": pad}))).collect()
        })
        .collect()
}

/// Server flags for the tests of a client that stops reading: one subscriber at most,
/// a small buffer, and short stall and write timeouts.
pub const STALLED_CLIENT_FLAGS: [&str; 8] = [
    "--subscriber-buffer-bytes",
    "1024",
    "--subscriber-stall-ms",
    "200",
    "--write-timeout-ms",
    "300",
    "--max-subscribers",
    "1",
];

/// The subscriptions open now, from a `GET /metrics` reply's text.
pub fn subscribers_open(metrics_text: &str) -> u64 {
    let line = metrics_text.lines().find(|line| line.starts_with("allsource_subscribers "));
    let value = line.and_then(|line| line.split(' ').nth(1)).unwrap_or_else(|| {
        panic!("no allsource_subscribers gauge in:\n{metrics_text}");
    });
    value.parse().unwrap()
}

/// Every event in the store, in position order (at most 10,000).
pub fn all_events(client: &impl Client) -> Vec<Value> {
    let body = ok(client, Req::get("/api/v1/events/query?limit=10000"), 200);
    assert!(body["next_after"].is_null(), "more than 10,000 events");
    body["events"].as_array().unwrap().clone()
}

/// Every event matching the query parameters `filter` (`""` for all, else e.g.
/// `"entity_id=x"`, already encoded), in position order, paging with `next_after`.
pub fn all_events_paged(client: &impl Client, filter: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let target = format!("/api/v1/events/query?limit=1000&after={after}&{filter}");
        let body = ok(client, Req::get(target), 200);
        events.extend(body["events"].as_array().unwrap().iter().cloned());
        match body["next_after"].as_u64() {
            Some(next) => {
                assert!(next > after, "next_after {next} does not move past {after}");
                after = next;
            }
            None => return events,
        }
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub fn encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Asserts `text` is RFC 3339 UTC with exactly six fractional digits and a `Z`.
pub fn assert_timestamp_format(text: &str) {
    let bytes = text.as_bytes();
    let pattern = "dddd-dd-ddTdd:dd:dd.ddddddZ";
    assert_eq!(bytes.len(), pattern.len(), "timestamp {text:?}");
    for (byte, want) in bytes.iter().zip(pattern.bytes()) {
        let good = if want == b'd' { byte.is_ascii_digit() } else { *byte == want };
        assert!(good, "timestamp {text:?} is not like {pattern}");
    }
}

/// Asserts `id` is a lower-case hyphenated UUID.
pub fn assert_uuid_format(id: &str) {
    assert_eq!(id.len(), 36, "{id}");
    assert!(id.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c) || c == '-'), "{id}");
    assert!(uuid::Uuid::try_parse(id).is_ok(), "{id}");
}
