//! Scenarios of the contract over any [`Client`], each from an empty store: the
//! in-process tests run them all against the router, the end-to-end tests run them
//! against the real binary over real HTTP.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Barrier;

use serde_json::{json, Value};

use super::*;

const PAYLOAD_BYTES_MAX: usize = 1024 * 1024;
const METADATA_BYTES_MAX: usize = 64 * 1024;
const REQUEST_BYTES_MAX: usize = 16 * 1024 * 1024;

pub fn health(c: &impl Client) {
    let body = ok(c, Req::get("/health"), 200);
    assert_eq!(body, json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }));
}

pub fn append_and_read_back(c: &impl Client) {
    let first = append(c, &event("user-1", "user.created", json!({"name": "Alice"})));
    let mut keys: Vec<&str> = first.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["entity_id", "event_type", "id", "metadata", "payload", "position", "timestamp", "version"]
    );
    assert_uuid_format(first["id"].as_str().unwrap());
    assert_eq!(first["event_type"], "user.created");
    assert_eq!(first["entity_id"], "user-1");
    assert_eq!(first["payload"], json!({"name": "Alice"}));
    assert_eq!(first["metadata"], json!({}));
    assert_eq!(first["version"], 1);
    assert_eq!(first["position"], 1);
    assert_timestamp_format(first["timestamp"].as_str().unwrap());

    let id = first["id"].as_str().unwrap();
    assert_eq!(ok(c, Req::get(format!("/api/v1/events/{id}")), 200), first);

    let mut body = event("user-1", "user.renamed", json!({"name": "Alicia"}));
    body["metadata"] = json!({"source": "test", "n": [1, 2]});
    body["expected_version"] = json!(1);
    let second = append(c, &body);
    assert_eq!((second["version"].as_u64(), second["position"].as_u64()), (Some(2), Some(2)));
    assert_eq!(second["metadata"], json!({"source": "test", "n": [1, 2]}));
    assert!(second["timestamp"].as_str() >= first["timestamp"].as_str());

    let third = append(c, &event("user-2", "user.created", json!(null)));
    assert_eq!((third["version"].as_u64(), third["position"].as_u64()), (Some(1), Some(3)));
    assert_eq!(third["payload"], json!(null));

    // Ids: any case in, lower case out, and found by either spelling.
    let upper = "0190F0C4-6A1E-7C3A-9D4E-1B2C3D4E5F60";
    let mut body = event("user-3", "user.created", json!({}));
    body["id"] = json!(upper);
    let stored = append(c, &body);
    assert_eq!(stored["id"], upper.to_lowercase());
    assert_eq!(ok(c, Req::get(format!("/api/v1/events/{upper}")), 200), stored);
    assert_eq!(ok(c, Req::get(format!("/api/v1/events/{}", upper.to_lowercase())), 200), stored);
    let simple = upper.replace('-', "");
    assert_eq!(ok(c, Req::get(format!("/api/v1/events/{simple}")), 200), stored);
    assert_log_invariants(&all_events(c));
}

/// Exact round trip of payload and metadata: 64-bit integers, floats to the bit,
/// escapes, surrogate pairs, NUL.
pub fn round_trip_exactness(c: &impl Client) {
    let text = r#"{"event_type":"t","entity_id":"rt","payload":{"u64_max":18446744073709551615,
        "i64_min":-9223372036854775808,"tenth":0.1,"tiny":1e-300,"min_normal":2.2250738585072014e-308,
        "denormal":5e-324,"big":1.7976931348623157e308,"third":0.3333333333333333,"neg":-2.5e-7,
        "escapes":"quote\" backslash\\ slash\/ \b\f\n\r\t ctrl\u001f","emoji":"\ud83d\ude00",
        "nul":"a\u0000b","unicode":"ünï ✓ \u00e9","nested":[[],{},null,true,false,"",0,-0]},
        "metadata":{"trace":"\u0000\ud83d\ude00","n":-1,"f":0.1}}"#;
    let sent: Value = serde_json::from_str(text).unwrap();
    let stored = ok(c, Req::post("/api/v1/events", Some("application/json"), text), 201);
    let id = stored["id"].as_str().unwrap().to_string();
    let by_id = ok(c, Req::get(format!("/api/v1/events/{id}")), 200);
    let by_query = ok(c, Req::get("/api/v1/events/query?entity_id=rt"), 200)["events"][0].clone();
    let state = ok(c, Req::get("/api/v1/entities/rt/state"), 200)["state"].clone();
    for (what, payload, metadata) in [
        ("append", &stored["payload"], &stored["metadata"]),
        ("get", &by_id["payload"], &by_id["metadata"]),
        ("query", &by_query["payload"], &by_query["metadata"]),
        ("state", &state, &sent["metadata"]),
    ] {
        assert_eq!(payload, &sent["payload"], "{what}");
        assert_eq!(metadata, &sent["metadata"], "{what}");
        assert_eq!(payload["u64_max"].as_u64(), Some(u64::MAX), "{what}");
        assert_eq!(payload["i64_min"].as_i64(), Some(i64::MIN), "{what}");
        for (key, want) in [
            ("tenth", 0.1f64),
            ("tiny", 1e-300),
            ("min_normal", 2.2250738585072014e-308),
            ("denormal", 5e-324),
            ("big", f64::MAX),
            ("third", 1.0 / 3.0),
            ("neg", -2.5e-7),
        ] {
            assert_eq!(payload[key].as_f64().map(f64::to_bits), Some(want.to_bits()), "{what} {key}");
        }
        assert_eq!(payload["emoji"], "\u{1F600}", "{what}");
        assert_eq!(payload["nul"], "a\u{0}b", "{what}");
        assert_eq!(payload["escapes"], "quote\" backslash\\ slash/ \u{8}\u{c}\n\r\t ctrl\u{1f}", "{what}");
        assert_eq!(payload["unicode"], "ünï ✓ é", "{what}");
    }
    assert_eq!(by_id["metadata"]["trace"], "\u{0}\u{1F600}");
}

/// A payload and metadata come back as the client wrote them, only without whitespace:
/// keys in the client's order, numbers and escapes as written; a retry that writes the
/// same values differently is the same event.
pub fn payload_text_as_sent(c: &impl Client) {
    let id = "0190f0c4-6a1e-7c3a-9d4e-1b2c3d4e5f62";
    let text = format!(
        "{{\"id\":\"{id}\", \"event_type\" : \"t\", \"entity_id\": \"kept\",\n \"payload\" : {{ \"z\" : 1 ,\
         \"a\": {{\"y\": [1, 2.50, \"a b\", \"\\u00e9\"], \"b\": -0}} }},\t\"metadata\": {{ \"m\" : 1E2 }} }}"
    );
    let payload = r#""payload":{"z":1,"a":{"y":[1,2.50,"a b","\u00e9"],"b":-0}},"metadata":{"m":1E2}"#;
    let reply = c.send(Req::post("/api/v1/events", Some("application/json"), text.as_str()));
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert!(reply.text().contains(payload), "{}", reply.text());
    for target in [format!("/api/v1/events/{id}"), "/api/v1/events/query?entity_id=kept".to_string()] {
        let reply = c.send(Req::get(target.as_str()));
        assert!(reply.text().contains(payload), "{target}: {}", reply.text());
    }
    let state = ok(c, Req::get("/api/v1/entities/kept/state"), 200);
    assert_eq!(state["state"], json!({"z": 1, "a": {"y": [1, 2.5, "a b", "é"], "b": -0.0}}));

    // The same values, other keys' order and spelling: an idempotent retry.
    let retry = format!(
        r#"{{"id":"{id}","entity_id":"kept","event_type":"t","metadata":{{"m":100.0}},
            "payload":{{"a":{{"b":-0,"y":[1,2.5,"a b","é"]}},"z":1}}}}"#
    );
    let reply = c.send(Req::post("/api/v1/events", Some("application/json"), retry.as_str()));
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.text().contains(payload), "{}", reply.text());
    let changed = retry.replace(r#""z":1"#, r#""z":2"#);
    check(
        c,
        Req::post("/api/v1/events", Some("application/json"), changed.as_str()),
        409,
        "DuplicateEventId",
    );
    assert_eq!(stats(c)["total_events"], 1);
}

pub fn routing_errors(c: &impl Client) {
    for target in ["/nope", "/api/v1", "/api/v1/nope", "/api/v1/events/", "/api/v2/stats", "/health/x"] {
        check(c, Req::get(target), 404, "NotFound");
    }
    check(c, Req::post_json("/nope", &json!({})), 404, "NotFound");
    for (method, target, allow) in [
        ("POST", "/health", "GET"),
        ("GET", "/api/v1/events", "POST"),
        ("PUT", "/api/v1/events", "POST"),
        ("GET", "/api/v1/events/batch", "POST"),
        ("POST", "/api/v1/events/query", "GET"),
        ("DELETE", "/api/v1/events/0190f0c4-6a1e-7c3a-9d4e-1b2c3d4e5f60", "GET"),
        ("PATCH", "/api/v1/entities/x/state", "GET"),
        ("POST", "/api/v1/entities/x/snapshot", "GET"),
        ("PUT", "/api/v1/stats", "GET"),
        ("DELETE", "/api/v1/projections", "GET"),
        ("POST", "/api/v1/projections/event_counters/t", "GET"),
    ] {
        let reply = c.send(Req::new(method, target));
        let what = format!("{method} {target}");
        assert_error(&reply, 405, "MethodNotAllowed", &what);
        let allowed = reply.header("allow").unwrap_or_default();
        assert!(allowed.contains(allow), "{what}: Allow {allowed:?}");
    }
}

pub fn content_type_errors(c: &impl Client) {
    let body = serde_json::to_vec(&event("e", "t", json!({}))).unwrap();
    let batch = serde_json::to_vec(&json!({"events": [event("e", "t", json!({}))]})).unwrap();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/x-ndjson"),
        Some("application/json; charset=latin1"),
        Some("application/jsonp"),
    ] {
        check(c, Req::post("/api/v1/events", content_type, body.clone()), 415, "UnsupportedMediaType");
    }
    for content_type in [None, Some("text/plain"), Some("multipart/form-data; boundary=x")] {
        check(c, Req::post("/api/v1/events/batch", content_type, batch.clone()), 415, "UnsupportedMediaType");
    }
    assert_eq!(stats(c)["total_events"], 0);
    for content_type in
        ["application/json", "application/json; charset=utf-8", "Application/JSON; Charset=UTF-8"]
    {
        ok(c, Req::post("/api/v1/events", Some(content_type), body.clone()), 201);
        ok(c, Req::post("/api/v1/events/batch", Some(content_type), batch.clone()), 201);
    }
}

pub fn body_errors(c: &impl Client) {
    let post = |text: &[u8]| Req::post("/api/v1/events", Some("application/json"), text.to_vec());
    for text in [
        &b""[..],
        b"{",
        b"not json",
        b"null",
        b"[]",
        b"42",
        b"[\"t\", \"e\", {}]",
        b"[\"t\", \"e\", {}, {}, null, null]",
        b"{\"event_type\":\"t\",\"entity_id\":\"e\",\"payload\":{}} trailing",
        b"{\"event_type\":\"t\",\"entity_id\":\"e\",\"payload\":\"\\ud800\"}",
        b"{\"event_type\":\"t\",\"entity_id\":\"e\",\"payload\":\"\xff\"}",
    ] {
        check(c, post(text), 400, "InvalidEvent");
    }
    // Nesting deeper than the parser's limit is refused, not a stack overflow.
    let deep = format!(
        "{{\"event_type\":\"t\",\"entity_id\":\"e\",\"payload\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    check(c, post(deep.as_bytes()), 400, "InvalidEvent");
    for field in ["event_type", "entity_id", "payload"] {
        let mut body = event("e", "t", json!({}));
        body.as_object_mut().unwrap().remove(field);
        check_message(c, Req::post_json("/api/v1/events", &body), 400, "InvalidEvent", field);
    }
    for (field, value) in [
        ("event_type", json!(1)),
        ("event_type", json!(null)),
        ("entity_id", json!(["e"])),
        ("metadata", json!([1])),
        ("metadata", json!("text")),
        ("expected_version", json!(-1)),
        ("expected_version", json!("1")),
        ("expected_version", json!(1.5)),
        ("id", json!(5)),
    ] {
        let mut body = event("e", "t", json!({}));
        body[field] = value;
        check(c, Req::post_json("/api/v1/events", &body), 400, "InvalidEvent");
    }
    for (field, value) in [
        ("event_type", json!("")),
        ("entity_id", json!("")),
        ("entity_id", json!("x".repeat(257))),
        ("event_type", json!("a\nb")),
        ("entity_id", json!("nul\u{0}")),
        ("id", json!("not-a-uuid")),
    ] {
        let mut body = event("e", "t", json!({}));
        body[field] = value;
        check_message(c, Req::post_json("/api/v1/events", &body), 400, "ValidationError", field);
    }
    // The longest ids are fine.
    append(c, &event(&"é".repeat(128), &"t".repeat(256), json!({})));
    assert_eq!(stats(c)["total_events"], 1);
}

pub fn not_found_errors(c: &impl Client) {
    let error =
        check(c, Req::get("/api/v1/events/0190f0c4-6a1e-7c3a-9d4e-1b2c3d4e5f60"), 404, "EventNotFound");
    assert!(error["message"].as_str().unwrap().contains("0190f0c4-6a1e-7c3a-9d4e-1b2c3d4e5f60"));
    for bad in
        ["not-a-uuid", "12345", "0190f0c4-6a1e-7c3a-9d4e-1b2c3d4e5f6", "0190f0c4-6a1e-7c3a-9d4e-1b2c3d4e5f6g"]
    {
        check(c, Req::get(format!("/api/v1/events/{bad}")), 400, "ValidationError");
    }
    check_message(c, Req::get("/api/v1/entities/ghost/state"), 404, "EntityNotFound", "ghost");
    check_message(c, Req::get("/api/v1/entities/ghost/snapshot"), 404, "EntityNotFound", "ghost");
    append(c, &event("real", "t", json!({})));
    check(c, Req::get("/api/v1/entities/ghost/state"), 404, "EntityNotFound");
    let body = ok(c, Req::get("/api/v1/events/query?entity_id=ghost"), 200);
    assert_eq!(body, json!({"events": [], "count": 0, "next_after": null}));
}

/// A payload or metadata over its limit inside a body that is small enough.
pub fn size_limits(c: &impl Client) {
    // A string of n bytes is n + 2 bytes of compact JSON.
    let at_limit = event("big", "t", json!("x".repeat(PAYLOAD_BYTES_MAX - 2)));
    let stored = append(c, &at_limit);
    assert_eq!(stored["payload"].as_str().map(str::len), Some(PAYLOAD_BYTES_MAX - 2));
    let over = event("big", "t", json!("x".repeat(PAYLOAD_BYTES_MAX - 1)));
    check_message(c, Req::post_json("/api/v1/events", &over), 413, "PayloadTooLarge", "payload");
    let mut body = event("big", "t", json!({}));
    body["metadata"] = json!({"k": "x".repeat(METADATA_BYTES_MAX)});
    check_message(c, Req::post_json("/api/v1/events", &body), 413, "PayloadTooLarge", "metadata");
    // Insignificant whitespace does not count.
    let spaced = format!(
        "{{ \"event_type\" : \"t\" , \"entity_id\" : \"big\" , \"payload\" : {{ \"k\" : \"{}\" }} {} }}",
        "x".repeat(PAYLOAD_BYTES_MAX - 8),
        " ".repeat(4096)
    );
    ok(c, Req::post("/api/v1/events", Some("application/json"), spaced), 201);
    assert_eq!(stats(c)["total_events"], 2);
}

/// A body over 16 MiB is `413`, read to its end first so that a client still sending
/// it gets the answer (and not a reset connection).
pub fn body_too_large(c: &impl Client) {
    let body = vec![b' '; REQUEST_BYTES_MAX + 1];
    for (target, content_type) in [
        ("/api/v1/events", "application/json"),
        ("/api/v1/events/batch", "application/json"),
        ("/api/v1/events/batch", "application/x-ndjson"),
    ] {
        let error = check(c, Req::post(target, Some(content_type), body.clone()), 413, "PayloadTooLarge");
        assert!(error["message"].as_str().unwrap().contains("16777217"), "{error}");
    }
    // Just under the limit is read, and judged on its content.
    let mut body = vec![b' '; REQUEST_BYTES_MAX];
    let event = serde_json::to_vec(&event("e", "t", json!({}))).unwrap();
    body[..event.len()].copy_from_slice(&event);
    ok(c, Req::post("/api/v1/events", Some("application/json"), body), 201);
    assert_eq!(stats(c)["total_events"], 1);
}

/// A declared length far over the limit, or one announced with `Expect:
/// 100-continue`, is refused at once, without waiting for the body.
pub fn declared_body_too_large(c: &impl Client) {
    let huge = (1u64 << 40).to_string();
    let over = (REQUEST_BYTES_MAX + 1).to_string();
    for (target, length, expect) in [
        ("/api/v1/events", huge.as_str(), false),
        ("/api/v1/events/batch", huge.as_str(), false),
        ("/api/v1/events", over.as_str(), true),
        ("/api/v1/events/batch", huge.as_str(), true),
    ] {
        let mut req =
            Req::post(target, Some("application/json"), Vec::new()).header("content-length", length);
        if expect {
            req = req.header("expect", "100-continue");
        }
        check_message(c, req, 413, "PayloadTooLarge", length);
    }
    assert_eq!(stats(c)["total_events"], 0);
}

pub fn query_validation(c: &impl Client) {
    append(c, &event("e", "t", json!({})));
    let bad = |query: &str, needle: &str| {
        check_message(c, Req::get(format!("/api/v1/events/query?{query}")), 400, "ValidationError", needle);
    };
    for limit in ["0", "10001", "abc", "-1", "", "1.5", "99999999999999999999999", "1e3"] {
        bad(&format!("limit={limit}"), "limit");
    }
    bad("limit", "limit");
    for after in ["abc", "-1", "", "1.0", "99999999999999999999999"] {
        bad(&format!("after={after}"), "after");
    }
    for name in ["since", "until", "as_of"] {
        for value in
            ["yesterday", "2026-13-01T00:00:00Z", "", "2026-11-27", "2026-11-27T10:00:00", "1700000000"]
        {
            bad(&format!("{name}={}", encode(value)), name);
        }
    }
    bad("entity_id=", "entity_id");
    bad("event_type=", "event_type");
    bad(&format!("entity_id={}", "x".repeat(257)), "entity_id");
    bad("entityid=e", "entityid");
    bad("foo=1", "foo");
    bad("limit=1&limit=2", "limit");
    for target in [
        "/api/v1/entities/e/state?as_of=yesterday",
        "/api/v1/entities/e/state?asof=2026-11-27T10:00:00Z",
        "/api/v1/entities/e/snapshot?as_of=2026-11-27T10:00:00Z",
        "/api/v1/stats?x=1",
    ] {
        check(c, Req::get(target), 400, "ValidationError");
    }
    for query in [
        "limit=1",
        "limit=10000",
        "after=0",
        "after=18446744073709551615",
        "since=2026-11-27T12:00:00%2B02:00",
        "since=2026-11-27T12:00:00+02:00",
        "until=2999-01-01T00:00:00.123456789Z",
        "as_of=1970-01-01T00:00:00Z",
    ] {
        ok(c, Req::get(format!("/api/v1/events/query?{query}")), 200);
    }
    let body = ok(c, Req::get("/api/v1/events/query?limit=1"), 200);
    assert_eq!((body["count"].as_u64(), body["next_after"].is_null()), (Some(1), true));
    // Not UTF-8 once percent-decoded: an error, not a query for the id "\u{FFFD}" (which
    // exists here, so a lossy decoding would answer with its event).
    append(c, &event("\u{FFFD}", "t", json!({})));
    bad("entity_id=%FF", "UTF-8");
    bad("event_type=a%C3", "UTF-8");
    bad("%FF=1", "UTF-8");
}

/// Following `next_after` visits every match exactly once, for every filter.
pub fn paging(c: &impl Client) {
    let mut n_appended = 0;
    for round in 0..12 {
        // Batches of 1..=7, so some events share a timestamp and some do not.
        let size = round % 7 + 1;
        let events: Vec<Value> = (0..size)
            .map(|k| {
                let i = n_appended + k;
                event(&format!("e{}", i % 3), &format!("t{}", (i / 2) % 3), json!({ "i": i }))
            })
            .collect();
        if size == 1 {
            append(c, &events[0]);
        } else {
            append_batch(c, &events);
        }
        n_appended += size;
    }
    let all = all_events(c);
    assert_eq!(all.len(), n_appended);
    assert_log_invariants(&all);
    let ts = |i: usize| all[i]["timestamp"].as_str().unwrap().to_string();
    let (t10, t30, t40) = (ts(10), ts(30), ts(40));

    type Filter<'a> = (String, Box<dyn Fn(&Value) -> bool + 'a>);
    let filters: Vec<Filter<'_>> = vec![
        (String::new(), Box::new(|_| true)),
        ("entity_id=e1".into(), Box::new(|e| e["entity_id"] == "e1")),
        ("event_type=t2".into(), Box::new(|e| e["event_type"] == "t2")),
        (
            "entity_id=e0&event_type=t1".into(),
            Box::new(|e| e["entity_id"] == "e0" && e["event_type"] == "t1"),
        ),
        (
            format!("since={}&until={}", encode(&t10), encode(&t40)),
            Box::new(|e| {
                let t = e["timestamp"].as_str().unwrap();
                t >= t10.as_str() && t <= t40.as_str()
            }),
        ),
        (format!("as_of={}", encode(&t30)), Box::new(|e| e["timestamp"].as_str().unwrap() <= t30.as_str())),
        (
            format!("as_of={}&until={}", encode(&t40), encode(&t30)),
            Box::new(|e| e["timestamp"].as_str().unwrap() <= t30.as_str()),
        ),
        (
            format!("entity_id=e2&since={}", encode(&t10)),
            Box::new(|e| e["entity_id"] == "e2" && e["timestamp"].as_str().unwrap() >= t10.as_str()),
        ),
        ("entity_id=nobody".into(), Box::new(|_| false)),
        (
            "event_type=t0&after=20".into(),
            Box::new(|e| e["event_type"] == "t0" && e["position"].as_u64() > Some(20)),
        ),
    ];
    for (query, keep) in &filters {
        let expected: Vec<u64> =
            all.iter().filter(|e| keep(e)).map(|e| e["position"].as_u64().unwrap()).collect();
        for limit in [1, 3, 7, expected.len().max(1), 1000] {
            let visited = page_through(c, query, limit);
            assert_eq!(visited, expected, "query {query:?} limit {limit}");
        }
    }
}

/// Pages through a query with `limit`; returns the positions seen, checking each page.
pub fn page_through(c: &impl Client, query: &str, limit: usize) -> Vec<u64> {
    let mut visited = Vec::new();
    let mut after: Option<u64> =
        query.split('&').find_map(|p| p.strip_prefix("after=")).map(|a| a.parse().unwrap());
    let base: Vec<&str> = query.split('&').filter(|p| !p.is_empty() && !p.starts_with("after=")).collect();
    for _ in 0..10_000 {
        let mut params: Vec<String> = base.iter().map(|p| p.to_string()).collect();
        params.push(format!("limit={limit}"));
        if let Some(after) = after {
            params.push(format!("after={after}"));
        }
        let body = ok(c, Req::get(format!("/api/v1/events/query?{}", params.join("&"))), 200);
        let events = body["events"].as_array().unwrap();
        assert_eq!(body["count"].as_u64(), Some(events.len() as u64));
        assert!(events.len() <= limit);
        visited.extend(events.iter().map(|e| e["position"].as_u64().unwrap()));
        match body["next_after"].as_u64() {
            Some(next) => {
                assert_eq!(events.len(), limit, "a page before the last is full");
                assert_eq!(Some(next), events.last().and_then(|e| e["position"].as_u64()));
                after = Some(next);
            }
            None => {
                assert!(body["next_after"].is_null());
                let mut sorted = visited.clone();
                sorted.sort_unstable();
                sorted.dedup();
                assert_eq!(sorted, visited, "ascending, each once");
                return visited;
            }
        }
    }
    panic!("paging did not end");
}

/// State as of a time: the replay of the events up to it, as JSON Merge Patches.
pub fn as_of_state(c: &impl Client) {
    let payloads = [
        json!({"name": "A", "tags": ["x"], "nested": {"a": 1, "b": 2}}),
        json!({"tags": null, "nested": {"b": null, "c": 3}}),
        json!({"name": "B"}),
        json!({"nested": {"a": {"deep": true}}}),
    ];
    let mut stored = Vec::new();
    for payload in &payloads {
        stored.push(append(c, &event("acct/1", "acct.changed", payload.clone())));
        append(c, &event("other", "noise", json!({"x": 1})));
    }
    let states = [
        json!({"name": "A", "tags": ["x"], "nested": {"a": 1, "b": 2}}),
        json!({"name": "A", "nested": {"a": 1, "c": 3}}),
        json!({"name": "B", "nested": {"a": 1, "c": 3}}),
        json!({"name": "B", "nested": {"a": {"deep": true}, "c": 3}}),
    ];
    let path = format!("/api/v1/entities/{}", encode("acct/1"));
    for event in &stored {
        let as_of = event["timestamp"].as_str().unwrap();
        // The last version at or before `as_of` (events may share a timestamp).
        let last = stored.iter().rposition(|e| e["timestamp"].as_str().unwrap() <= as_of).unwrap();
        let body = ok(c, Req::get(format!("{path}/state?as_of={}", encode(as_of))), 200);
        assert_eq!(
            body,
            json!({
                "entity_id": "acct/1",
                "state": states[last],
                "version": last + 1,
                "last_event_at": stored[last]["timestamp"],
                "as_of": as_of,
            })
        );
    }
    check(c, Req::get(format!("{path}/state?as_of=2000-01-01T00:00:00Z")), 404, "EntityNotFound");
    // `as_of` is echoed as given (a `+` sent unencoded, which arrives as a space, too).
    let future = ok(c, Req::get(format!("{path}/state?as_of=2999-01-01T02:00:00%2B02:00")), 200);
    assert_eq!(future["as_of"], "2999-01-01T02:00:00+02:00");
    let unencoded = ok(c, Req::get(format!("{path}/state?as_of=2999-01-01T02:00:00.5+02:00")), 200);
    assert_eq!(unencoded["as_of"], "2999-01-01T02:00:00.5+02:00");
    assert_eq!(unencoded["state"], states[3]);
    assert_eq!(future["state"], states[3]);
    let current = ok(c, Req::get(format!("{path}/state")), 200);
    assert_eq!(current["as_of"], json!(null));
    assert_eq!(current["version"], 4);
    assert_eq!(current["state"], states[3]);
    assert_eq!(current["last_event_at"], stored[3]["timestamp"]);
    assert_eq!(ok(c, Req::get(format!("{path}/snapshot")), 200), current);

    // A non-object payload replaces the state; an object replaces a non-object.
    for (payload, want) in [
        (json!({"a": 1}), json!({"a": 1})),
        (json!(5), json!(5)),
        (json!({"b": null, "c": 1}), json!({"c": 1})),
        (json!([1, 2]), json!([1, 2])),
        (json!(null), json!(null)),
    ] {
        append(c, &event("scalar", "t", payload));
        let state = ok(c, Req::get("/api/v1/entities/scalar/state"), 200);
        assert_eq!(state["state"], want);
        assert_eq!(ok(c, Req::get("/api/v1/entities/scalar/snapshot"), 200), state);
    }

    // Objects nested 120 deep merge like any others (the parser refuses past 128).
    let deep = |leaf: Value| (0..120).fold(leaf, |inner, _| json!({ "a": inner }));
    append(c, &event("deep", "t", deep(json!({"x": 1, "y": 2}))));
    let first = append(c, &event("deep", "t", deep(json!({"x": null, "z": 3}))));
    let state = ok(c, Req::get("/api/v1/entities/deep/snapshot"), 200);
    assert_eq!((&state["state"], &state["version"]), (&deep(json!({"y": 2, "z": 3})), &json!(2)));
    append(c, &event("deep", "t", json!({"b": 1})));
    let as_of = encode(first["timestamp"].as_str().unwrap());
    let replayed = ok(c, Req::get(format!("/api/v1/entities/deep/state?as_of={as_of}")), 200);
    assert_eq!(replayed["state"], state["state"]);

    // Keys are compared as the strings they stand for: "\u0061" is "a".
    let raw = br#"{"event_type":"t","entity_id":"esc","payload":{"\u0061":1,"b":{"\u0063":2,"\"":0}}}"#;
    ok(c, Req::post("/api/v1/events", Some("application/json"), raw.to_vec()), 201);
    append(c, &event("esc", "t", json!({"a": 2, "b": {"c": null, "d": 4}})));
    let want = json!({"a": 2, "b": {"\"": 0, "d": 4}});
    assert_eq!(ok(c, Req::get("/api/v1/entities/esc/snapshot"), 200)["state"], want);
    assert_eq!(ok(c, Req::get("/api/v1/entities/esc/state?as_of=2999-01-01T00:00:00Z"), 200)["state"], want);
}

/// Entity ids are percent-decoded from paths and query strings.
pub fn percent_encoded_entity_ids(c: &impl Client) {
    for id in ["order/7", "a b", "ünï✓", "100%", "q?x=1#frag&y", "slash/and%2F", "+plus+", "dots.."] {
        let stored = append(c, &event(id, "t", json!({"id": id})));
        assert_eq!(stored["entity_id"], id);
        let encoded = encode(id);
        let state = ok(c, Req::get(format!("/api/v1/entities/{encoded}/state")), 200);
        assert_eq!((state["entity_id"].as_str(), &state["state"]), (Some(id), &json!({"id": id})));
        assert_eq!(ok(c, Req::get(format!("/api/v1/entities/{encoded}/snapshot")), 200), state);
        let page = ok(c, Req::get(format!("/api/v1/events/query?entity_id={encoded}")), 200);
        assert_eq!(page["count"], 1, "{id}");
        assert_eq!(page["events"][0], stored);
        let projection = ok(c, Req::get(format!("/api/v1/projections/entity_snapshots/{encoded}")), 200);
        assert_eq!(
            (projection["key"].as_str(), &projection["state"]["state"]),
            (Some(id), &json!({"id": id}))
        );
    }
    // The path's own `/` separates segments; only `%2F` is part of an id.
    check(c, Req::get("/api/v1/entities/order/7/state"), 404, "NotFound");
    check(c, Req::get("/api/v1/entities/%FF/state"), 400, "ValidationError");
    check(c, Req::get("/api/v1/entities/a%0Ab/state"), 400, "ValidationError");
    check(c, Req::get(format!("/api/v1/entities/{}/state", "x".repeat(257))), 400, "ValidationError");
}

pub fn idempotent_retry(c: &impl Client) {
    let id = "0190F0C4-6A1E-7C3A-9D4E-1B2C3D4E5F61";
    let mut body = event("order-1", "order.placed", json!({"total": 10}));
    body["id"] = json!(id);
    body["metadata"] = json!({"by": "me"});
    let first = append(c, &body);
    let before = stats(c);
    // The same event again, even with an expected_version that no longer holds.
    let again = ok(c, Req::post_json("/api/v1/events", &body), 200);
    assert_eq!(again, first);
    body["expected_version"] = json!(0);
    assert_eq!(ok(c, Req::post_json("/api/v1/events", &body), 200), first);
    body["id"] = json!(id.to_lowercase());
    assert_eq!(ok(c, Req::post_json("/api/v1/events", &body), 200), first);
    assert_eq!(stats(c), before);

    for (field, value) in [
        ("payload", json!({"total": 11})),
        ("metadata", json!({})),
        ("entity_id", json!("order-2")),
        ("event_type", json!("order.cancelled")),
    ] {
        let mut changed = body.clone();
        changed[field] = value;
        let error = check(c, Req::post_json("/api/v1/events", &changed), 409, "DuplicateEventId");
        assert!(error["message"].as_str().unwrap().contains(&id.to_lowercase()), "{error}");
    }
    assert_eq!(stats(c), before);

    // A batch of retries only: 200, nothing appended, the stored events in the body.
    let batch = ok(c, Req::post_json("/api/v1/events/batch", &json!({"events": [body]})), 200);
    assert_eq!(batch["count"], 1);
    assert_eq!(batch["events"][0]["position"], first["position"]);
    assert_eq!(batch["events"][0]["id"], first["id"]);
    assert_eq!(stats(c), before);
    // A batch mixing a retry and a new event: 201.
    let batch = append_batch(c, &[body.clone(), event("order-1", "order.paid", json!({}))]);
    assert_eq!(batch["count"], 2);
    assert_eq!(batch["events"][0]["position"], first["position"]);
    assert_eq!(batch["events"][1]["version"], 2);
    assert_eq!(stats(c)["total_events"], before["total_events"].as_u64().unwrap() + 1);

    // Numbers are compared exactly: every digit of an integer beyond 64 bits, a float
    // to the last bit (its sign of zero too); the text as written is what was stored.
    let raw = |id: &str, payload: &str| {
        let text = format!(r#"{{"event_type":"t","entity_id":"exact","payload":{payload},"id":"{id}"}}"#);
        Req::post("/api/v1/events", Some("application/json"), text)
    };
    let big = "0190f0c4-6a1e-7c3a-9d4e-1b2c3d4e5f71";
    let stored = ok(c, raw(big, r#"{"n":123456789012345678901234567890,"z":-0.0}"#), 201);
    let total = stats(c)["total_events"].clone();
    assert_eq!(ok(c, raw(big, r#"{"z":-0.0, "n":123456789012345678901234567890}"#), 200), stored);
    check(c, raw(big, r#"{"n":123456789012345678901234567891,"z":-0.0}"#), 409, "DuplicateEventId");
    check(c, raw(big, r#"{"n":123456789012345678901234567890,"z":0.0}"#), 409, "DuplicateEventId");
    assert_eq!(stats(c)["total_events"], total);
}

pub fn batch_append(c: &impl Client) {
    append(c, &event("seed", "t", json!({})));
    let events: Vec<Value> =
        (0..5).map(|i| event(&format!("b{}", i % 2), "batch.item", json!({"i": i}))).collect();
    let body = append_batch(c, &events);
    assert_eq!(body["count"], 5);
    let summaries = body["events"].as_array().unwrap();
    assert_eq!(summaries.len(), 5);
    for (i, summary) in summaries.iter().enumerate() {
        let mut keys: Vec<&str> = summary.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["entity_id", "id", "position", "timestamp", "version"]);
        assert_eq!(summary["position"], i + 2);
        assert_eq!(summary["entity_id"], format!("b{}", i % 2));
        assert_eq!(summary["version"], i / 2 + 1);
        assert_timestamp_format(summary["timestamp"].as_str().unwrap());
        let stored = ok(c, Req::get(format!("/api/v1/events/{}", summary["id"].as_str().unwrap())), 200);
        assert_eq!(stored["payload"], json!({"i": i}));
        assert_eq!(stored["timestamp"], summary["timestamp"]);
    }

    // The largest batch.
    let events: Vec<Value> =
        (0..10_000).map(|i| event(&format!("big{}", i % 10), "bulk", json!(i))).collect();
    let body = append_batch(c, &events);
    assert_eq!(body["count"], 10_000);
    assert_eq!(body["events"][9_999]["position"], 10_006);
    assert_eq!(body["events"][9_999]["version"], 1_000);
    assert_eq!(stats(c)["total_events"], 10_006);
}

/// Any bad item fails the whole batch, and the message names its index.
pub fn batch_atomicity(c: &impl Client) {
    let taken = "0190f0c4-6a1e-7c3a-9d4e-1b2c3d4e5f62";
    let mut seed = event("acct", "t", json!({"n": 0}));
    seed["id"] = json!(taken);
    append(c, &seed);
    let before = stats(c);
    let good = |i: usize| event("acct", "t", json!({ "i": i }));
    let with = |index: usize, item: Value| -> Value {
        json!({"events": (0..6).map(|i| if i == index { item.clone() } else { good(i) }).collect::<Vec<_>>()})
    };
    let mut bad_payload = good(0);
    bad_payload.as_object_mut().unwrap().remove("payload");
    let mut conflict = good(0);
    conflict["expected_version"] = json!(7);
    let mut duplicate = good(0);
    duplicate["id"] = json!(taken);
    let mut bad_metadata = good(0);
    bad_metadata["metadata"] = json!([]);
    let mut bad_uuid = good(0);
    bad_uuid["id"] = json!("nope");
    let cases = [
        (3, event("", "t", json!({})), 400, "ValidationError"),
        (2, bad_payload, 400, "InvalidEvent"),
        (4, conflict, 409, "ConcurrencyConflict"),
        (1, event("acct", "t", json!("x".repeat(PAYLOAD_BYTES_MAX))), 413, "PayloadTooLarge"),
        (5, duplicate, 409, "DuplicateEventId"),
        (0, bad_metadata, 400, "InvalidEvent"),
        (5, bad_uuid, 400, "ValidationError"),
        (0, json!("not an object"), 400, "InvalidEvent"),
        (2, json!(["t", "acct", {}]), 400, "InvalidEvent"),
    ];
    for (index, item, status, code) in cases {
        let req = Req::post_json("/api/v1/events/batch", &with(index, item));
        let error = check_message(c, req, status, code, &format!("batch item {index}"));
        if code == "ConcurrencyConflict" {
            assert_eq!(
                (error["expected_version"].as_u64(), error["current_version"].as_u64()),
                (Some(7), Some(5))
            );
        }
        assert_eq!(stats(c), before, "{code} at {index}");
    }
    // The same id twice in one batch.
    let mut twice = good(0);
    twice["id"] = json!("0190f0c4-6a1e-7c3a-9d4e-1b2c3d4e5f63");
    let body = json!({"events": [twice.clone(), good(1), twice]});
    check_message(c, Req::post_json("/api/v1/events/batch", &body), 409, "DuplicateEventId", "batch item 2");
    // Item NDJSON lines are counted the same way.
    let ndjson = format!("{}\n\n{}\n", good(0), json!({"entity_id": "acct"}));
    let req = Req::post("/api/v1/events/batch", Some("application/x-ndjson"), ndjson);
    check_message(c, req, 400, "InvalidEvent", "batch item 1");
    // The batch itself.
    for (body, code) in [
        (json!({"events": []}), "ValidationError"),
        (json!({"events": {}}), "InvalidEvent"),
        (json!({"events": null}), "InvalidEvent"),
        (json!({"events": "x"}), "InvalidEvent"),
        (json!({"items": [good(0)]}), "InvalidEvent"),
        // A condition beside `events` would hold nothing back: refused, not ignored.
        (json!({"events": [good(0)], "expected_version": 0}), "InvalidEvent"),
        (json!([good(0)]), "InvalidEvent"),
        (json!([[good(0)]]), "InvalidEvent"),
        (json!(null), "InvalidEvent"),
    ] {
        check(c, Req::post_json("/api/v1/events/batch", &body), 400, code);
    }
    let too_many: Vec<Value> =
        (0..10_001).map(|_| json!({"event_type": "t", "entity_id": "e", "payload": 0})).collect();
    check(c, Req::post_json("/api/v1/events/batch", &json!({ "events": too_many })), 400, "ValidationError");
    check(
        c,
        Req::post("/api/v1/events/batch", Some("application/json"), "{\"events\": [{}"),
        400,
        "InvalidEvent",
    );
    assert_eq!(stats(c), before);
    let counters = ok(c, Req::get("/api/v1/projections/event_counters/t"), 200);
    assert_eq!(counters["state"], json!({"count": 1}));
    assert_eq!(all_events(c).len(), 1);
}

/// `expected_version` inside a batch counts the batch's earlier items.
pub fn batch_expected_version(c: &impl Client) {
    let item = |entity: &str, expected: u64| {
        let mut e = event(entity, "t", json!({ "v": expected + 1 }));
        e["expected_version"] = json!(expected);
        e
    };
    let body = append_batch(c, &[item("x", 0), item("x", 1), item("y", 0), item("x", 2)]);
    let versions: Vec<u64> =
        body["events"].as_array().unwrap().iter().map(|e| e["version"].as_u64().unwrap()).collect();
    assert_eq!(versions, [1, 2, 1, 3]);
    let positions: Vec<u64> =
        body["events"].as_array().unwrap().iter().map(|e| e["position"].as_u64().unwrap()).collect();
    assert_eq!(positions, [1, 2, 3, 4]);
    let req = Req::post_json("/api/v1/events/batch", &json!({"events": [item("x", 3), item("x", 3)]}));
    let error = check_message(c, req, 409, "ConcurrencyConflict", "batch item 1");
    assert_eq!((error["expected_version"].as_u64(), error["current_version"].as_u64()), (Some(3), Some(4)));
    assert_eq!(stats(c)["total_events"], 4);
    assert_eq!(ok(c, Req::get("/api/v1/entities/x/state"), 200)["version"], 3);
}

pub fn ndjson_batch(c: &impl Client) {
    let lines =
        [event("n", "t", json!({"a": 1})), event("n", "t", json!({"b": 2})), event("m", "u", json!([]))];
    let text = format!("\n{}\r\n\n   \n{}\n{}", lines[0], lines[1], lines[2]);
    let body = ok(c, Req::post("/api/v1/events/batch", Some("application/x-ndjson"), text), 201);
    assert_eq!(body["count"], 3);
    assert_eq!(body["events"][2]["position"], 3);
    let body = ok(
        c,
        Req::post(
            "/api/v1/events/batch",
            Some("application/ndjson; charset=utf-8"),
            format!("{}\n", lines[0]),
        ),
        201,
    );
    assert_eq!(body["events"][0]["version"], 3);
    for text in ["", "\n\n", "  \r\n"] {
        check(
            c,
            Req::post("/api/v1/events/batch", Some("application/x-ndjson"), text),
            400,
            "ValidationError",
        );
    }
    let mut conflict = lines[0].clone();
    conflict["expected_version"] = json!(0);
    let text = format!("{}\n{}\n", lines[2], conflict);
    let error = check_message(
        c,
        Req::post("/api/v1/events/batch", Some("application/x-ndjson"), text),
        409,
        "ConcurrencyConflict",
        "batch item 1",
    );
    assert_eq!(error["current_version"], 3);
    // A rule broken on a line names the line too (blank lines count as lines, not items).
    let text = format!("{}\n\n{}\n", lines[2], event("", "t", json!({})));
    check_message(
        c,
        Req::post("/api/v1/events/batch", Some("application/x-ndjson"), text),
        400,
        "ValidationError",
        "batch item 1 (line 3): ",
    );
    let text = format!("{}\n{{\"events\": []}}\n", lines[2]);
    check_message(
        c,
        Req::post("/api/v1/events/batch", Some("application/x-ndjson"), text),
        400,
        "InvalidEvent",
        "batch item 1",
    );
    assert_eq!(stats(c)["total_events"], 4);
}

pub fn stats_and_projections(c: &impl Client) {
    let empty = stats(c);
    for field in ["total_events", "total_entities", "total_event_types", "total_ingested"] {
        assert_eq!(empty[field], 0, "{field}");
    }
    assert_eq!(empty["read_only"], false);
    append_batch(
        c,
        &[
            event("u1", "user.created", json!({"n": 1})),
            event("u2", "user.created", json!({"n": 2})),
            event("u1", "user.renamed", json!({"n": 3})),
        ],
    );
    let body = stats(c);
    assert_eq!(
        (&body["total_events"], &body["total_entities"], &body["total_event_types"], &body["total_ingested"]),
        (&json!(3), &json!(2), &json!(2), &json!(3))
    );

    let list = ok(c, Req::get("/api/v1/projections"), 200);
    let names: BTreeSet<&str> =
        list["projections"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(names.contains("entity_snapshots") && names.contains("event_counters"), "{list}");
    let counters = ok(c, Req::get("/api/v1/projections/event_counters/user.created"), 200);
    assert_eq!(counters, json!({"name": "event_counters", "key": "user.created", "state": {"count": 2}}));
    let snapshot = ok(c, Req::get("/api/v1/projections/entity_snapshots/u1"), 200);
    assert_eq!((&snapshot["name"], &snapshot["key"]), (&json!("entity_snapshots"), &json!("u1")));
    assert_eq!(snapshot["state"]["state"], json!({"n": 3}));
    assert_eq!(snapshot["state"]["version"], 2);
    check(c, Req::get("/api/v1/projections/nope/u1"), 404, "NotFound");
    check(c, Req::get("/api/v1/projections/event_counters/never.seen"), 404, "NotFound");
    check(c, Req::get("/api/v1/projections/entity_snapshots/ghost"), 404, "EntityNotFound");
    check(c, Req::get("/api/v1/projections/event_counters"), 404, "NotFound");
}

pub fn optimistic_concurrency(c: &impl Client) {
    let with_expected = |expected: u64| {
        let mut e = event("occ", "t", json!({ "e": expected }));
        e["expected_version"] = json!(expected);
        Req::post_json("/api/v1/events", &e)
    };
    ok(c, with_expected(0), 201);
    let error = check(c, with_expected(0), 409, "ConcurrencyConflict");
    assert_eq!((error["expected_version"].as_u64(), error["current_version"].as_u64()), (Some(0), Some(1)));
    assert!(error["message"].as_str().unwrap().contains("occ"));
    let error = check(c, with_expected(5), 409, "ConcurrencyConflict");
    assert_eq!((error["expected_version"].as_u64(), error["current_version"].as_u64()), (Some(5), Some(1)));
    ok(c, with_expected(1), 201);
    let mut fresh = event("fresh", "t", json!({}));
    fresh["expected_version"] = json!(1);
    let error = check(c, Req::post_json("/api/v1/events", &fresh), 409, "ConcurrencyConflict");
    assert_eq!(error["current_version"], 0);
    assert_eq!(stats(c)["total_events"], 2);
}

/// `n_threads` append with the same `expected_version` at once: exactly one wins.
pub fn occ_race(c: &impl Client, n_threads: usize, n_rounds: u64) {
    append(c, &event("race", "t", json!({})));
    for round in 1..=n_rounds {
        let barrier = Barrier::new(n_threads);
        let replies: Vec<Reply> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..n_threads)
                .map(|i| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        let mut e = event("race", "t", json!({ "thread": i }));
                        e["expected_version"] = json!(round);
                        let req = Req::post_json("/api/v1/events", &e);
                        barrier.wait();
                        c.send(req)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners = replies.iter().filter(|r| r.status == 201).count();
        assert_eq!(winners, 1, "round {round}: {:?}", replies.iter().map(|r| r.status).collect::<Vec<_>>());
        for reply in replies.iter().filter(|r| r.status != 201) {
            let error = assert_error(reply, 409, "ConcurrencyConflict", "race");
            assert_eq!(
                (error["expected_version"].as_u64(), error["current_version"].as_u64()),
                (Some(round), Some(round + 1))
            );
        }
    }
    let state = ok(c, Req::get("/api/v1/entities/race/state"), 200);
    assert_eq!(state["version"], n_rounds + 1);
    assert_eq!(stats(c)["total_events"], n_rounds + 1);
}

/// Appenders on several threads: positions gapless 1..=N, versions gapless per entity.
pub fn concurrent_appenders(c: &impl Client, n_threads: usize, n_requests: usize) {
    let appended: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n_threads)
            .map(|t| {
                s.spawn(move || {
                    let mut n = 0;
                    for r in 0..n_requests {
                        let entity = format!("c{}", (t + r) % 5);
                        if r % 4 == 3 {
                            let items: Vec<Value> = (0..3)
                                .map(|k| event(&entity, "batch", json!({"t": t, "r": r, "k": k})))
                                .collect();
                            n += append_batch(c, &items)["count"].as_u64().unwrap() as usize;
                        } else {
                            append(c, &event(&entity, "single", json!({"t": t, "r": r})));
                            n += 1;
                        }
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let all = all_events(c);
    assert_eq!(all.len(), appended);
    assert_log_invariants(&all);
    assert_eq!(stats(c)["total_events"], appended);
    assert_eq!(stats(c)["total_ingested"], appended);
    // Each batch's events are consecutive.
    for event in all.iter().filter(|e| e["event_type"] == "batch" && e["payload"]["k"] == 0) {
        let p = event["position"].as_u64().unwrap() as usize;
        for k in 1..3 {
            assert_eq!(all[p - 1 + k]["payload"]["k"], k);
            assert_eq!(all[p - 1 + k]["payload"]["r"], event["payload"]["r"]);
            assert_eq!(all[p - 1 + k]["payload"]["t"], event["payload"]["t"]);
        }
    }
}

/// Positions gapless from 1, versions gapless per entity in position order,
/// timestamps well-formed and non-decreasing.
pub fn assert_log_invariants(events: &[Value]) {
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    let mut last_timestamp = String::new();
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event["position"].as_u64(), Some(i as u64 + 1), "{event}");
        let version = versions.entry(event["entity_id"].as_str().unwrap().to_string()).or_insert(0);
        *version += 1;
        assert_eq!(event["version"].as_u64(), Some(*version), "{event}");
        let timestamp = event["timestamp"].as_str().unwrap();
        assert_timestamp_format(timestamp);
        assert!(timestamp >= last_timestamp.as_str(), "timestamps decrease at {event}");
        last_timestamp = timestamp.to_string();
        assert_uuid_format(event["id"].as_str().unwrap());
    }
}
