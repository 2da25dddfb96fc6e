//! Sealed chunks held as Arrow columns: once a table chunk (65,536 events) is sealed on
//! disk the engine keeps its events as one record batch, and every read (by id, by
//! query, replay, exports, views rendered as JSON) answers exactly as it did from the
//! event objects; after a restart, chunks of any size on disk become the same table.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use allsource_core::{Event, EventStore, NewEvent, QueryEventsRequest, SyncMode, WalConfig};
use serde_json::json;

/// Two full table chunks and part of a third.
const EVENTS: usize = 2 * 65_536 + 7_001;

fn config(chunk_events: u64) -> WalConfig {
    WalConfig { sync: SyncMode::None, chunk_events, ..WalConfig::default() }
}

fn new_event(i: usize) -> NewEvent {
    // Entity ids and types with characters JSON must escape, unicode, and payloads
    // of every JSON kind.
    let entity = match i % 7 {
        0 => format!("quote\"d-{}", i % 13),
        1 => format!("üñï-{}", i % 101),
        _ => format!("entity-{}", i % 997),
    };
    let event_type = ["order.placed", "order.paid", "back\\slash"][i % 3].to_string();
    let payload = match i % 4 {
        0 => json!({"n": i, "big": u64::MAX - i as u64, "f": 0.1 + i as f64, "s": format!("x\u{1F600}{i}")}),
        1 => json!([i, null, true, {"k": "v"}]),
        2 => json!(format!("line\nbreak {i}")),
        _ => json!({"nested": {"deep": [i]}, "drop": null}),
    };
    let mut event = Event::new(event_type, entity, payload);
    if i.is_multiple_of(5) {
        event.metadata = Some(json!({"trace": i}));
    }
    event
}

fn append_all(store: &EventStore) -> Vec<Arc<Event>> {
    let mut appended = Vec::with_capacity(EVENTS);
    let mut i = 0;
    while i < EVENTS {
        let batch: Vec<NewEvent> = (i..(i + 1000).min(EVENTS)).map(new_event).collect();
        i += batch.len();
        appended.extend(store.append_batch(batch).unwrap().events);
    }
    appended
}

fn wait_for_columns(store: &EventStore, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.stats().columnar_events < at_least {
        assert!(Instant::now() < deadline, "chunks were not turned into columns: {:?}", store.stats());
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn all_pages(store: &EventStore, mut request: QueryEventsRequest) -> Vec<Arc<Event>> {
    request.limit = Some(1000);
    let mut events = Vec::new();
    loop {
        let page = store.query(request.clone()).unwrap();
        events.extend(page.events);
        match page.next_after {
            Some(after) => request.after = Some(after),
            None => return events,
        }
    }
}

/// Every read path against the events as appended.
fn check_reads(store: &EventStore, expected: &[Arc<Event>], what: &str) {
    // Every event by id, as an object and as a view rendered to JSON.
    for event in expected.iter().step_by(37).chain(expected.last()) {
        assert_eq!(&store.get_event(event.id).unwrap(), event, "{what}: get {}", event.position);
        let mut json = Vec::new();
        store.get_event_view(event.id).unwrap().write_json(&mut json);
        assert_eq!(
            String::from_utf8(json).unwrap(),
            serde_json::to_string(&**event).unwrap(),
            "{what}: view JSON of {}",
            event.position
        );
    }
    // The whole log, page by page.
    let everything = all_pages(store, QueryEventsRequest::default());
    assert_eq!(everything.len(), expected.len(), "{what}: full scan");
    assert!(everything.iter().zip(expected).all(|(a, b)| a == b), "{what}: full scan differs");

    // By entity (escaped and unicode ids included), by type, by both.
    let mut by_entity: BTreeMap<&str, Vec<&Arc<Event>>> = BTreeMap::new();
    for event in expected {
        by_entity.entry(event.entity_id.as_str()).or_default().push(event);
    }
    for entity in ["quote\"d-3", "üñï-5", "entity-10", "entity-996"] {
        let request = QueryEventsRequest { entity_id: Some(entity.to_string()), ..Default::default() };
        let found = all_pages(store, request);
        let wanted: Vec<&Arc<Event>> = by_entity[entity].clone();
        assert_eq!(found.len(), wanted.len(), "{what}: entity {entity}");
        assert!(found.iter().zip(&wanted).all(|(a, b)| a == *b), "{what}: entity {entity}");
        let state = store.reconstruct_state(entity, None).unwrap();
        assert_eq!(state, store.snapshot(entity).unwrap(), "{what}: replay of {entity} equals its snapshot");
        assert_eq!(state.version, wanted.len() as u64);
    }
    let request = QueryEventsRequest {
        event_type: Some("back\\slash".to_string()),
        entity_id: Some("entity-2".to_string()),
        ..Default::default()
    };
    let wanted: Vec<&Arc<Event>> = expected
        .iter()
        .filter(|e| e.event_type.as_str() == "back\\slash" && e.entity_id.as_str() == "entity-2")
        .collect();
    let found = all_pages(store, request);
    assert!(!wanted.is_empty());
    assert_eq!(found.len(), wanted.len(), "{what}: type and entity");
    assert!(found.iter().zip(&wanted).all(|(a, b)| a == *b));

    // Views of a page render what serde renders of the events.
    let page = store.query_views(QueryEventsRequest {
        after: Some(65_000),
        limit: Some(1000),
        ..Default::default()
    });
    for view in page.unwrap().events {
        let mut json = Vec::new();
        view.write_json(&mut json);
        let event = &expected[view.position() as usize - 1];
        assert_eq!(String::from_utf8(json).unwrap(), serde_json::to_string(&**event).unwrap());
    }

    // An Arrow export of everything, across sealed and open chunks.
    let mut ipc = Vec::new();
    let request = QueryEventsRequest { limit: Some(1000), ..Default::default() };
    let written = store.export(request, allsource_core::ExportFormat::ArrowIpc, &mut ipc).unwrap();
    assert_eq!(written, expected.len() as u64);
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None).unwrap();
    let mut exported = Vec::new();
    for batch in reader {
        exported.extend(allsource_core::columnar::from_record_batch(&batch.unwrap()).unwrap());
    }
    assert!(exported.iter().zip(expected).all(|(a, b)| a == &**b), "{what}: export differs");
    assert_eq!(exported.len(), expected.len());
}

#[test]
fn sealed_chunks_become_columns_and_every_read_answers_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let (store, _) = EventStore::open_dir(dir.path(), config(65_536)).unwrap();
        let expected = append_all(&store);
        check_reads(&store, &expected, "before sealing");
        wait_for_columns(&store, 2 * 65_536);
        let stats = store.stats();
        assert_eq!(stats.columnar_events, 2 * 65_536, "the third chunk is not full");
        assert!(stats.columnar_bytes > 0);
        check_reads(&store, &expected, "sealed in memory");
        // Appends after sealing continue the log.
        let more = store.append(new_event(EVENTS)).unwrap().event;
        assert_eq!(more.position, EVENTS as u64 + 1);
        assert_eq!(
            more.version,
            expected.iter().filter(|e| e.entity_id == more.entity_id).count() as u64 + 1
        );
        let mut expected = expected;
        expected.push(more);
        expected
    };
    // Restarted from Parquet: the full chunks are columns from the start.
    let (store, report) = EventStore::open_dir(dir.path(), config(65_536)).unwrap();
    assert_eq!(report.events, expected.len() as u64);
    assert_eq!(store.stats().columnar_events, 2 * 65_536);
    check_reads(&store, &expected, "after a restart");
}

#[test]
fn small_files_on_disk_are_joined_into_table_chunks_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        // Files of 1,000 events: a table chunk is cut from 66 of them, one cut across.
        let (store, _) = EventStore::open_dir(dir.path(), config(1_000)).unwrap();
        let expected = append_all(&store);
        wait_for_columns(&store, 2 * 65_536);
        check_reads(&store, &expected, "small files, sealed in memory");
        expected
    };
    let (store, report) = EventStore::open_dir(dir.path(), config(1_000)).unwrap();
    assert!(report.chunks > 100, "{report:?}");
    assert_eq!(store.stats().columnar_events, 2 * 65_536);
    check_reads(&store, &expected, "small files, after a restart");
    // The projections continue from where they were: one more append of an entity
    // with events in sealed chunks.
    let next = store.append(new_event(10)).unwrap().event;
    let entity_events = expected.iter().filter(|e| e.entity_id == next.entity_id).count() as u64;
    assert_eq!(next.version, entity_events + 1);
    assert_eq!(store.snapshot(next.entity_id.as_str()).unwrap().version, entity_events + 1);
}
