//! End-to-end tests: the real `allsource` binary on a free loopback port, spoken to
//! over real HTTP/1.1 with a tiny blocking client. Every test's server is killed when
//! the test ends (the `Server` guard), and every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use common::process::{read_one_reply, request_bytes, send_raw, spawn, Server, STARTUP_TIMEOUT};
use common::{
    all_events, append, append_batch, assert_error, columnar, event, ok, scenarios, stats, Client, Req,
};
use serde_json::json;

const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

common::shared_scenario_tests!(Server::start());

/// 70,000 events exported through the real binary over HTTP: streamed (chunked, no
/// `Content-Length`), every event once, equal to the JSON API's.
#[test]
fn big_export() {
    let server = Server::start();
    columnar::big_export(&server, 70_000, 16);
    for format in ["parquet", "arrow"] {
        let reply = server.send(Req::get(format!("/api/v1/export/{format}?after=69000")));
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("transfer-encoding"), Some("chunked"), "{format}");
        assert_eq!(reply.header("content-length"), None, "{format}");
    }
    server.wait_for_log(&["export finished", "events=1000"], EXIT_TIMEOUT);
}

/// A client that goes away in the middle of an export stops it (the server logs it),
/// and the server goes on serving.
#[test]
fn an_export_stops_when_the_client_goes_away() {
    let server = Server::start();
    // About 40 MB as an Arrow stream: far more than the socket buffers and the export's
    // channel hold, so the export is still running when the client leaves.
    let pad = "y".repeat(500);
    for batch in 0..7 {
        let events: Vec<_> =
            (0..10_000).map(|i| event(&format!("e{i}"), "t", json!({"batch": batch, "pad": pad}))).collect();
        append_batch(&server, &events);
    }
    let mut stream = server.connect();
    stream.write_all(&request_bytes(server.addr, &Req::get("/api/v1/export/arrow"))).unwrap();
    let mut start = vec![0u8; 256 * 1024];
    stream.read_exact(&mut start).unwrap();
    assert!(start.starts_with(b"HTTP/1.1 200 OK\r\n"), "{}", String::from_utf8_lossy(&start[..64]));
    drop(stream);
    server.wait_for_log(&["export stopped: the client went away"], EXIT_TIMEOUT);
    ok(&server, Req::get("/health"), 200);
    let reply = server.send(Req::get("/api/v1/export/parquet?after=69990"));
    assert_eq!(columnar::read_parquet(&reply.body).0.len(), 10);
}

#[test]
fn occ_race() {
    scenarios::occ_race(&Server::start(), 8, 20);
}

#[test]
fn concurrent_appenders() {
    scenarios::concurrent_appenders(&Server::start(), 4, 100);
}

#[test]
fn sigterm_exits_zero() {
    let server = Server::start();
    common::append(&server, &event("e", "t", json!({})));
    server.signal("TERM");
    server.wait_for_log(&["SIGTERM received"], EXIT_TIMEOUT);
    let status = server.wait_exit(EXIT_TIMEOUT);
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn sigint_exits_zero() {
    let server = Server::start();
    server.signal("INT");
    let status = server.wait_exit(EXIT_TIMEOUT);
    assert_eq!(status.code(), Some(0), "{status:?}");
}

/// A request whose body is still arriving when SIGTERM comes is finished and answered
/// before the process exits.
#[test]
fn sigterm_finishes_the_request_in_flight() {
    let server = Server::launch(
        &["--addr", "127.0.0.1:0", "--in-memory"],
        &[("RUST_LOG", "info,allsource_server::guard=debug")],
    );
    let mut stream = server.connect();
    // A first, complete exchange on a kept-alive connection: the server has accepted it.
    let warm_up = Req::get("/api/v1/stats").header("connection", "keep-alive");
    stream.write_all(&request_bytes(server.addr, &warm_up)).unwrap();
    assert_eq!(read_one_reply(&mut stream).unwrap().status, 200);

    let body = serde_json::to_vec(&event("in-flight", "t", json!({"n": 1}))).unwrap();
    let bytes = request_bytes(server.addr, &Req::post("/api/v1/events", Some("application/json"), body));
    let (first, rest) = bytes.split_at(bytes.len() - 5);
    stream.write_all(first).unwrap();
    // The handler has the request (it is waiting for the rest of the body).
    server.wait_for_log(&["route=/api/v1/events}", "started"], EXIT_TIMEOUT);
    server.signal("TERM");
    server.wait_for_log(&["SIGTERM received"], EXIT_TIMEOUT);
    // The server stops accepting: from then on it is shutting down.
    let refused = (0..1000).any(|_| {
        let refused = std::net::TcpStream::connect(server.addr).is_err();
        if !refused {
            std::thread::sleep(Duration::from_millis(10));
        }
        refused
    });
    assert!(refused, "the server still accepts connections after SIGTERM");
    stream.write_all(rest).unwrap();
    let reply = common::process::read_reply(&mut stream).unwrap();
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(reply.json()["entity_id"], "in-flight");
    let status = server.wait_exit(EXIT_TIMEOUT);
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn a_taken_port_is_a_clear_error_and_a_non_zero_exit() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut child = spawn(&["--addr", &addr, "--in-memory"], &[]);
    let deadline = Instant::now() + EXIT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server kept running on a taken port");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    assert!(!status.success(), "{status:?}");
    assert!(log.contains(&format!("could not listen on {addr}")), "{log}");
    drop(taken);
}

#[test]
fn help_lists_every_option() {
    let output = Command::new(env!("CARGO_BIN_EXE_allsource")).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for needle in [
        "--addr",
        "ALLSOURCE_ADDR",
        "127.0.0.1:8080",
        "--data-dir",
        "ALLSOURCE_DATA_DIR",
        "./data",
        "--in-memory",
        "--help",
        "--version",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
    let output = Command::new(env!("CARGO_BIN_EXE_allsource")).arg("--version").output().unwrap();
    assert!(String::from_utf8(output.stdout).unwrap().contains(env!("CARGO_PKG_VERSION")));
    let output = Command::new(env!("CARGO_BIN_EXE_allsource")).arg("--no-such-flag").output().unwrap();
    assert!(!output.status.success());
}

/// With a data directory, events survive a restart with every field intact, start-up
/// says how many it recovered, a second server cannot open the same directory, and
/// `--in-memory` says loudly that nothing is kept.
#[test]
fn data_directory_survives_restart_and_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let data = data_dir.to_str().unwrap();
    let server = Server::start_with(&["--data-dir", data]);
    let first = append(&server, &event("order/7", "created", json!({"n": 1, "big": u64::MAX})));
    let batch =
        append_batch(&server, &[event("order/7", "paid", json!({"n": 2})), event("x", "t", json!(null))]);
    assert_eq!(batch["count"], 2);
    let before = all_events(&server);
    let state = ok(&server, Req::get("/api/v1/entities/order%2F7/state"), 200);

    // A second server on the same directory exits 1 with a clear error and writes
    // nothing: one line, with no backtrace even where backtraces are asked for.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_allsource"))
        .args(["--addr", "127.0.0.1:0", "--data-dir", data])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let error_line = stderr.lines().find(|line| line.starts_with("Error: "));
    assert!(error_line.is_some_and(|line| line.contains("in use")), "{stderr}");
    assert!(!stderr.contains("backtrace") && !stderr.contains("Backtrace"), "{stderr}");

    server.signal("TERM");
    assert!(server.wait_exit(STARTUP_TIMEOUT).success());
    drop(server);

    let server = Server::start_with(&["--data-dir", data]);
    let log = server.startup_log.join("\n");
    assert!(log.contains("recovered 3 events"), "{log}");
    assert_eq!(all_events(&server), before);
    assert_eq!(
        ok(&server, Req::get(format!("/api/v1/events/{}", first["id"].as_str().unwrap())), 200),
        first
    );
    assert_eq!(ok(&server, Req::get("/api/v1/entities/order%2F7/snapshot"), 200), state);
    let stats = stats(&server);
    assert_eq!((stats["total_events"].as_u64(), stats["total_ingested"].as_u64()), (Some(3), Some(0)));
    assert_eq!(stats["storage"]["kind"], "wal+parquet");
    assert_eq!(stats["storage"]["sync"], "always");
    let next = append(&server, &event("order/7", "shipped", json!({})));
    assert_eq!((next["position"].as_u64(), next["version"].as_u64()), (Some(4), Some(3)));
    assert!(next["timestamp"].as_str().unwrap() >= before[2]["timestamp"].as_str().unwrap());

    let server = Server::start_with(&["--in-memory"]);
    let log = server.startup_log.join("\n");
    assert!(log.contains("WARN") && log.contains("in memory only"), "{log}");
}

#[test]
fn configuration_from_the_environment() {
    let server = Server::launch(&[], &[("ALLSOURCE_ADDR", "127.0.0.1:0"), ("ALLSOURCE_IN_MEMORY", "true")]);
    ok(&server, Req::get("/health"), 200);
}

/// Hostile or broken requests get an answer (or a closed connection) and the server
/// goes on serving.
#[test]
fn hostile_requests_do_not_hurt_the_server() {
    let server = Server::start();
    let addr = server.addr;
    // Requests hyper cannot read, which it answers itself: with the contract's JSON
    // body all the same.
    let many_headers: String = (0..101).map(|i| format!("X-{i}: 1\r\n")).collect();
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
    for (raw, status, code) in [
        (&b"GARBAGE\r\n\r\n"[..], 400, "BadRequest"),
        (b"GET / HTTP/9.9\r\n\r\n", 400, "BadRequest"),
        (b"\x00\x01\x02\x03\r\n\r\n", 400, "BadRequest"),
        (b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n", 400, "BadRequest"),
        (b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n", 400, "BadRequest"),
        (
            b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            400,
            "BadRequest",
        ),
        (format!("GET /health HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n").as_bytes(), 431, "HeadersTooLarge"),
        (long_target.as_bytes(), 414, "UriTooLong"),
    ] {
        let what = String::from_utf8_lossy(&raw[..raw.len().min(40)]).into_owned();
        let reply = send_raw(addr, raw).unwrap();
        assert_error(&reply, status, code, &what);
        assert!(reply.header("x-request-id").is_some_and(|id| id.parse::<uuid::Uuid>().is_ok()), "{what}");
    }
    // A header that is not UTF-8.
    let mut raw = b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/\xffjson\r\nContent-Length: 2\r\n\r\n{}".to_vec();
    let reply = send_raw(addr, &raw).unwrap();
    assert_error(&reply, 415, "UnsupportedMediaType", "non-UTF-8 content type");
    // A content coding is never decoded: a body said to be compressed is refused and
    // nothing is appended (the body here is plain, which must not slip through).
    let coded = |path: &str, content_type: &str, coding: &str| {
        let body = r#"{"event_type":"t","entity_id":"coded","payload":1}"#;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: {content_type}\r\n"
        );
        let raw = format!("{head}Content-Encoding: {coding}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        send_raw(addr, raw.as_bytes()).unwrap()
    };
    let reply = coded("/api/v1/events", "application/json", "gzip");
    assert_error(&reply, 415, "UnsupportedMediaType", "gzip");
    let reply = coded("/api/v1/events/batch", "application/x-ndjson", "identity, br");
    assert_error(&reply, 415, "UnsupportedMediaType", "identity, br");
    assert_eq!(stats(&server)["total_events"], 0);
    assert_eq!(coded("/api/v1/events", "application/json", "identity").status, 201, "identity is no coding");
    // A client that goes away in the middle of a body: nothing is appended.
    raw = request_bytes(addr, &Req::post_json("/api/v1/events", &event("gone", "t", json!({"x": 1}))));
    let mut stream = server.connect();
    stream.write_all(&raw[..raw.len() - 3]).unwrap();
    drop(stream);
    // A huge header block.
    let huge = format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(1024 * 1024));
    if let Ok(reply) = send_raw(addr, huge.as_bytes()) {
        assert_error(&reply, 431, "HeadersTooLarge", "a 1 MiB header");
    }
    // A body much larger than it says: only the declared bytes are the request.
    let body = serde_json::to_vec(&event("ok", "t", json!({}))).unwrap();
    let mut raw = request_bytes(addr, &Req::post("/api/v1/events", Some("application/json"), body));
    raw.extend_from_slice(b"GARBAGE AFTER THE BODY");
    assert_eq!(send_raw(addr, &raw).unwrap().status, 201);

    ok(&server, Req::get("/health"), 200);
    let s = stats(&server);
    // "coded" (sent with `identity`) and "ok".
    assert_eq!((s["total_events"].as_u64(), s["total_entities"].as_u64()), (Some(2), Some(2)));
    assert_eq!(server.send(Req::get("/api/v1/events/query?entity_id=gone")).json()["count"], 0);
}
