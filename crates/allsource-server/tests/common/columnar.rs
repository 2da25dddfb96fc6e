//! Arrow and Parquet over any [`Client`]: the Arrow representation of a query page
//! (`Accept: application/vnd.apache.arrow.stream`) and the exports
//! (`/api/v1/export/{parquet,arrow}`), read back with the `arrow-ipc` and `parquet`
//! crates and compared, field by field, with what the JSON API says.

use std::collections::BTreeSet;

use allsource_core::columnar;
use arrow_ipc::reader::StreamReader;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{json, Value};

use super::*;

pub const ARROW: &str = "application/vnd.apache.arrow.stream";
pub const PARQUET: &str = "application/vnd.apache.parquet";

/// The events of an Arrow IPC stream, as the JSON API writes them, and the number of
/// record batches it held. Asserts the stream has the events schema.
pub fn read_ipc(bytes: &[u8]) -> (Vec<Value>, usize) {
    let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None).expect("an Arrow IPC stream");
    assert_eq!(*reader.schema(), *columnar::schema(), "IPC schema");
    let mut events = Vec::new();
    let mut batches = 0;
    for batch in reader {
        let batch = batch.expect("a record batch");
        batches += 1;
        events.extend(columnar::from_record_batch(&batch).expect("events").iter().map(to_json));
    }
    (events, batches)
}

/// The events of a Parquet file, as the JSON API writes them, and its number of row
/// groups. Asserts the file has the events schema.
pub fn read_parquet(bytes: &[u8]) -> (Vec<Value>, usize) {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::copy_from_slice(bytes))
        .expect("a Parquet file");
    let schema = builder.schema().clone();
    assert_eq!(schema.fields(), columnar::schema().fields(), "Parquet schema");
    assert_eq!(
        schema.metadata().get(columnar::SCHEMA_VERSION_KEY).map(String::as_str),
        Some(columnar::SCHEMA_VERSION)
    );
    let row_groups = builder.metadata().num_row_groups();
    let mut events = Vec::new();
    for batch in builder.build().expect("a Parquet reader") {
        let batch = batch.expect("a record batch");
        events.extend(columnar::from_record_batch(&batch).expect("events").iter().map(to_json));
    }
    (events, row_groups)
}

fn to_json(event: &allsource_core::Event) -> Value {
    serde_json::to_value(event).unwrap()
}

/// A query with `Accept: application/vnd.apache.arrow.stream`.
pub fn arrow_query(target: impl Into<String>) -> Req {
    Req::get(target).header("accept", ARROW)
}

/// Asserts `reply` is a `200` Arrow page; returns its events, `X-Count` and
/// `X-Next-After`.
pub fn arrow_page(reply: &Reply, what: &str) -> (Vec<Value>, Option<u64>) {
    assert_eq!(reply.status, 200, "{what}: {}", reply.text());
    assert_eq!(reply.header("content-type"), Some(ARROW), "{what}");
    assert!(reply.header("vary").unwrap_or_default().to_ascii_lowercase().contains("accept"), "{what}");
    let (events, batches) = read_ipc(&reply.body);
    assert_eq!(batches, 1, "{what}: one record batch per page");
    let count: usize = reply.header("x-count").expect("X-Count").parse().unwrap();
    assert_eq!(count, events.len(), "{what}: X-Count");
    let next_after =
        reply.header("x-next-after").map(|v| v.parse::<u64>().expect("X-Next-After is a position"));
    (events, next_after)
}

/// An export's events, asserting its status and headers.
pub fn export(c: &impl Client, format: &str, query: &str) -> Vec<Value> {
    let target = format!("/api/v1/export/{format}?{query}");
    let reply = c.send(Req::get(&target));
    assert_eq!(reply.status, 200, "{target}: {}", reply.text());
    let (content_type, file_name) = match format {
        "parquet" => (PARQUET, "allsource-events.parquet"),
        _ => (ARROW, "allsource-events.arrows"),
    };
    assert_eq!(reply.header("content-type"), Some(content_type), "{target}");
    assert_eq!(
        reply.header("content-disposition"),
        Some(format!("attachment; filename=\"{file_name}\"").as_str()),
        "{target}"
    );
    match format {
        "parquet" => read_parquet(&reply.body).0,
        _ => read_ipc(&reply.body).0,
    }
}

/// Events of several entities and types, with payloads and metadata that test the
/// round trip: 64-bit integers at both ends, floats to the bit, escapes, NUL, emoji,
/// nesting, `null`, arrays, scalars. Returns them as stored, in position order.
pub fn seed(c: &impl Client) -> Vec<Value> {
    let text = r#"{"u64_max":18446744073709551615,"i64_max":9223372036854775807,
        "i64_min":-9223372036854775808,"tenth":0.1,"denormal":5e-324,"big":1.7976931348623157e308,
        "escapes":"quote\" backslash\\ \b\f\n\r\t ctrl\u001f","emoji":"\ud83d\ude00","nul":"a\u0000b",
        "unicode":"ünï ✓ 日本語","nested":{"a":[[],{},null,true,false,"",0,-0,{"deep":[1,[2,[3]]]}]}}"#;
    let special: Value = serde_json::from_str(text).unwrap();
    let payloads = [
        special,
        json!(null),
        json!(42),
        json!("just a string"),
        json!([1, "two", 3.5, null]),
        json!({}),
        json!({"n": -1, "f": -2.5e-7}),
    ];
    let mut n = 0usize;
    for round in 0..10 {
        let size = round % 4 + 1;
        let events: Vec<Value> = (0..size)
            .map(|k| {
                let i = n + k;
                let mut body = event(
                    &format!("{}-{}", ["user", "order/7", "ünï"][i % 3], i % 4),
                    ["created", "updated", "deleted"][(i / 2) % 3],
                    payloads[i % payloads.len()].clone(),
                );
                if i % 3 == 1 {
                    body["metadata"] = json!({"trace": format!("t-{i}"), "n": i, "nul": "\u{0}"});
                }
                body
            })
            .collect();
        if size == 1 {
            append(c, &events[0]);
        } else {
            append_batch(c, &events);
        }
        n += size;
    }
    let all = all_events(c);
    assert_eq!(all.len(), n);
    all
}

/// Filters to compare the representations with: every parameter, alone and combined,
/// and one that matches nothing.
fn filters(all: &[Value]) -> Vec<String> {
    let ts = |i: usize| encode(all[i]["timestamp"].as_str().unwrap());
    vec![
        String::new(),
        "entity_id=user-0".into(),
        format!("entity_id={}", encode("order/7-1")),
        "event_type=updated".into(),
        "entity_id=user-0&event_type=created".into(),
        format!("since={}&until={}", ts(3), ts(12)),
        format!("as_of={}", ts(8)),
        "after=5".into(),
        "event_type=deleted&after=3".into(),
        "entity_id=nobody".into(),
    ]
}

/// Every match of the query parameters `filter` (which may hold an `after`) by the JSON
/// API, paging through with `next_after`.
pub fn json_matches(c: &impl Client, filter: &str) -> Vec<Value> {
    let (mut params, mut after) = split_after(filter);
    params.push("limit=1000".into());
    let mut events = Vec::new();
    loop {
        let mut page_params = params.clone();
        if let Some(after) = after {
            page_params.push(format!("after={after}"));
        }
        let body = ok(c, Req::get(format!("/api/v1/events/query?{}", page_params.join("&"))), 200);
        events.extend(body["events"].as_array().unwrap().iter().cloned());
        match body["next_after"].as_u64() {
            Some(next) => after = Some(next),
            None => return events,
        }
    }
}

/// The parameters of `filter` other than `after`, and `after`.
fn split_after(filter: &str) -> (Vec<String>, Option<u64>) {
    let after = filter.split('&').find_map(|p| p.strip_prefix("after=")).map(|a| a.parse().unwrap());
    let params =
        filter.split('&').filter(|p| !p.is_empty() && !p.starts_with("after=")).map(String::from).collect();
    (params, after)
}

/// The Arrow page of a query holds exactly the events of its JSON page (every field),
/// with the same count and cursor, for every filter and page size; following
/// `X-Next-After` visits every match once.
pub fn arrow_query_matches_json(c: &impl Client) {
    let all = seed(c);
    for filter in filters(&all) {
        let expected = json_matches(c, &filter);
        for limit in [1, 4, 1000] {
            let mut visited = Vec::new();
            let (base, mut after) = split_after(&filter);
            for _ in 0..=all.len() {
                let mut params = base.clone();
                params.push(format!("limit={limit}"));
                if let Some(after) = after {
                    params.push(format!("after={after}"));
                }
                let target = format!("/api/v1/events/query?{}", params.join("&"));
                let json_page = ok(c, Req::get(&target), 200);
                let (events, next_after) = arrow_page(&c.send(arrow_query(&target)), &target);
                assert_eq!(events.as_slice(), json_page["events"].as_array().unwrap().as_slice(), "{target}");
                assert_eq!(next_after, json_page["next_after"].as_u64(), "{target}");
                visited.extend(events);
                match next_after {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            assert_eq!(visited, expected, "filter {filter:?} limit {limit}");
        }
    }
    // The round trip is exact: the special payload, read through Arrow, is what was sent.
    let (events, _) = arrow_page(&c.send(arrow_query("/api/v1/events/query?limit=1")), "first");
    assert_eq!(events[0]["payload"]["u64_max"].as_u64(), Some(u64::MAX));
    assert_eq!(events[0]["payload"]["i64_min"].as_i64(), Some(i64::MIN));
    assert_eq!(events[0]["payload"]["denormal"].as_f64().map(f64::to_bits), Some(5e-324f64.to_bits()));
    assert_eq!(events[0]["payload"]["nul"], "a\u{0}b");
}

/// Which representation each `Accept` gets. Arrow only for the Arrow media type named
/// exactly and not less preferred than JSON; everything else is JSON.
pub fn arrow_accept_negotiation(c: &impl Client) {
    append(c, &event("e", "t", json!({"k": 1})));
    let target = "/api/v1/events/query";
    for (accept, arrow) in [
        (None, false),
        (Some("*/*"), false),
        (Some("application/json"), false),
        (Some("application/*"), false),
        (Some("text/html"), false),
        (Some("application/vnd.apache.arrow.file"), false),
        (Some("application/vnd.apache.arrow.stream;q=0"), false),
        (Some("application/vnd.apache.arrow.stream;q=0.5, application/json"), false),
        (Some("application/vnd.apache.arrow.stream, application/json"), false),
        (Some("application/vnd.apache.arrow.stream"), true),
        (Some("APPLICATION/VND.APACHE.ARROW.STREAM"), true),
        (Some("application/vnd.apache.arrow.stream, application/json;q=0.5"), true),
        (Some("application/json;q=0.5, application/vnd.apache.arrow.stream"), true),
        (Some("application/vnd.apache.arrow.stream, */*"), true),
        (Some("text/html, application/vnd.apache.arrow.stream;q=0.1"), true),
    ] {
        let mut req = Req::get(target);
        if let Some(accept) = accept {
            req = req.header("accept", accept);
        }
        let what = format!("Accept: {accept:?}");
        let reply = c.send(req);
        if arrow {
            let (events, next_after) = arrow_page(&reply, &what);
            assert_eq!((events.len(), next_after), (1, None), "{what}");
        } else {
            assert_eq!(reply.status, 200, "{what}");
            assert!(
                reply.header("content-type").unwrap_or_default().starts_with("application/json"),
                "{what}"
            );
            assert!(
                reply.header("vary").unwrap_or_default().to_ascii_lowercase().contains("accept"),
                "{what}"
            );
            assert_eq!(reply.json()["count"], 1, "{what}");
        }
    }
}

/// Errors are JSON in the contract's shape even when Arrow or Parquet was asked for.
pub fn columnar_errors_are_json(c: &impl Client) {
    append(c, &event("e", "t", json!({})));
    for accept in [ARROW, "application/vnd.apache.arrow.stream, application/json;q=0.1"] {
        for query in ["limit=0", "limit=abc", "since=yesterday", "entity_id=", "foo=1", "after=-1"] {
            let req = Req::get(format!("/api/v1/events/query?{query}")).header("accept", accept);
            check(c, req, 400, "ValidationError");
        }
        check(c, Req::get("/api/v1/nope").header("accept", accept), 404, "NotFound");
    }
    for format in ["parquet", "arrow"] {
        let bad = |query: &str, needle: &str| {
            let target = format!("/api/v1/export/{format}?{query}");
            check_message(c, Req::get(&target).header("accept", ARROW), 400, "ValidationError", needle);
        };
        // An export is every match: a `limit` is refused, not ignored.
        bad("limit=10", "limit");
        bad("since=yesterday", "since");
        bad("until=2026-13-01T00:00:00Z", "until");
        bad("as_of=", "as_of");
        bad("after=abc", "after");
        bad("entity_id=", "entity_id");
        bad(&format!("event_type={}", "x".repeat(257)), "event_type");
        bad("entityid=e", "entityid");
        bad("after=1&after=2", "after");
        let target = format!("/api/v1/export/{format}");
        let reply = c.send(Req::post(&target, Some("application/json"), "{}"));
        assert_error(&reply, 405, "MethodNotAllowed", &target);
    }
    check(c, Req::get("/api/v1/export/csv"), 404, "NotFound");
}

/// Each export, read back, holds exactly the matches of its filters (every field), in
/// position order; an export without matches is a valid, empty file.
pub fn export_matches_query(c: &impl Client) {
    let all = seed(c);
    for filter in filters(&all) {
        let expected = json_matches(c, &filter);
        for format in ["parquet", "arrow"] {
            assert_eq!(export(c, format, &filter), expected, "{format} {filter:?}");
        }
    }
    let reply = c.send(Req::get("/api/v1/export/arrow?entity_id=nobody"));
    assert_eq!(read_ipc(&reply.body), (Vec::new(), 0), "no matches: a stream of no batches");
    let reply = c.send(Req::get("/api/v1/export/parquet?entity_id=nobody"));
    assert_eq!(read_parquet(&reply.body).0, Vec::<Value>::new());
}

/// An export of many events (several pages, and with more than 65,536 several Parquet
/// row groups): every event once, in order, equal to the JSON API's.
pub fn big_export(c: &impl Client, n: usize, payload_bytes: usize) {
    let filler = "x".repeat(payload_bytes);
    let mut appended = 0;
    while appended < n {
        let size = (n - appended).min(10_000);
        let events: Vec<Value> = (appended..appended + size)
            .map(|i| event(&format!("e{}", i % 100), "big", json!({"i": i, "pad": filler, "x": [i, i / 7]})))
            .collect();
        append_batch(c, &events);
        appended += size;
    }
    let (parquet_events, row_groups) = {
        let reply = c.send(Req::get("/api/v1/export/parquet"));
        assert_eq!(reply.status, 200, "{}", reply.text());
        read_parquet(&reply.body)
    };
    assert_eq!(row_groups, n.div_ceil(65_536), "row groups of 65,536 rows");
    let arrow_events = export(c, "arrow", "");
    let positions: Vec<u64> = parquet_events.iter().map(|e| e["position"].as_u64().unwrap()).collect();
    assert_eq!(positions, (1..=n as u64).collect::<Vec<_>>());
    assert_eq!(parquet_events, arrow_events);
    for (i, event) in parquet_events.iter().enumerate() {
        assert_eq!(event["payload"]["i"], i, "{i}");
    }
    // A sample compared with the JSON API, field by field.
    let ids: BTreeSet<&str> = parquet_events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), n, "ids are unique");
    for after in [0, n / 2, n - 3] {
        let page = ok(c, Req::get(format!("/api/v1/events/query?after={after}&limit=3")), 200);
        assert_eq!(page["events"].as_array().unwrap().as_slice(), &parquet_events[after..after + 3]);
    }
}
