//! The engine's contract, tested through its public API: sequencing, idempotency,
//! optimistic concurrency, atomic batches, queries and paging, time travel,
//! projections, and many threads at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use allsource_core::projection::Projection;
use allsource_core::{Event, EventStore, NewEvent, Position, QueryEventsRequest, Timestamp, Uuid};
use serde_json::{json, Value};

fn new(event_type: &str, entity: &str, payload: Value) -> NewEvent {
    Event::new(event_type.into(), entity.into(), payload)
}

fn query(store: &EventStore, request: QueryEventsRequest) -> Vec<Position> {
    store.query(request).unwrap().events.iter().map(|e| e.position).collect()
}

/// Every page of a query, following `next_after`, flattened.
fn all_pages(store: &EventStore, mut request: QueryEventsRequest) -> Vec<Position> {
    let mut positions = Vec::new();
    for _ in 0..10_000 {
        let page = store.query(request.clone()).unwrap();
        assert!(page.events.len() <= request.limit.unwrap_or(1000));
        positions.extend(page.events.iter().map(|e| e.position));
        match page.next_after {
            Some(after) => request.after = Some(after),
            None => return positions,
        }
    }
    panic!("paging did not end");
}

#[test]
fn positions_versions_and_timestamps_are_assigned() {
    let store = EventStore::new();
    let a1 = store.ingest(new("t", "a", json!({"x": 1}))).unwrap();
    let b1 = store.ingest(new("t", "b", json!({"x": 2}))).unwrap();
    let a2 = store.ingest(new("t", "a", json!({"x": 3}))).unwrap();
    assert_eq!((a1.position, a1.version), (1, 1));
    assert_eq!((b1.position, b1.version), (2, 1));
    assert_eq!((a2.position, a2.version), (3, 2));
    assert!(a1.timestamp <= b1.timestamp && b1.timestamp <= a2.timestamp);
    assert_eq!(a1.metadata, json!({}));
    assert_eq!(store.get_event(a2.id).unwrap(), a2);
    let stats = store.stats();
    assert_eq!(
        (stats.total_events, stats.total_entities, stats.total_event_types, stats.total_ingested),
        (3, 2, 1, 3)
    );
}

#[test]
fn idempotent_retry_and_duplicate_ids() {
    let store = EventStore::new();
    let id = Uuid::now_v7();
    let first = store.append(new("t", "a", json!({"x": 1})).with_id(id)).unwrap();
    assert!(first.created);
    let retry = store.append(new("t", "a", json!({"x": 1})).with_id(id)).unwrap();
    assert!(!retry.created);
    assert_eq!(retry.event, first.event);
    // A retry wins over expected_version, which the first attempt has moved on.
    let retry = store.append(new("t", "a", json!({"x": 1})).with_id(id).with_expected_version(0)).unwrap();
    assert!(!retry.created);
    let err = store.append(new("t", "a", json!({"x": 2})).with_id(id)).unwrap_err();
    assert_eq!(err.code(), "DuplicateEventId");
    let err =
        store.append(new("t", "a", json!({"x": 1})).with_id(id).with_metadata(json!({"m": 1}))).unwrap_err();
    assert_eq!(err.code(), "DuplicateEventId");
    assert_eq!(store.stats().total_events, 1);
    assert_eq!(store.stats().total_ingested, 1);
}

#[test]
fn expected_version_is_checked() {
    let store = EventStore::new();
    store.append(new("t", "a", json!(1)).with_expected_version(0)).unwrap();
    let err = store.append(new("t", "a", json!(2)).with_expected_version(0)).unwrap_err();
    assert_eq!(err.code(), "ConcurrencyConflict");
    match err {
        allsource_core::Error::ConcurrencyConflict { expected_version, current_version, .. } => {
            assert_eq!((expected_version, current_version), (0, 1));
        }
        other => panic!("{other:?}"),
    }
    store.append(new("t", "a", json!(2)).with_expected_version(1)).unwrap();
    assert_eq!(store.stats().total_events, 2);
}

#[test]
fn batches_are_atomic() {
    let store = EventStore::new();
    store.ingest(new("t", "a", json!(0))).unwrap();
    // Item 2 conflicts: expected_version counts earlier items of the batch.
    let batch = vec![
        new("t", "a", json!(1)).with_expected_version(1),
        new("t", "a", json!(2)).with_expected_version(2),
        new("t", "a", json!(3)).with_expected_version(2),
    ];
    let err = store.append_batch(batch).unwrap_err();
    assert_eq!(err.code(), "ConcurrencyConflict");
    assert!(err.to_string().contains("batch item 2"), "{err}");
    // An invalid item fails the whole batch too.
    let err = store.append_batch(vec![new("t", "b", json!(1)), new("", "b", json!(1))]).unwrap_err();
    assert_eq!(err.code(), "ValidationError");
    assert!(err.to_string().contains("batch item 1"), "{err}");
    // The same id twice in one batch.
    let id = Uuid::now_v7();
    let err =
        store.append_batch(vec![new("t", "b", json!(1)).with_id(id), new("t", "b", json!(1)).with_id(id)]);
    assert_eq!(err.unwrap_err().code(), "DuplicateEventId");
    assert_eq!(store.stats().total_events, 1);
    assert_eq!(store.stats().total_entities, 1);
    assert!(store.get_event(id).is_err());

    let ok = store
        .append_batch(vec![
            new("t", "a", json!(1)).with_expected_version(1),
            new("t", "b", json!(1)),
            new("t", "a", json!(2)).with_expected_version(2),
        ])
        .unwrap();
    assert_eq!(ok.created, 3);
    let placed: Vec<_> = ok.events.iter().map(|e| (e.position, e.version)).collect();
    assert_eq!(placed, vec![(2, 2), (3, 1), (4, 3)]);
    assert!(ok.events.iter().all(|e| e.timestamp == ok.events[0].timestamp));

    let empty = store.append_batch(Vec::<NewEvent>::new()).unwrap_err();
    assert_eq!(empty.code(), "ValidationError");
    let too_many = (0..10_001).map(|i| new("t", "c", json!(i))).collect();
    assert_eq!(store.append_batch(too_many).unwrap_err().code(), "ValidationError");
}

#[test]
fn batch_retry_appends_nothing() {
    let store = EventStore::new();
    let batch: Vec<NewEvent> = (0..5).map(|i| new("t", "a", json!(i)).with_id(Uuid::now_v7())).collect();
    let first = store.append_batch(batch.clone()).unwrap();
    let retry = store.append_batch(batch).unwrap();
    assert_eq!((first.created, retry.created), (5, 0));
    assert_eq!(first.events, retry.events);
    assert_eq!(store.stats().total_events, 5);
}

#[test]
fn queries_filter_and_page_exactly_once() {
    let store = EventStore::new();
    let types = ["created", "updated", "deleted"];
    let mut expected: HashMap<(Option<usize>, Option<usize>), Vec<Position>> = HashMap::new();
    for i in 0..500usize {
        let (t, e) = (i % 3, (i * 7) % 11);
        let event = store.ingest(new(types[t], &format!("e{e}"), json!({"i": i}))).unwrap();
        for key in [(None, None), (Some(t), None), (None, Some(e)), (Some(t), Some(e))] {
            expected.entry(key).or_default().push(event.position);
        }
    }
    for ((t, e), positions) in &expected {
        for limit in [1, 7, 1000] {
            let request = QueryEventsRequest {
                event_type: t.map(|t| types[t].to_string()),
                entity_id: e.map(|e| format!("e{e}")),
                limit: Some(limit),
                ..Default::default()
            };
            assert_eq!(&all_pages(&store, request), positions, "type {t:?} entity {e:?} limit {limit}");
        }
    }
    let none = QueryEventsRequest { entity_id: Some("nobody".into()), ..Default::default() };
    assert!(query(&store, none).is_empty());
    let past_end = QueryEventsRequest { after: Some(10_000), ..Default::default() };
    assert!(query(&store, past_end).is_empty());
    let bad = QueryEventsRequest { limit: Some(0), ..Default::default() };
    assert_eq!(store.query(bad).unwrap_err().code(), "ValidationError");
}

#[test]
fn pages_are_bounded_in_bytes_and_still_page_exactly_once() {
    use allsource_core::limits::PAGE_TEXT_BYTES_MAX;
    let store = EventStore::new();
    // Payloads of ~1 MB: 70 of them pass a page's bytes.
    let body = "x".repeat(999_980);
    let event_bytes = json!({ "b": body }).to_string().len() + "{}".len();
    let per_page = PAGE_TEXT_BYTES_MAX / event_bytes;
    assert!((16..70).contains(&per_page), "{per_page}");
    let positions: Vec<Position> = (0..70)
        .map(|i| store.ingest(new("doc", &format!("d{i}"), json!({ "b": body }))).unwrap().position)
        .collect();

    let request = QueryEventsRequest { limit: Some(100), ..Default::default() };
    let page = store.query(request.clone()).unwrap();
    assert_eq!(page.events.len(), per_page);
    assert_eq!(page.next_after, Some(positions[per_page - 1]));
    assert_eq!(all_pages(&store, request), positions);

    // A page always holds one event, and says when it is the last.
    let last = QueryEventsRequest { after: Some(positions[68]), limit: Some(5), ..Default::default() };
    let page = store.query(last).unwrap();
    assert_eq!((page.events.len(), page.next_after), (1, None));
}

#[test]
fn time_filters_and_as_of() {
    let store = EventStore::new();
    let mut stamps = Vec::new();
    for i in 0..200 {
        let e = store.ingest(new("t", &format!("e{}", i % 3), json!({"i": i}))).unwrap();
        stamps.push((e.position, e.timestamp));
    }
    let stamps_of = |f: &dyn Fn(Timestamp) -> bool| -> Vec<Position> {
        stamps.iter().filter(|(_, t)| f(*t)).map(|(p, _)| *p).collect()
    };
    for &(_, t) in stamps.iter().step_by(17) {
        let since = QueryEventsRequest { since: Some(t), limit: Some(10_000), ..Default::default() };
        assert_eq!(query(&store, since), stamps_of(&|x| x >= t));
        let until = QueryEventsRequest { until: Some(t), limit: Some(10_000), ..Default::default() };
        assert_eq!(query(&store, until), stamps_of(&|x| x <= t));
        let as_of = QueryEventsRequest {
            as_of: Some(t),
            entity_id: Some("e1".into()),
            limit: Some(10_000),
            ..Default::default()
        };
        let expected: Vec<Position> =
            stamps.iter().filter(|(p, x)| *x <= t && (p - 1) % 3 == 1).map(|(p, _)| *p).collect();
        assert_eq!(query(&store, as_of), expected);
    }
    let before_all = Timestamp::from_micros(stamps[0].1.as_micros() - 1);
    let err = store.reconstruct_state("e0", Some(before_all)).unwrap_err();
    assert_eq!(err.code(), "EntityNotFound");
}

/// An entity and a type with more events than one block of a position list (8,192):
/// paging, both filters together, cursors at block boundaries and time travel read
/// across the blocks exactly as within one.
#[test]
fn long_position_lists_read_the_same_across_blocks() {
    let store = EventStore::new();
    let mut appended: Vec<Arc<Event>> = Vec::new();
    for batch in 0..25u64 {
        // 1,000 events a batch (one timestamp each): 6 of 7 for the hot entity, types
        // "a" and "b" alternating.
        let events = (0..1_000u64)
            .map(|i| {
                let n = batch * 1_000 + i;
                let entity = if n % 7 == 0 { "cold" } else { "hot" };
                new(["a", "b"][(n % 2) as usize], entity, json!({"n": n}))
            })
            .collect();
        appended.extend(store.append_batch(events).unwrap().events);
    }
    let positions_where = |f: &dyn Fn(&Event) -> bool| -> Vec<Position> {
        appended.iter().filter(|e| f(e)).map(|e| e.position).collect()
    };
    let hot = positions_where(&|e| e.entity_id.as_str() == "hot");
    let type_a = positions_where(&|e| e.event_type.as_str() == "a");
    assert!(hot.len() > 2 * 8_192 && type_a.len() > 8_192);

    let request = |entity: Option<&str>, event_type: Option<&str>| QueryEventsRequest {
        entity_id: entity.map(Into::into),
        event_type: event_type.map(Into::into),
        limit: Some(1_000),
        ..Default::default()
    };
    assert_eq!(all_pages(&store, request(Some("hot"), None)), hot);
    assert_eq!(all_pages(&store, request(None, Some("a"))), type_a);
    let hot_a = positions_where(&|e| e.entity_id.as_str() == "hot" && e.event_type.as_str() == "a");
    assert_eq!(all_pages(&store, request(Some("hot"), Some("a"))), hot_a);

    // A cursor just before, at and after each block boundary of the hot entity's list.
    for boundary in [8_192usize, 16_384] {
        for index in [boundary - 2, boundary - 1, boundary] {
            let after = QueryEventsRequest {
                after: Some(hot[index - 1]),
                limit: Some(5),
                ..request(Some("hot"), None)
            };
            assert_eq!(query(&store, after), hot[index..index + 5], "after the {index}th");
        }
    }

    // As of the time of some batches: the hot entity's state is at the version of its
    // events up to then.
    for batch in [7usize, 8, 16, 24] {
        let at = appended[batch * 1_000].timestamp;
        let state = store.reconstruct_state("hot", Some(at)).unwrap();
        let qualifying: Vec<&Arc<Event>> =
            appended.iter().filter(|e| e.entity_id.as_str() == "hot" && e.timestamp <= at).collect();
        assert_eq!(state.version, qualifying.len() as u64, "as of batch {batch}");
        let last = qualifying.last().unwrap();
        assert_eq!(state.state, last.payload.to_value(), "every payload replaces the one key");
    }
    assert_eq!(store.snapshot("hot").unwrap().version, hot.len() as u64);
}

#[test]
fn state_replays_merge_patches_and_equals_snapshot() {
    let store = EventStore::new();
    let e1 = store.ingest(new("t", "order/7", json!({"status": "new", "items": {"a": 1}}))).unwrap();
    store.ingest(new("t", "order/7", json!({"items": {"b": 2}, "status": "paid"}))).unwrap();
    store.ingest(new("t", "order/7", json!({"items": {"a": null}}))).unwrap();
    let state = store.reconstruct_state("order/7", None).unwrap();
    assert_eq!(state.state, json!({"status": "paid", "items": {"b": 2}}));
    assert_eq!(state.version, 3);
    assert_eq!(store.snapshot("order/7").unwrap(), state);
    let early = store.reconstruct_state("order/7", Some(e1.timestamp)).unwrap();
    assert!(early.version >= 1 && early.as_of == Some(e1.timestamp));
    assert_eq!(store.reconstruct_state("nobody", None).unwrap_err().code(), "EntityNotFound");
    assert_eq!(store.snapshot("nobody").unwrap_err().code(), "EntityNotFound");
    assert_eq!(store.snapshot("").unwrap_err().code(), "ValidationError");
}

/// The state at each event's timestamp is the merge of the events up to it, whether it
/// comes from the snapshot (the current version) or from a replay (an earlier one, or
/// no snapshot at all).
#[test]
fn state_as_of_each_event_is_the_merge_of_its_prefix() {
    let store = EventStore::new();
    let mut appended = Vec::new();
    for i in 0..30 {
        let patch = if i % 7 == 6 { json!({"k0": null}) } else { json!({format!("k{}", i % 4): i, "n": i}) };
        store.ingest(new("t", "other", json!({"noise": i}))).unwrap();
        appended.push((store.ingest(new("t", "acct", patch.clone())).unwrap(), patch));
    }
    let expect_at = |as_of: Timestamp| {
        let mut state = Value::Null;
        let mut version = 0;
        for (event, patch) in appended.iter().filter(|(e, _)| e.timestamp <= as_of) {
            allsource_core::projection::apply_merge_patch(&mut state, patch);
            version = event.version;
        }
        (state, version)
    };
    let check = |store: &EventStore| {
        for (event, _) in &appended {
            let state = store.reconstruct_state("acct", Some(event.timestamp)).unwrap();
            let (expected, version) = expect_at(event.timestamp);
            assert_eq!((&state.state, state.version), (&expected, version), "as of {}", event.timestamp);
            assert_eq!(state.as_of, Some(event.timestamp));
        }
        let now = store.reconstruct_state("acct", None).unwrap();
        assert_eq!((now.state, now.version, now.as_of), (expect_at(Timestamp::MAX).0, 30, None));
    };
    check(&store);
    assert_eq!(store.snapshot("acct").unwrap(), store.reconstruct_state("acct", None).unwrap());

    // Without snapshots every state is a replay, and still the same.
    store.projection("entity_snapshots").unwrap().clear();
    assert_eq!(store.snapshot("acct").unwrap_err().code(), "EntityNotFound");
    check(&store);
}

/// A custom projection: the sum of `amount` per entity, and the positions it saw.
#[derive(Default)]
struct Totals {
    totals: Mutex<HashMap<String, i64>>,
    seen: Mutex<Vec<u64>>,
}

impl Projection for Totals {
    fn name(&self) -> &str {
        "totals"
    }
    fn process(&self, event: &Event) -> allsource_core::Result<()> {
        let amount = event.payload.to_value().get("amount").and_then(Value::as_i64).unwrap_or(0);
        *self.totals.lock().unwrap().entry(event.entity_id.to_string()).or_default() += amount;
        self.seen.lock().unwrap().push(event.position);
        Ok(())
    }
    fn get_state(&self, key: &str) -> Option<Value> {
        self.totals.lock().unwrap().get(key).map(|t| json!({"total": t}))
    }
    fn clear(&self) {
        self.totals.lock().unwrap().clear();
    }
}

#[test]
fn custom_projections_see_every_event_once_in_order() {
    let store = EventStore::new();
    for i in 0..10 {
        store.ingest(new("paid", &format!("a{}", i % 2), json!({"amount": i}))).unwrap();
    }
    let totals = Arc::new(Totals::default());
    store.register_projection(totals.clone()).unwrap();
    for i in 10..20 {
        store.ingest(new("paid", &format!("a{}", i % 2), json!({"amount": i}))).unwrap();
    }
    assert_eq!(*totals.seen.lock().unwrap(), (1..=20).collect::<Vec<u64>>());
    let projection = store.projection("totals").unwrap();
    assert_eq!(projection.get_state("a0"), Some(json!({"total": (0..20).step_by(2).sum::<i64>()})));
    assert!(store.register_projection(Arc::new(Totals::default())).is_err());
    assert_eq!(store.projection_names(), vec!["entity_snapshots", "event_counters", "totals"]);
    let counters = store.projection("event_counters").unwrap();
    assert_eq!(counters.get_state("paid"), Some(json!({"count": 20})));
}

#[test]
fn concurrent_writers_get_gapless_unique_positions_and_versions() {
    let store = Arc::new(EventStore::new());
    let threads = 16;
    let per_thread = 500;
    let conflicts = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let store = &store;
            let conflicts = &conflicts;
            scope.spawn(move || {
                for i in 0..per_thread {
                    // Half the threads share entities, half write their own.
                    let entity =
                        if thread % 2 == 0 { format!("shared-{}", i % 5) } else { format!("own-{thread}") };
                    store.ingest(new("t", &entity, json!({"thread": thread, "i": i}))).unwrap();
                    // Racing optimistic writers on one entity: some conflict, none corrupt.
                    let current = store.snapshot("race").map(|s| s.version).unwrap_or(0);
                    match store
                        .append(new("race", "race", json!({"by": thread})).with_expected_version(current))
                    {
                        Ok(_) => {}
                        Err(e) if e.code() == "ConcurrencyConflict" => {
                            conflicts.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            });
        }
        // A reader that keeps checking it never sees a gap below the watermark.
        let store = &store;
        scope.spawn(move || {
            for _ in 0..200 {
                let committed = store.committed_position();
                let page =
                    store.query(QueryEventsRequest { limit: Some(10_000), ..Default::default() }).unwrap();
                let positions: Vec<u64> = page.events.iter().map(|e| e.position).collect();
                let expected: Vec<u64> = (1..=positions.len() as u64).collect();
                assert_eq!(positions, expected);
                assert!(positions.len() as u64 >= committed.min(10_000));
            }
        });
    });
    let race_events = store.snapshot("race").unwrap().version;
    let total = (threads * per_thread) as u64 + race_events;
    assert_eq!(race_events + conflicts.load(Ordering::Relaxed), (threads * per_thread) as u64);
    assert_eq!(store.stats().total_events, total);
    let all = all_pages(&store, QueryEventsRequest { limit: Some(10_000), ..Default::default() });
    assert_eq!(all, (1..=total).collect::<Vec<_>>());
    // Per entity: versions 1..=n in position order, each id unique.
    let mut versions: HashMap<String, u64> = HashMap::new();
    let mut ids = HashSet::new();
    let mut last_timestamp = Timestamp::MIN;
    for position in all {
        let page = store.query(QueryEventsRequest {
            after: Some(position - 1),
            limit: Some(1),
            ..Default::default()
        });
        let event = page.unwrap().events[0].clone();
        let version = versions.entry(event.entity_id.to_string()).or_default();
        *version += 1;
        assert_eq!(event.version, *version, "entity {}", event.entity_id);
        assert!(ids.insert(event.id));
        assert!(event.timestamp >= last_timestamp);
        last_timestamp = event.timestamp;
    }
}

/// `on_commit` listeners hear every advance of the committed position, once the events
/// up to it are readable: with the inline commit of the in-memory log and with the
/// commit writer thread of a durable one.
#[test]
fn commit_listeners_see_each_advance_once_it_is_visible() {
    let dir = tempfile::tempdir().unwrap();
    let (durable, _) = EventStore::open_dir(dir.path(), allsource_core::WalConfig::default()).unwrap();
    for store in [Arc::new(EventStore::new()), Arc::new(durable)] {
        let heard = Arc::new(Mutex::new(Vec::new()));
        let (sink, reader) = (heard.clone(), Arc::downgrade(&store));
        store.on_commit(move |position| {
            // The listener runs after the watermark moved: a read finds the events.
            let visible = reader.upgrade().map(|s| s.committed_position());
            sink.lock().unwrap().push((position, visible));
        });
        store.append(new("t", "a", json!({}))).unwrap();
        store.append_batch(vec![new("t", "b", json!({})), new("t", "c", json!({}))]).unwrap();
        let heard = heard.lock().unwrap().clone();
        assert_eq!(heard.iter().map(|(p, _)| *p).collect::<Vec<_>>(), vec![1, 3], "{heard:?}");
        for (position, visible) in heard {
            assert!(visible.is_some_and(|v| v >= position), "{position} heard before visible ({visible:?})");
        }
    }
}

/// Batches that are refused at a later item, after earlier items had their entities'
/// versions counted, race with batches that are taken and with readers: every entity
/// still has versions 1..=n in position order, a refused batch leaves no trace (not
/// even an entity it would have created), and the next expected_version is n.
#[test]
fn batches_refused_midway_leave_no_trace_under_concurrency() {
    let store = EventStore::new();
    let (threads, batches, entities): (usize, usize, usize) = (6, 150, 7);
    let accepted = AtomicU64::new(0);
    let done = std::sync::atomic::AtomicBool::new(false);
    let check_entity = |store: &EventStore, entity: &str| -> u64 {
        let request = QueryEventsRequest {
            entity_id: Some(entity.to_string()),
            limit: Some(10_000),
            ..Default::default()
        };
        let events = store.query(request).unwrap().events;
        let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
        assert_eq!(versions, (1..=events.len() as u64).collect::<Vec<_>>(), "{entity}");
        assert!(events.windows(2).all(|w| w[0].position < w[1].position), "{entity}");
        events.len() as u64
    };
    std::thread::scope(|scope| {
        let writers: Vec<_> = (0..threads)
            .map(|thread| {
                let (store, accepted) = (&store, &accepted);
                scope.spawn(move || {
                    for i in 0..batches {
                        let mut batch: Vec<NewEvent> = (0..5)
                            .map(|j| {
                                new(
                                    "t",
                                    &format!("e{}", (thread + i + j) % entities),
                                    json!({"t": thread, "i": i, "j": j}),
                                )
                            })
                            .collect();
                        match i % 3 {
                            // Refused at the last item: its four others were counted first.
                            0 => batch.push(new("t", "e0", json!(null)).with_expected_version(u64::MAX)),
                            // An entity the batch creates, then a refusal.
                            1 => {
                                batch.insert(0, new("t", &format!("fresh-{thread}-{i}"), json!({})));
                                batch.push(new("t", "e1", json!(null)).with_expected_version(u64::MAX));
                            }
                            _ => {}
                        }
                        match store.append_batch(batch) {
                            Ok(appended) => {
                                assert_eq!(i % 3, 2, "a batch with a refusal was taken");
                                accepted.fetch_add(appended.created as u64, Ordering::Relaxed);
                            }
                            Err(e) => {
                                assert_eq!(e.code(), "ConcurrencyConflict");
                                assert_ne!(i % 3, 2, "{e}");
                            }
                        }
                    }
                })
            })
            .collect();
        let (store, done) = (&store, &done);
        scope.spawn(move || {
            // Bounded, should the writers never end.
            for _ in 0..100_000 {
                if done.load(Ordering::Acquire) {
                    break;
                }
                for entity in 0..entities {
                    check_entity(store, &format!("e{entity}"));
                }
            }
        });
        // The reader stops before a writer's failure is raised, or the scope would wait.
        let results: Vec<_> = writers.into_iter().map(|writer| writer.join()).collect();
        done.store(true, Ordering::Release);
        for result in results {
            if let Err(panic) = result {
                std::panic::resume_unwind(panic);
            }
        }
    });
    let mut total = 0;
    for entity in 0..entities {
        let entity = format!("e{entity}");
        let n = check_entity(&store, &entity);
        assert_eq!(store.snapshot(&entity).unwrap().version, n);
        assert_eq!(
            store.append(new("t", &entity, json!({})).with_expected_version(n)).unwrap().event.version,
            n + 1
        );
        total += n;
    }
    assert_eq!(total, accepted.load(Ordering::Relaxed));
    assert_eq!(total, (threads * (batches / 3) * 5) as u64);
    for thread in 0..threads {
        for i in (1..batches).step_by(3) {
            let entity = format!("fresh-{thread}-{i}");
            assert_eq!(check_entity(&store, &entity), 0);
            assert!(store.snapshot(&entity).is_err(), "{entity}");
            // The entity the refused batch would have made is new to the next append.
            let first = store.append(new("t", &entity, json!({})).with_expected_version(0)).unwrap();
            assert_eq!(first.event.version, 1);
        }
    }
    assert_eq!(store.stats().total_entities, (entities + threads * (batches / 3)) as u64);
}
