//! What the load sends: event bodies with ~200-byte payloads, the pre-loaded store's
//! shape (which entity and type each event gets), the request paths, and how a
//! subscriber's NDJSON lines are read.
//!
//! The pre-loaded store: event `i` (0-based) belongs to entity `entity-{i % n}` with
//! `n = events / 10`, so every entity has [`EVENTS_PER_ENTITY`] events; every
//! [`SMALL_TYPE_EVERY`]th event has type [`SMALL_TYPE`], all others [`LARGE_TYPE`], so
//! the two type queries ask for 10 events out of types three orders of magnitude
//! apart.

use serde_json::Value;

/// Events per entity in the pre-loaded store.
pub const EVENTS_PER_ENTITY: u64 = 10;
/// One pre-loaded event in this many has the small type.
pub const SMALL_TYPE_EVERY: u64 = 1_000;
/// The rare type of the pre-loaded store.
pub const SMALL_TYPE: &str = "load.rare";
/// The common type of the pre-loaded store.
pub const LARGE_TYPE: &str = "load.common";
/// Events per pre-load batch.
pub const PRELOAD_BATCH_EVENTS: u64 = 1_000;
/// Events per request of the batch scenario.
pub const BATCH_EVENTS: u64 = 100;
/// Distinct entities the append scenarios write to.
pub const APPEND_ENTITIES: u64 = 100_000;
/// The `limit` of the type queries.
pub const TYPE_QUERY_LIMIT: u64 = 10;

/// The path of single appends.
pub const APPEND_PATH: &str = "/api/v1/events";
/// The path of batch appends.
pub const BATCH_PATH: &str = "/api/v1/events/batch";

/// A payload of about 200 bytes of compact JSON, different for each `seq`.
pub fn payload(seq: u64) -> String {
    let mut out = String::with_capacity(EVENT_BYTES);
    write_payload(&mut out, seq);
    out
}

/// Room for one event of these bodies (they are 250-300 bytes).
const EVENT_BYTES: usize = 320;

/// Appends [`payload`]`(seq)` to `out`. The bodies are written into one buffer per
/// request, and without the formatting machinery: the load client shares the cores
/// with the server (a `String` per payload, entity and event cost it 0.17 of a core at
/// 280K events/s; with `write!` into one buffer the formatter was still a third of its
/// samples under batches).
fn write_payload(out: &mut String, seq: u64) {
    out.push_str(r#"{"name":"Customer "#);
    push_number(out, seq, 10);
    out.push_str(r#"","email":"customer."#);
    push_number(out, seq, 10);
    out.push_str(r#"@example.com","plan":"team","seats":"#);
    push_number(out, seq % 50 + 1, 1);
    out.push_str(
        r#","active":true,"lang":"pt","tags":["load","http"],"address":{"city":"Lisbon","zip":"1000-"#,
    );
    push_number(out, seq % 1_000, 3);
    out.push_str(r#"","country":"PT"}}"#);
}

/// Appends `n` in decimal, zero-padded to at least `width` digits.
fn push_number(out: &mut String, n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    let mut rest = n;
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    start = start.min(digits.len().saturating_sub(width));
    // ASCII digits: always UTF-8.
    out.push_str(std::str::from_utf8(&digits[start..]).unwrap_or_default());
}

/// One event object, as the append endpoints take it. The ids and types we generate
/// are plain ASCII letters, digits, dots and dashes: nothing to escape.
pub fn event(event_type: &str, entity_id: &str, payload: &str) -> String {
    format!(r#"{{"event_type":"{event_type}","entity_id":"{entity_id}","payload":{payload}}}"#)
}

/// Appends [`event`]`(event_type, "customer-{customer}", payload(seq))` to `out`.
fn write_customer_event(out: &mut String, event_type: &str, customer: u64, seq: u64) {
    out.push_str(r#"{"event_type":""#);
    out.push_str(event_type);
    out.push_str(r#"","entity_id":"customer-"#);
    push_number(out, customer, 1);
    out.push_str(r#"","payload":"#);
    write_payload(out, seq);
    out.push('}');
}

/// `{"events": [..]}` holding `events`.
pub fn batch<I: IntoIterator<Item = String>>(events: I) -> String {
    let mut body = String::from(r#"{"events":["#);
    for (i, event) in events.into_iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&event);
    }
    body.push_str("]}");
    body
}

/// The entities of a pre-loaded store of `n_events`.
pub fn n_entities(n_events: u64) -> u64 {
    (n_events / EVENTS_PER_ENTITY).max(1)
}

/// The entity of pre-loaded event `i`.
pub fn preload_entity(i: u64, n_events: u64) -> String {
    format!("entity-{}", i % n_entities(n_events))
}

/// The type of pre-loaded event `i`.
pub fn preload_type(i: u64) -> &'static str {
    if i.is_multiple_of(SMALL_TYPE_EVERY) {
        SMALL_TYPE
    } else {
        LARGE_TYPE
    }
}

/// How many pre-loaded events have `event_type`.
pub fn n_of_type(event_type: &str, n_events: u64) -> u64 {
    let n_small = n_events.div_ceil(SMALL_TYPE_EVERY);
    if event_type == SMALL_TYPE {
        n_small
    } else {
        n_events - n_small
    }
}

/// The pre-load batch that holds events `first..first + count`.
pub fn preload_batch(first: u64, count: u64, n_events: u64) -> String {
    batch((first..first + count).map(|i| event(preload_type(i), &preload_entity(i, n_events), &payload(i))))
}

/// A single append of the append scenarios, to one of [`APPEND_ENTITIES`] entities.
pub fn single_append(entity: u64, seq: u64) -> String {
    let mut body = String::with_capacity(EVENT_BYTES);
    write_customer_event(&mut body, "load.append", entity, seq);
    body
}

/// A batch of the batch scenario: [`BATCH_EVENTS`] events over as many entities.
pub fn batch_append(first_entity: u64, seq: u64) -> String {
    let mut body = String::with_capacity(16 + BATCH_EVENTS as usize * EVENT_BYTES);
    body.push_str(r#"{"events":["#);
    for j in 0..BATCH_EVENTS {
        if j > 0 {
            body.push(',');
        }
        let entity = (first_entity + j) % APPEND_ENTITIES;
        write_customer_event(&mut body, "load.batch", entity, seq * BATCH_EVENTS + j);
    }
    body.push_str("]}");
    body
}

/// `GET` path of an entity query.
pub fn entity_query_path(entity: &str) -> String {
    format!("/api/v1/events/query?entity_id={entity}")
}

/// `GET` path of an entity's state.
pub fn state_path(entity: &str) -> String {
    format!("/api/v1/entities/{entity}/state")
}

/// `GET` path of an entity's snapshot.
pub fn snapshot_path(entity: &str) -> String {
    format!("/api/v1/entities/{entity}/snapshot")
}

/// `GET` path of a type query: [`TYPE_QUERY_LIMIT`] events of `event_type` after
/// position `after`.
pub fn type_query_path(event_type: &str, after: u64) -> String {
    format!("/api/v1/events/query?event_type={event_type}&limit={TYPE_QUERY_LIMIT}&after={after}")
}

/// The subscription path for `entity`'s events.
pub fn stream_path(entity: &str) -> String {
    format!("/api/v1/events/stream?entity_id={entity}")
}

/// A probe event of the subscription scenario: its payload carries `probe`, its number.
pub fn probe(entity: &str, probe: u64) -> String {
    event("load.probe", entity, &format!(r#"{{"probe":{probe},"pad":"{}"}}"#, "x".repeat(150)))
}

/// One line of an NDJSON subscription.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamLine {
    /// An event; `probe` is its payload's probe number, if it has one.
    Event {
        /// The payload's `probe`.
        probe: Option<u64>,
    },
    /// The catch-up part has ended.
    CaughtUp,
    /// A keep-alive line.
    Heartbeat,
    /// The server closed the subscription with an error.
    Error(String),
    /// A blank line or a type we do not know.
    Other,
}

/// Reads one line of an NDJSON subscription: `{"type": "event", "event": {..}}` (the
/// event may also be inlined next to `type`), `caught_up`, `heartbeat` or `error`.
pub fn parse_stream_line(line: &[u8]) -> Result<StreamLine, String> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(StreamLine::Other);
    }
    let value: Value = serde_json::from_slice(line)
        .map_err(|e| format!("not JSON ({e}): {}", String::from_utf8_lossy(&line[..line.len().min(200)])))?;
    match value["type"].as_str() {
        Some("event") => {
            let event = if value["event"].is_object() { &value["event"] } else { &value };
            Ok(StreamLine::Event { probe: event["payload"]["probe"].as_u64() })
        }
        Some("caught_up") => Ok(StreamLine::CaughtUp),
        Some("heartbeat") => Ok(StreamLine::Heartbeat),
        Some("error") => Ok(StreamLine::Error(value.to_string())),
        _ if value.get("error").is_some() => Ok(StreamLine::Error(value.to_string())),
        _ => Ok(StreamLine::Other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> Value {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    #[test]
    fn payloads_are_about_200_bytes_of_compact_json() {
        for seq in [0, 7, 999_999, u64::MAX / 3] {
            let text = payload(seq);
            assert!((180..=230).contains(&text.len()), "{} bytes: {text}", text.len());
            let value = json(&text);
            assert_eq!(value.to_string().len(), text.len(), "not compact: {text}");
            assert_eq!(value["seats"], seq % 50 + 1);
        }
        assert_ne!(payload(1), payload(2));
    }

    #[test]
    fn payloads_are_what_the_format_strings_say() {
        for seq in [0, 1, 9, 10, 49, 50, 999, 1_000, 1_234_567_891, 9_999_999_999, 10_000_000_000, u64::MAX] {
            let expected = format!(
                concat!(
                    r#"{{"name":"Customer {seq:010}","email":"customer.{seq:010}@example.com","#,
                    r#""plan":"team","seats":{seats},"active":true,"lang":"pt","tags":["load","http"],"#,
                    r#""address":{{"city":"Lisbon","zip":"1000-{zip:03}","country":"PT"}}}}"#
                ),
                seq = seq,
                seats = seq % 50 + 1,
                zip = seq % 1_000,
            );
            assert_eq!(payload(seq), expected);
        }
    }

    #[test]
    fn single_and_batch_bodies() {
        let single = json(&single_append(42, 9));
        assert_eq!(single["event_type"], "load.append");
        assert_eq!(single["entity_id"], "customer-42");
        assert_eq!(single["payload"], json(&payload(9)));

        let body = json(&batch_append(APPEND_ENTITIES - 1, 3));
        let events = body["events"].as_array().unwrap();
        assert_eq!(events.len() as u64, BATCH_EVENTS);
        // Entities wrap around within the append scenarios' range.
        assert_eq!(events[0]["entity_id"], format!("customer-{}", APPEND_ENTITIES - 1));
        assert_eq!(events[1]["entity_id"], "customer-0");
        assert_eq!(events[99]["payload"], json(&payload(3 * BATCH_EVENTS + 99)));
        // Written into one buffer, byte for byte what the pieces make.
        assert_eq!(single_append(42, 9), event("load.append", "customer-42", &payload(9)));
        let pieces = batch((0..BATCH_EVENTS).map(|j| {
            let entity = format!("customer-{}", (APPEND_ENTITIES - 1 + j) % APPEND_ENTITIES);
            event("load.batch", &entity, &payload(3 * BATCH_EVENTS + j))
        }));
        assert_eq!(batch_append(APPEND_ENTITIES - 1, 3), pieces);

        let probe_event = json(&probe("probe-1", 17));
        assert_eq!(probe_event["payload"]["probe"], 17);
    }

    #[test]
    fn preloaded_store_shape() {
        let n_events = 100_000;
        assert_eq!(n_entities(n_events), 10_000);
        assert_eq!(n_entities(3), 1);
        // Every entity gets exactly EVENTS_PER_ENTITY events.
        let mut per_entity = std::collections::HashMap::new();
        let mut n_small = 0;
        let mut first = 0;
        while first < n_events {
            let count = PRELOAD_BATCH_EVENTS.min(n_events - first);
            let body = json(&preload_batch(first, count, n_events));
            for event in body["events"].as_array().unwrap() {
                *per_entity.entry(event["entity_id"].as_str().unwrap().to_string()).or_insert(0) += 1;
                n_small += u64::from(event["event_type"] == SMALL_TYPE);
            }
            first += count;
        }
        assert_eq!(per_entity.len() as u64, n_entities(n_events));
        assert!(per_entity.values().all(|&n| n == EVENTS_PER_ENTITY));
        assert_eq!(n_small, n_of_type(SMALL_TYPE, n_events));
        assert_eq!(n_small, 100);
        assert_eq!(n_of_type(LARGE_TYPE, n_events), 99_900);
        assert_eq!(n_of_type(SMALL_TYPE, 1_001), 2);
    }

    #[test]
    fn paths() {
        assert_eq!(entity_query_path("entity-5"), "/api/v1/events/query?entity_id=entity-5");
        assert_eq!(state_path("entity-5"), "/api/v1/entities/entity-5/state");
        assert_eq!(snapshot_path("entity-5"), "/api/v1/entities/entity-5/snapshot");
        assert_eq!(
            type_query_path(SMALL_TYPE, 42),
            "/api/v1/events/query?event_type=load.rare&limit=10&after=42"
        );
        assert_eq!(stream_path("probe-x"), "/api/v1/events/stream?entity_id=probe-x");
    }

    #[test]
    fn stream_lines() {
        let check = |line: &str, expected: Result<StreamLine, ()>| {
            assert_eq!(parse_stream_line(line.as_bytes()).map_err(|_| ()), expected, "{line}");
        };
        check(
            r#"{"type":"event","event":{"entity_id":"p","payload":{"probe":3},"position":9}}"#,
            Ok(StreamLine::Event { probe: Some(3) }),
        );
        check(
            r#"{"type":"event","entity_id":"p","payload":{"probe":4}}"#,
            Ok(StreamLine::Event { probe: Some(4) }),
        );
        check(r#"{"type":"event","event":{"payload":{"name":"x"}}}"#, Ok(StreamLine::Event { probe: None }));
        check(r#"{"type":"caught_up","position":12}"#, Ok(StreamLine::CaughtUp));
        check(r#"{"type":"heartbeat"}"#, Ok(StreamLine::Heartbeat));
        check("", Ok(StreamLine::Other));
        check(r#"{"type":"something_new"}"#, Ok(StreamLine::Other));
        check("{not json", Err(()));
        let error = r#"{"type":"error","error":{"code":"SlowConsumer","message":"too slow"}}"#;
        assert!(
            matches!(parse_stream_line(error.as_bytes()), Ok(StreamLine::Error(text)) if text.contains("SlowConsumer"))
        );
    }
}
