//! API keys and request limits, through the real binary on a loopback port: who gets
//! `401` and `403`, that keys come from flags, a file and the environment, that no key
//! ever reaches the log, and that an overloaded or slow request gets `503 Overloaded`
//! or `504 Timeout` as JSON.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::process::{read_reply, request_bytes, spawn, Server};
use common::{append, assert_error, event, ok, stats, Client, Reply, Req};
use serde_json::json;

const READ_KEY: &str = "rk-5d1e0c3f9a7b4e21a8c6";
const WRITE_KEY: &str = "wk-0b9f8e7d6c5b4a39281f";
const WAIT: Duration = Duration::from_secs(20);

/// The server, with an `Authorization: Bearer` header on every request.
struct WithKey<'a> {
    server: &'a Server,
    key: &'a str,
}

impl Client for WithKey<'_> {
    fn send(&self, req: Req) -> Reply {
        self.server.send(req.header("authorization", &format!("Bearer {}", self.key)))
    }
}

fn server_with_keys() -> Server {
    Server::start_with(&[
        "--in-memory",
        "--api-key",
        &format!("{READ_KEY}:read"),
        "--api-key",
        &format!("{WRITE_KEY}:write"),
    ])
}

/// Asserts a `401 Unauthorized` with `WWW-Authenticate: Bearer ...`; returns that header.
fn assert_unauthorized(reply: &Reply, what: &str) -> String {
    assert_error(reply, 401, "Unauthorized", what);
    let challenge = reply.header("www-authenticate").unwrap_or_else(|| panic!("{what}: no WWW-Authenticate"));
    assert!(challenge.starts_with("Bearer "), "{what}: {challenge}");
    challenge.to_string()
}

#[test]
fn without_a_key_only_health_answers() {
    let server = server_with_keys();
    ok(&server, Req::get("/health"), 200);
    for req in [
        Req::get("/api/v1/stats"),
        Req::get("/api/v1/events/query"),
        Req::post_json("/api/v1/events", &event("e", "t", json!({}))),
        // Unknown routes too: no key, no hint of what exists.
        Req::get("/api/v1/nothing-here"),
        Req::get("/metrics"),
    ] {
        let what = format!("{} {}", req.method, req.target);
        let challenge = assert_unauthorized(&server.send(req), &what);
        assert!(!challenge.contains("invalid_token"), "{what}: {challenge}");
    }
    // A scheme other than Bearer is no key either.
    let reply = server.send(Req::get("/api/v1/stats").header("authorization", "Basic cms6cms="));
    assert_unauthorized(&reply, "basic auth");
    assert_eq!(stats(&WithKey { server: &server, key: READ_KEY })["total_events"], 0);
}

#[test]
fn a_wrong_key_is_unauthorized() {
    let server = server_with_keys();
    let almost = &WRITE_KEY[..WRITE_KEY.len() - 1];
    for token in [almost, "nonsense", &format!("{WRITE_KEY}x"), &format!("{WRITE_KEY}:write")] {
        let reply = WithKey { server: &server, key: token }
            .send(Req::post_json("/api/v1/events", &event("e", "t", json!({}))));
        let challenge = assert_unauthorized(&reply, token);
        assert!(challenge.contains(r#"error="invalid_token""#), "{challenge}");
        assert!(!reply.text().contains(token), "the reply repeats the token: {}", reply.text());
    }
    assert_eq!(stats(&WithKey { server: &server, key: READ_KEY })["total_events"], 0);
}

#[test]
fn a_read_key_reads_and_cannot_write() {
    let server = server_with_keys();
    let reader = WithKey { server: &server, key: READ_KEY };
    let writer = WithKey { server: &server, key: WRITE_KEY };
    let stored = append(&writer, &event("order-1", "placed", json!({"total": 5})));

    // Reading: every GET route.
    let id = stored["id"].as_str().unwrap();
    assert_eq!(ok(&reader, Req::get(format!("/api/v1/events/{id}")), 200), stored);
    assert_eq!(ok(&reader, Req::get("/api/v1/entities/order-1/state"), 200)["state"], json!({"total": 5}));
    assert_eq!(ok(&reader, Req::get("/api/v1/events/query"), 200)["count"], 1);
    // A key does not turn an unknown route into something else.
    common::check(&reader, Req::get("/api/v1/nothing-here"), 404, "NotFound");

    // Writing: 403, and nothing appended.
    for req in [
        Req::post_json("/api/v1/events", &event("order-1", "paid", json!({}))),
        Req::post_json("/api/v1/events/batch", &json!({"events": [event("order-2", "placed", json!({}))]})),
    ] {
        let what = format!("{} {}", req.method, req.target);
        let error = common::check(&reader, req, 403, "Forbidden");
        assert!(error["message"].as_str().unwrap().contains("write key"), "{what}: {error}");
    }
    assert_eq!(stats(&reader)["total_events"], 1);

    // The write key writes (and reads).
    append(&writer, &event("order-1", "paid", json!({"paid": true})));
    assert_eq!(stats(&writer)["total_events"], 2);
    assert_eq!(stats(&reader)["total_events"], 2);
}

#[test]
fn keys_from_a_file_and_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys");
    std::fs::write(&file, "# the team's keys\n\nfile-reader-key:read\n  file-writer-key:write\n").unwrap();
    let file = file.to_str().unwrap();
    let server = Server::launch(
        &["--addr", "127.0.0.1:0", "--in-memory", "--api-keys-file", file],
        &[("ALLSOURCE_API_KEYS", "env-reader-key:read,env-writer-key:write")],
    );
    for (key, can_write) in [
        ("file-reader-key", false),
        ("file-writer-key", true),
        ("env-reader-key", false),
        ("env-writer-key", true),
    ] {
        let client = WithKey { server: &server, key };
        ok(&client, Req::get("/api/v1/stats"), 200);
        let reply = client.send(Req::post_json("/api/v1/events", &event(key, "t", json!({}))));
        assert_eq!(reply.status, if can_write { 201 } else { 403 }, "{key}: {}", reply.text());
    }
    let reply = WithKey { server: &server, key: "other" }.send(Req::get("/api/v1/stats"));
    assert_unauthorized(&reply, "unknown key");
}

#[test]
fn a_malformed_keys_file_stops_the_start_without_showing_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys");
    std::fs::write(&file, "# keys\ngood-key:read\nleaky-secret-key:superuser\n").unwrap();
    let child =
        spawn(&["--addr", "127.0.0.1:0", "--in-memory", "--api-keys-file", file.to_str().unwrap()], &[]);
    let Err((status, log)) = Server::try_attach(child) else { panic!("the server started") };
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("line 3"), "{log}");
    assert!(!log.contains("leaky-secret"), "{log}");

    // The same for a bad --api-key: clap never sees it fail, so never echoes it.
    let child = spawn(&["--addr", "127.0.0.1:0", "--in-memory", "--api-key", "leaky-secret-key"], &[]);
    let Err((status, log)) = Server::try_attach(child) else { panic!("the server started") };
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("API key 1"), "{log}");
    assert!(!log.contains("leaky-secret"), "{log}");
}

#[test]
fn keys_never_reach_the_log() {
    let wrong = "wrong-token-4f5e6d7c8b9a";
    // The most verbose log there is for every crate.
    let server = Server::launch(
        &[
            "--addr",
            "127.0.0.1:0",
            "--in-memory",
            "--api-key",
            &format!("{WRITE_KEY}:write"),
            "--api-keys-file",
            "/dev/null",
        ],
        &[("RUST_LOG", "trace"), ("ALLSOURCE_API_KEYS", "ignored-because-flags-win:read")],
    );
    let writer = WithKey { server: &server, key: WRITE_KEY };
    append(&writer, &event("e", "t", json!({})));
    assert_unauthorized(&WithKey { server: &server, key: wrong }.send(Req::get("/api/v1/stats")), "wrong");
    common::check(
        &WithKey { server: &server, key: READ_KEY },
        Req::get("/api/v1/stats"),
        401,
        "Unauthorized",
    );
    server.signal("TERM");
    let mut log = server.startup_log.clone();
    log.extend(server.rest_of_log(WAIT));
    assert!(log.iter().any(|line| line.contains("stopped")), "{log:#?}");
    assert!(log.iter().any(|line| line.contains("DEBUG")), "a trace log should say more: {log:#?}");
    for line in &log {
        for secret in [WRITE_KEY, wrong, READ_KEY] {
            assert!(!line.contains(secret), "the log shows {secret:?}: {line}");
        }
    }

    // --help shows no value of the keys' environment variable.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_allsource"))
        .arg("--help")
        .env("ALLSOURCE_API_KEYS", format!("{WRITE_KEY}:write"))
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("ALLSOURCE_API_KEYS"), "{help}");
    assert!(!help.contains(WRITE_KEY), "{help}");
}

/// A POST to `/api/v1/events` whose body is only partly sent: the server holds it in
/// flight (reading the body) until the rest comes. Returns the connection and the rest.
fn start_held_append(server: &Server, with_key: impl Fn(Req) -> Req) -> (std::net::TcpStream, Vec<u8>) {
    let append = Req::post_json("/api/v1/events", &event("held", "t", json!({})));
    let bytes = request_bytes(server.addr, &with_key(append));
    let split = bytes.len() - 5;
    let mut stream = server.connect();
    stream.write_all(&bytes[..split]).unwrap();
    (stream, bytes[split..].to_vec())
}

/// Whether the server has answered on `stream` already (without reading the answer).
fn answered(stream: &std::net::TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let answered = matches!(stream.peek(&mut byte), Ok(n) if n > 0);
    stream.set_nonblocking(false).unwrap();
    answered
}

#[test]
fn overload_is_refused_with_retry_after() {
    let server = Server::start_with(&["--in-memory", "--concurrent-requests-max", "1"]);
    let (mut held, rest, refused) = hold_the_slot(&server, None);
    let error = assert_error(&refused, 503, "Overloaded", "GET /api/v1/stats");
    assert!(error["message"].as_str().unwrap().contains("1 requests in flight"), "{error}");
    assert_eq!(refused.header("retry-after"), Some("1"));
    let reply = server.send(Req::post_json("/api/v1/events", &event("refused", "t", json!({}))));
    assert_error(&reply, 503, "Overloaded", "POST /api/v1/events");
    // The liveness probe, the metrics and the API description are outside the limit,
    // and an unknown route is still answered as one.
    ok(&server, Req::get("/health"), 200);
    assert_eq!(server.send(Req::get("/metrics")).status, 200);
    ok(&server, Req::get("/openapi.json"), 200);
    assert_error(&server.send(Req::get("/nope")), 404, "NotFound", "GET /nope");

    // The held request completes; its slot is free again.
    held.write_all(&rest).unwrap();
    let reply = read_reply(&mut held).unwrap();
    assert_eq!(reply.status, 201, "{}", reply.text());
    let events = common::all_events(&server);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["entity_id"], "held");
}

#[test]
fn a_request_without_a_key_is_refused_before_it_takes_a_slot() {
    let key_arg = format!("{WRITE_KEY}:write");
    let server =
        Server::start_with(&["--in-memory", "--concurrent-requests-max", "1", "--api-key", &key_arg]);
    let (mut held, rest, _) = hold_the_slot(&server, Some(WRITE_KEY));
    // Every slot is taken, yet a request without a key hears that it has none.
    let reply = server.send(Req::get("/api/v1/stats"));
    assert_error(&reply, 401, "Unauthorized", "GET /api/v1/stats without a key, while overloaded");
    let reply =
        server.send(Req::get("/api/v1/stats").header("authorization", &format!("Bearer {WRITE_KEY}")));
    assert_error(&reply, 503, "Overloaded", "GET /api/v1/stats with a key, while overloaded");
    held.write_all(&rest).unwrap();
    assert_eq!(read_reply(&mut held).unwrap().status, 201);
}

/// Holds the server's one request slot with an append whose body is partly sent, and
/// returns its connection, the rest of its body and the `503` a probe got meanwhile.
/// Until the server has read the held request, probes still get through; and if the
/// server reads it while a probe has the slot, the held request is the one refused:
/// then it holds another.
fn hold_the_slot(server: &Server, key: Option<&str>) -> (std::net::TcpStream, Vec<u8>, Reply) {
    let with_key = |req: Req| match key {
        Some(key) => req.header("authorization", &format!("Bearer {key}")),
        None => req,
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let (mut held, rest) = start_held_append(server, with_key);
        loop {
            let reply = server.send(with_key(Req::get("/api/v1/stats")));
            if reply.status == 503 {
                return (held, rest, reply);
            }
            assert_eq!(reply.status, 200, "{}", reply.text());
            if answered(&held) {
                let reply = read_reply(&mut held).unwrap();
                assert_error(&reply, 503, "Overloaded", "the held POST, refused while a probe ran");
                break;
            }
            assert!(Instant::now() < deadline, "never overloaded");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

#[test]
fn a_slow_request_times_out_as_json() {
    let server = Server::start_with(&["--in-memory", "--request-timeout-ms", "300"]);
    let started = Instant::now();
    let (mut held, _rest) = start_held_append(&server, |req| req);
    let reply = read_reply(&mut held).unwrap();
    let error = assert_error(&reply, 504, "Timeout", "held POST");
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    assert!(error["message"].as_str().unwrap().contains("same id"), "{error}");
    assert_eq!(stats(&server)["total_events"], 0);
}
