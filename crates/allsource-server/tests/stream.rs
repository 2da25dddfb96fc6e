//! Subscriptions through the real `allsource` binary on a loopback port:
//! `GET /api/v1/events/stream` read as it arrives (NDJSON and Server-Sent Events)
//! with a small blocking HTTP/1.1 reader that decodes the chunked body line by line.
//! Every wait is bounded: reads time out, loops are bounded in count and time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::process::{request_bytes, Server};
use common::{all_events_paged, append, append_batch, check, encode, event, stats, Client, Req};
use serde_json::{json, Value};

/// How long a read of the stream may wait for the next line.
const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// A response read as it arrives.
struct Subscriber {
    reader: BufReader<TcpStream>,
    status: u16,
    /// Header names in lower case.
    headers: Vec<(String, String)>,
    /// Body bytes decoded but not yet returned as lines.
    pending: Vec<u8>,
    /// The terminating chunk was read: the body ended cleanly.
    ended: bool,
}

impl Subscriber {
    /// `GET target` with `headers`; reads the status line and the headers.
    fn open(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Subscriber {
        let mut req = Req::get(target);
        for (name, value) in headers {
            req = req.header(name, value);
        }
        let mut stream = TcpStream::connect_timeout(&addr, READ_TIMEOUT).unwrap();
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.write_all(&request_bytes(addr, &req)).unwrap();
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).unwrap();
        let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            panic!("GET {target}: bad status line {status_line:?}");
        });
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        Subscriber { reader, status, headers, pending: Vec::new(), ended: false }
    }

    /// A stream that must have started: `200`, chunked, of this content type.
    fn start(addr: SocketAddr, target: &str, headers: &[(&str, &str)], content_type: &str) -> Subscriber {
        let mut subscriber = Subscriber::open(addr, target, headers);
        if subscriber.status != 200 {
            let body = subscriber.whole_body();
            panic!("GET {target}: status {}: {body}", subscriber.status);
        }
        assert_eq!(subscriber.header("content-type"), Some(content_type), "GET {target}");
        assert_eq!(subscriber.header("transfer-encoding"), Some("chunked"), "GET {target}");
        assert_eq!(subscriber.header("cache-control"), Some("no-cache"), "GET {target}");
        subscriber
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The body of a response framed by its `Content-Length` (an error reply).
    fn whole_body(&mut self) -> String {
        let length: usize = self.header("content-length").unwrap().parse().unwrap();
        let mut body = vec![0u8; length];
        self.reader.read_exact(&mut body).unwrap();
        String::from_utf8(body).unwrap()
    }

    /// The next line of the body (without its `\n`), or `None` once the body ended
    /// cleanly. A body cut short (no terminating chunk) fails the test.
    fn next_line(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return Some(String::from_utf8(line[..end].to_vec()).unwrap());
            }
            if self.ended {
                assert!(self.pending.is_empty(), "the body ended inside a line: {:?}", self.pending);
                return None;
            }
            let mut size_line = String::new();
            let n =
                self.reader.read_line(&mut size_line).unwrap_or_else(|e| panic!("reading the stream: {e}"));
            assert!(n > 0, "the connection closed without the body's terminating chunk");
            let size = usize::from_str_radix(size_line.trim_end(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
            let mut data = vec![0u8; size + 2];
            self.reader.read_exact(&mut data).unwrap();
            assert!(data.ends_with(b"\r\n"), "a chunk without its CRLF");
            if size == 0 {
                self.ended = true;
            } else {
                self.pending.extend_from_slice(&data[..size]);
            }
        }
    }

    /// The next NDJSON object, or `None` at the end of the body.
    fn next_json(&mut self) -> Option<Value> {
        let line = self.next_line()?;
        Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}")))
    }

    /// The next Server-Sent Events message, or `None` at the end of the body.
    fn next_message(&mut self) -> Option<SseMessage> {
        let mut message = SseMessage::default();
        loop {
            let line = self.next_line()?;
            if line.is_empty() {
                return Some(message);
            }
            let (field, value) = line.split_once(": ").unwrap_or_else(|| panic!("bad SSE line {line:?}"));
            match field {
                "id" => message.id = Some(value.parse().unwrap()),
                "event" => message.event = Some(value.to_string()),
                "data" => {
                    assert!(message.data.is_null(), "two data lines in one message");
                    message.data = serde_json::from_str(value).unwrap();
                }
                other => panic!("unexpected SSE field {other:?}"),
            }
        }
    }
}

#[derive(Debug, Default)]
struct SseMessage {
    id: Option<u64>,
    event: Option<String>,
    data: Value,
}

/// What an NDJSON stream said, in order.
#[derive(Debug, Default)]
struct Received {
    events: Vec<Value>,
    /// Each `caught_up` line, with how many events came before it.
    caught_up: Vec<(usize, Value)>,
}

impl Received {
    fn positions(&self) -> Vec<u64> {
        self.events.iter().map(|e| e["event"]["position"].as_u64().unwrap()).collect()
    }
}

/// Reads NDJSON lines until `done` holds for what was received, then until the next
/// heartbeat (so nothing that was already due can be missed).
fn read_until(subscriber: &mut Subscriber, received: &mut Received, done: impl Fn(&Received) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut finished = done(received);
    loop {
        assert!(Instant::now() < deadline, "the stream did not deliver in time: {received:?}");
        let line = subscriber.next_json().expect("the stream ended");
        match line["type"].as_str().unwrap() {
            "event" => received.events.push(line),
            "caught_up" => received.caught_up.push((received.events.len(), line)),
            "heartbeat" if finished => return,
            "heartbeat" => {}
            other => panic!("unexpected line type {other:?}: {line}"),
        }
        finished = finished || done(received);
    }
}

fn positions(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["position"].as_u64().unwrap()).collect()
}

/// A subscriber started in the middle of the log, while four writers keep appending to
/// a durable store, receives exactly the events after its cursor: the same as a full
/// query afterwards, in order, none twice, none missing, with one `caught_up` after
/// every event that was stored before it subscribed.
#[test]
fn catch_up_then_live_while_writers_append() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(&["--data-dir", dir.path().to_str().unwrap(), "--heartbeat-ms", "100"]);
    let seeded: Vec<Value> =
        (0..300).map(|i| event(&format!("e{}", i % 7), &format!("t{}", i % 3), json!({"i": i}))).collect();
    append_batch(&server, &seeded[..150]);
    append_batch(&server, &seeded[150..]);
    const AFTER: u64 = 120;
    const WRITERS: usize = 4;
    const SINGLES: usize = 40;
    const BATCHES: usize = 5;
    let total = 300 + WRITERS * (SINGLES + BATCHES * 10);

    let mut received = Received::default();
    std::thread::scope(|scope| {
        for writer in 0..WRITERS {
            let server = &server;
            scope.spawn(move || {
                for i in 0..SINGLES {
                    append(server, &event(&format!("w{writer}"), "live", json!({"i": i})));
                    if i % (SINGLES / BATCHES) == 0 {
                        let batch: Vec<Value> = (0..10)
                            .map(|j| event(&format!("b{writer}-{j}"), "live.batch", json!({"i": i})))
                            .collect();
                        append_batch(server, &batch);
                    }
                }
            });
        }
        let mut subscriber = Subscriber::start(
            server.addr,
            &format!("/api/v1/events/stream?after={AFTER}"),
            &[],
            "application/x-ndjson",
        );
        read_until(&mut subscriber, &mut received, |r| r.positions().last() == Some(&(total as u64)));
    });

    let stored: Vec<Value> = all_events_paged(&server, "")
        .into_iter()
        .filter(|e| e["position"].as_u64().unwrap() > AFTER)
        .collect();
    assert_eq!(stored.len(), total - AFTER as usize);
    let got: Vec<Value> = received.events.iter().map(|line| line["event"].clone()).collect();
    assert_eq!(positions(&got), positions(&stored), "the stream must equal the log after the cursor");
    assert_eq!(got, stored, "events must be sent as stored");

    assert_eq!(received.caught_up.len(), 1, "{:?}", received.caught_up);
    let (before, marker) = &received.caught_up[0];
    let caught_up_at = marker["position"].as_u64().unwrap();
    assert!(caught_up_at >= 300, "the catch-up covers what was stored before subscribing: {marker}");
    let positions = received.positions();
    assert!(positions[..*before].iter().all(|&p| p <= caught_up_at), "{marker} after {positions:?}");
    assert!(positions[*before..].iter().all(|&p| p > caught_up_at), "{marker} before {positions:?}");
}

/// Entity and type filters, alone and together, over catch-up and live events: each
/// stream equals the query with the same filters.
#[test]
fn filters_select_the_same_events_as_a_query() {
    let server = Server::start_with(&["--in-memory", "--heartbeat-ms", "100"]);
    let entities = ["order/7", "user-1", "user-2"];
    let types = ["placed", "paid"];
    let body = |i: usize| event(entities[i % 3], types[i % 2], json!({"i": i}));
    append_batch(&server, &(0..60).map(body).collect::<Vec<_>>());

    let filters = [
        format!("entity_id={}", encode("order/7")),
        "event_type=paid".to_string(),
        format!("entity_id={}&event_type=paid", encode("order/7")),
        "entity_id=nobody".to_string(),
    ];
    let mut subscribers: Vec<Subscriber> = filters
        .iter()
        .map(|f| {
            Subscriber::start(server.addr, &format!("/api/v1/events/stream?{f}"), &[], "application/x-ndjson")
        })
        .collect();
    // Live: singles and a batch, after every stream has started.
    for i in 60..90 {
        append(&server, &body(i));
    }
    append_batch(&server, &(90..120).map(body).collect::<Vec<_>>());

    for (filter, subscriber) in filters.iter().zip(&mut subscribers) {
        let want = all_events_paged(&server, filter);
        let mut received = Received::default();
        read_until(subscriber, &mut received, |r| r.events.len() >= want.len() && !r.caught_up.is_empty());
        let got: Vec<Value> = received.events.iter().map(|line| line["event"].clone()).collect();
        assert_eq!(got, want, "stream with {filter}");
        assert_eq!(received.caught_up.len(), 1, "{filter}");
    }
}

/// Server-Sent Events: `id:` is the position and `data:` the event; `caught_up` is a
/// named event. A client that reconnects with `Last-Event-ID` (which wins over
/// `after`) continues after it, without a gap or a repeat.
#[test]
fn sse_resumes_with_last_event_id() {
    let server = Server::start_with(&["--in-memory", "--heartbeat-ms", "100"]);
    append_batch(&server, &(0..20).map(|i| event("e", "t", json!({"i": i}))).collect::<Vec<_>>());
    let sse = [("accept", "text/event-stream")];
    let mut subscriber = Subscriber::start(server.addr, "/api/v1/events/stream", &sse, "text/event-stream");
    let mut last_id = 0;
    let read_events = |subscriber: &mut Subscriber, last_id: &mut u64, n: usize| {
        let mut read = 0;
        while read < n {
            let message = subscriber.next_message().unwrap();
            // Live events may come slower than the heartbeats.
            if message.event.as_deref() == Some("heartbeat") {
                continue;
            }
            read += 1;
            assert_eq!(message.event, None, "{message:?}");
            let id = message.id.unwrap();
            assert_eq!(id, *last_id + 1, "{message:?}");
            assert_eq!(message.data["position"], id);
            let stored = common::ok(
                &server,
                Req::get(format!("/api/v1/events/{}", message.data["id"].as_str().unwrap())),
                200,
            );
            assert_eq!(message.data, stored);
            *last_id = id;
        }
    };
    read_events(&mut subscriber, &mut last_id, 20);
    let marker = subscriber.next_message().unwrap();
    assert_eq!(marker.event.as_deref(), Some("caught_up"), "{marker:?}");
    assert_eq!(marker.id, None, "markers carry no id, so they do not move a browser's cursor");
    assert_eq!(marker.data, json!({"type": "caught_up", "position": 20}));

    for i in 20..30 {
        append(&server, &event("e", "t", json!({"i": i})));
    }
    read_events(&mut subscriber, &mut last_id, 5);
    drop(subscriber);
    append_batch(&server, &(30..35).map(|i| event("e", "t", json!({"i": i}))).collect::<Vec<_>>());

    let last = last_id.to_string();
    let resume = [("accept", "text/event-stream"), ("last-event-id", last.as_str())];
    let mut subscriber =
        Subscriber::start(server.addr, "/api/v1/events/stream?after=0", &resume, "text/event-stream");
    read_events(&mut subscriber, &mut last_id, 10);
    assert_eq!(last_id, 35);
    let marker = subscriber.next_message().unwrap();
    assert_eq!(marker.event.as_deref(), Some("caught_up"), "{marker:?}");
    let heartbeat = subscriber.next_message().unwrap();
    assert_eq!(heartbeat.event.as_deref(), Some("heartbeat"), "{heartbeat:?}");
    assert_eq!(heartbeat.data, json!({"type": "heartbeat", "position": 35}));
}

/// With nothing to send, heartbeats arrive at the configured interval (here 100 ms),
/// not faster; NDJSON is the encoding without `Accept` and for `*/*`.
#[test]
fn heartbeats_arrive_at_the_configured_interval() {
    let server = Server::start_with(&["--in-memory", "--heartbeat-ms", "100"]);
    for accept in [None, Some("*/*")] {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
        let mut subscriber =
            Subscriber::start(server.addr, "/api/v1/events/stream", &headers, "application/x-ndjson");
        assert_eq!(subscriber.next_json().unwrap(), json!({"type": "caught_up", "position": 0}));
        let started = Instant::now();
        for _ in 0..5 {
            assert_eq!(subscriber.next_json().unwrap(), json!({"type": "heartbeat", "position": 0}));
        }
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(400), "5 heartbeats 100 ms apart came in {elapsed:?}");
        assert!(elapsed < Duration::from_secs(5), "5 heartbeats 100 ms apart took {elapsed:?}");
    }
}

/// Past the limit of open streams, `429 TooManySubscribers` (JSON, also when SSE was
/// asked for); a slot is free again once a stream's connection closes.
#[test]
fn the_subscriber_limit_gives_429() {
    let server = Server::start_with(&["--in-memory", "--max-subscribers", "2"]);
    let ndjson = "application/x-ndjson";
    let mut first = Subscriber::start(server.addr, "/api/v1/events/stream", &[], ndjson);
    let mut second = Subscriber::start(server.addr, "/api/v1/events/stream?event_type=x", &[], ndjson);
    assert_eq!(first.next_json().unwrap()["type"], "caught_up");
    assert_eq!(second.next_json().unwrap()["type"], "caught_up");
    for headers in [vec![], vec![("accept", "text/event-stream")]] {
        let mut refused = Subscriber::open(server.addr, "/api/v1/events/stream", &headers);
        assert_eq!(refused.status, 429);
        assert_eq!(refused.header("retry-after"), Some("1"));
        assert!(refused.header("content-type").unwrap().starts_with("application/json"));
        let body: Value = serde_json::from_str(&refused.whole_body()).unwrap();
        assert_eq!(body["error"]["code"], "TooManySubscribers", "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains('2'), "{body}");
    }
    // Other requests are not affected.
    append(&server, &event("e", "t", json!({})));
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut third = loop {
        let subscriber = Subscriber::open(server.addr, "/api/v1/events/stream", &[]);
        if subscriber.status == 200 {
            break subscriber;
        }
        assert_eq!(subscriber.status, 429);
        assert!(Instant::now() < deadline, "the closed stream's slot was not given back");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(third.next_json().unwrap()["event"]["position"], 1);
    drop(second);
}

/// A client that opens a stream and never reads is cut off once its buffer stays full
/// for the grace (here 1 KiB and 200 ms), while appends go on completing promptly; when
/// it reads after all, it finds the events in order, then the error line, then the end.
/// (Its connection would be closed after `--write-timeout-ms`, set far longer than
/// this test takes.)
#[test]
fn a_stalled_client_is_cut_off_while_appends_go_on() {
    let server = Server::start_with(&[
        "--in-memory",
        "--write-timeout-ms",
        "600000",
        "--subscriber-buffer-bytes",
        "1024",
        "--subscriber-stall-ms",
        "200",
        "--max-subscribers",
        "1",
    ]);
    let stalled = Subscriber::open(server.addr, "/api/v1/events/stream", &[]);
    assert_eq!(stalled.status, 200);
    // 30 MB of events.
    assert_appends_stay_prompt(&server, common::padded_batches(100, 100, 3_000));
    server.wait_for_log(&["subscriber too slow"], Duration::from_secs(20));
    // Still holding its slot until its connection closes; appends are unaffected.
    let refused = Subscriber::open(server.addr, "/api/v1/events/stream", &[]);
    assert_eq!(refused.status, 429);
    let started = Instant::now();
    append(&server, &event("after", "t", json!({})));
    assert!(started.elapsed() < Duration::from_secs(5));

    let mut stalled = stalled;
    assert_eq!(stalled.next_json().unwrap(), json!({"type": "caught_up", "position": 0}));
    let mut expected = 1;
    let error = loop {
        let line = stalled.next_json().expect("the stream ended without an error line");
        match line["type"].as_str().unwrap() {
            "event" => {
                assert_eq!(line["event"]["position"], expected, "events in order, none missing");
                expected += 1;
            }
            "error" => break line,
            other => panic!("unexpected {other}: {line}"),
        }
    };
    assert!(expected > 1 && expected <= 10_000, "cut off after {} events", expected - 1);
    assert_eq!(error["error"]["code"], "SubscriberTooSlow", "{error}");
    // It names the last event sent: resuming there repeats nothing and skips nothing.
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.ends_with(&format!("resume after position {}", expected - 1)), "{error}");
    assert!(stalled.next_line().is_none(), "the error line is the last");
    assert_eq!(stats(&server)["total_events"], 10_001);
    drop(stalled);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Subscriber::open(server.addr, "/api/v1/events/stream", &[]).status != 200 {
        assert!(Instant::now() < deadline, "the stalled stream's slot was not given back");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Appends `batches` while a client stalls: each must finish within 5 s.
fn assert_appends_stay_prompt(server: &Server, batches: Vec<Vec<Value>>) {
    let mut slowest = Duration::ZERO;
    for events in batches {
        let started = Instant::now();
        append_batch(server, &events);
        slowest = slowest.max(started.elapsed());
    }
    assert!(slowest < Duration::from_secs(5), "an append took {slowest:?} while a client stalled");
}

/// The subscriptions open now, from `GET /metrics`.
fn subscribers(server: &Server) -> u64 {
    let reply = server.send(Req::get("/metrics"));
    assert_eq!(reply.status, 200, "{}", reply.text());
    common::subscribers_open(&reply.text())
}

/// A client that opens a stream and then never reads loses its connection once the
/// server's writes to it make no progress for `--write-timeout-ms` (here 300 ms),
/// and its subscriber slot with it, while appends go on completing promptly. The
/// response it had is cut short: the server could not send its end.
#[test]
fn a_client_that_stops_reading_loses_its_connection_and_its_slot() {
    let server = Server::start_with(&[&["--in-memory"][..], &common::STALLED_CLIENT_FLAGS].concat());
    let mut stalled = Subscriber::open(server.addr, "/api/v1/events/stream", &[]);
    assert_eq!(stalled.status, 200);
    assert_eq!(subscribers(&server), 1);
    // 30 MB of events.
    assert_appends_stay_prompt(&server, common::padded_batches(40, 25, 30_000));

    // The stalled client still holds its socket open, without reading.
    let deadline = Instant::now() + Duration::from_secs(20);
    while subscribers(&server) != 0 {
        assert!(Instant::now() < deadline, "the stalled connection was not closed");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Its slot is free again, and appends go on.
    let mut next =
        Subscriber::start(server.addr, "/api/v1/events/stream?after=1000", &[], "application/x-ndjson");
    assert_eq!(next.next_json().unwrap(), json!({"type": "caught_up", "position": 1000}));
    append(&server, &event("after", "t", json!({})));
    assert_eq!(next.next_json().unwrap()["event"]["position"], 1001);

    // What the kernel still held reaches the stalled client, then the connection ends
    // without the response's terminating chunk.
    let mut rest = Vec::new();
    match stalled.reader.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}"),
    }
    assert!(!rest.ends_with(b"\r\n0\r\n\r\n"), "the response ended whole: the connection was not cut");
}

/// Bad filters, a bad `Last-Event-ID`, unknown parameters and a wrong method get the
/// contract's JSON errors, and take no slot.
#[test]
fn bad_requests_get_json_errors() {
    let server = Server::start_with(&["--in-memory", "--max-subscribers", "1"]);
    for target in [
        "/api/v1/events/stream?after=-1",
        "/api/v1/events/stream?after=x",
        "/api/v1/events/stream?entity_id=",
        "/api/v1/events/stream?event_type=",
        "/api/v1/events/stream?limit=5",
        "/api/v1/events/stream?since=2026-01-01T00:00:00Z",
        "/api/v1/events/stream?after=1&after=2",
        "/api/v1/events/stream?entity_id=%FF",
    ] {
        check(&server, Req::get(target), 400, "ValidationError");
    }
    for value in ["abc", "-3", ""] {
        let req = Req::get("/api/v1/events/stream").header("last-event-id", value);
        common::check_message(&server, req, 400, "ValidationError", "Last-Event-ID");
    }
    check(
        &server,
        Req::post("/api/v1/events/stream", Some("application/json"), "{}"),
        405,
        "MethodNotAllowed",
    );
    let mut subscriber = Subscriber::start(server.addr, "/api/v1/events/stream", &[], "application/x-ndjson");
    assert_eq!(subscriber.next_json().unwrap()["type"], "caught_up");
}

/// SIGTERM ends every stream with an error line `ShuttingDown`, so the server stops at
/// once instead of waiting for streams that never end.
#[test]
fn shutdown_ends_streams() {
    let server = Server::start_with(&["--in-memory"]);
    append(&server, &event("e", "t", json!({})));
    let mut subscriber = Subscriber::start(server.addr, "/api/v1/events/stream", &[], "application/x-ndjson");
    assert_eq!(subscriber.next_json().unwrap()["event"]["position"], 1);
    assert_eq!(subscriber.next_json().unwrap()["type"], "caught_up");
    let started = Instant::now();
    server.signal("TERM");
    let line = subscriber.next_json().unwrap();
    assert_eq!(line["type"], "error", "{line}");
    assert_eq!(line["error"]["code"], "ShuttingDown", "{line}");
    assert!(subscriber.next_line().is_none());
    assert!(server.wait_exit(Duration::from_secs(10)).success());
    assert!(started.elapsed() < Duration::from_secs(10));
}
