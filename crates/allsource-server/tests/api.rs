//! In-process tests of the whole API: the router driven with `oneshot`, no socket.
//! Every scenario of `common::scenarios` runs here, plus what only a test inside the
//! process can set up (a panicking handler, a failing log, a body without a declared
//! length).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use allsource_core::projection::Projection;
use allsource_core::{Error, Event, EventStore, Log, LogInfo, Recovered, Result};
use axum::body::Body;
use axum::http::Request;
use common::inproc::InProcess;
use common::{check, columnar, event, ok, scenarios, stats, Client, Req};
use serde_json::{json, Value};

common::shared_scenario_tests!(InProcess::new());

/// 70,000 events: 18 pages of the export, two Parquet row groups.
#[test]
fn big_export() {
    columnar::big_export(&InProcess::new(), 70_000, 16);
}

#[test]
fn occ_race() {
    scenarios::occ_race(&InProcess::new(), 8, 20);
}

#[test]
fn concurrent_appenders() {
    scenarios::concurrent_appenders(&InProcess::new(), 4, 100);
}

/// A body over 16 MiB without a declared length (as a chunked body arrives) is cut
/// off at the limit: 413 in our shape, nothing appended.
#[test]
fn body_over_the_limit_without_content_length() {
    let c = InProcess::new();
    let body = vec![b' '; 17 * 1024 * 1024];
    for (target, content_type) in [
        ("/api/v1/events", "application/json"),
        ("/api/v1/events/batch", "application/json"),
        ("/api/v1/events/batch", "application/x-ndjson"),
    ] {
        let request = Request::post(target)
            .header("content-type", content_type)
            .body(Body::from(body.clone()))
            .unwrap();
        let reply = c.send_http(request);
        let error = common::assert_error(&reply, 413, "PayloadTooLarge", target);
        assert!(error["message"].as_str().unwrap().contains("over the limit"), "{error}");
    }
    assert_eq!(stats(&c)["total_events"], 0);
}

/// A projection whose reads panic: a bug, to check that a panic becomes a 500 and the
/// server lives on.
struct PanickingProjection;

impl Projection for PanickingProjection {
    fn name(&self) -> &str {
        "panicky"
    }
    fn process(&self, _event: &Event) -> Result<()> {
        Ok(())
    }
    fn get_state(&self, _key: &str) -> Option<Value> {
        panic!("secret panic detail")
    }
    fn clear(&self) {}
}

#[test]
fn a_panic_is_an_internal_error_and_the_server_lives_on() {
    let c = InProcess::new();
    c.store.register_projection(Arc::new(PanickingProjection)).unwrap();
    for _ in 0..3 {
        let error = check(&c, Req::get("/api/v1/projections/panicky/key"), 500, "InternalError");
        assert!(!error.to_string().contains("secret"), "{error}");
        ok(&c, Req::get("/health"), 200);
    }
    let list = ok(&c, Req::get("/api/v1/projections"), 200);
    assert!(list["projections"].as_array().unwrap().contains(&json!({"name": "panicky"})));
    common::append(&c, &event("e", "t", json!({})));
}

/// A log that accepts `n_ok` appends, then fails every one after.
struct FailingLog {
    n_ok: AtomicUsize,
}

impl Log for FailingLog {
    fn append(&self, _events: &[Arc<Event>]) -> Result<()> {
        let left = self.n_ok.load(Ordering::SeqCst);
        if left == 0 {
            return Err(Error::Storage {
                message: "no space left on device (simulated)".into(),
                read_only: false,
            });
        }
        self.n_ok.store(left - 1, Ordering::SeqCst);
        Ok(())
    }
    fn recover(&self) -> Result<Recovered> {
        Ok(Recovered::default())
    }
    fn describe(&self) -> LogInfo {
        LogInfo { kind: "failing", durable: true, ..LogInfo::default() }
    }
}

#[test]
fn a_storage_failure_is_503_and_changes_nothing() {
    let store = EventStore::open(Box::new(FailingLog { n_ok: AtomicUsize::new(1) })).unwrap();
    let c = InProcess::with_store(Arc::new(store));
    let first = common::append(&c, &event("acct", "t", json!({"a": 1})));
    let before = stats(&c);
    assert_eq!(before["read_only"], false);
    assert_eq!(
        (&before["storage"]["kind"], &before["storage"]["durable"]),
        (&json!("failing"), &json!(true))
    );

    let error = check(
        &c,
        Req::post_json("/api/v1/events", &event("acct", "t", json!({"b": 2}))),
        503,
        "StorageError",
    );
    assert_eq!(error["read_only"], true);
    // Read-only from now on, for single events and batches alike.
    check(&c, Req::post_json("/api/v1/events", &event("other", "t", json!({}))), 503, "StorageError");
    let batch = json!({"events": [event("x", "t", json!({}))]});
    check(&c, Req::post_json("/api/v1/events/batch", &batch), 503, "StorageError");

    let after = stats(&c);
    assert_eq!(after["read_only"], true);
    for field in ["total_events", "total_entities", "total_ingested", "committed_position"] {
        assert_eq!(after[field], before[field], "{field}");
    }
    // What was acknowledged before stays readable.
    let state = ok(&c, Req::get("/api/v1/entities/acct/state"), 200);
    assert_eq!((&state["state"], &state["version"]), (&json!({"a": 1}), &json!(1)));
    assert_eq!(common::all_events(&c), vec![first]);
    ok(&c, Req::get("/health"), 200);
}

/// Error responses to HEAD requests carry no body but keep the status.
#[test]
fn head_requests() {
    let c = InProcess::new();
    let reply = c.send(Req::new("HEAD", "/health"));
    assert_eq!((reply.status, reply.body.len()), (200, 0));
    let reply = c.send(Req::new("HEAD", "/api/v1/entities/ghost/state"));
    assert_eq!((reply.status, reply.body.len()), (404, 0));
}
