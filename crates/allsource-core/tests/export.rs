//! Arrow and Parquet out of the engine: a query page as an Arrow IPC stream, and
//! exports of every match, read back with the arrow and parquet crates' own readers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use allsource_core::columnar::{from_record_batch, schema};
use allsource_core::{Event, EventStore, ExportFormat, QueryEventsRequest};
use serde_json::json;

fn store() -> EventStore {
    let store = EventStore::new();
    for i in 0..2_500u64 {
        let payload = json!({"i": i, "f": i as f64 / 3.0, "s": format!("é{i}\u{0}"), "big": u64::MAX - i});
        let event = Event::new(format!("type-{}", i % 3), format!("entity/{}", i % 7), payload)
            .with_metadata(json!({"batch": i / 100}));
        store.ingest(event).unwrap();
    }
    store
}

fn read_ipc(bytes: Vec<u8>) -> Vec<Event> {
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
    assert_eq!(reader.schema(), schema());
    reader.flat_map(|batch| from_record_batch(&batch.unwrap()).unwrap()).collect()
}

fn read_parquet(bytes: Vec<u8>) -> Vec<Event> {
    let file =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes));
    file.unwrap().build().unwrap().flat_map(|batch| from_record_batch(&batch.unwrap()).unwrap()).collect()
}

fn all_matches(store: &EventStore, request: &QueryEventsRequest) -> Vec<Event> {
    let mut request = QueryEventsRequest { limit: Some(10_000), ..request.clone() };
    let mut events = Vec::new();
    loop {
        let page = store.query(request.clone()).unwrap();
        events.extend(page.events.iter().map(|e| (**e).clone()));
        match page.next_after {
            Some(after) => request.after = Some(after),
            None => return events,
        }
    }
}

#[test]
fn a_query_page_as_arrow_ipc_equals_the_json_page() {
    let store = store();
    let request =
        QueryEventsRequest { event_type: Some("type-1".into()), limit: Some(50), ..Default::default() };
    let (bytes, count, next_after) = store.query_arrow_ipc(request.clone()).unwrap();
    let page = store.query(request).unwrap();
    assert_eq!(count, 50);
    assert_eq!(next_after, page.next_after);
    let expected: Vec<Event> = page.events.iter().map(|e| (**e).clone()).collect();
    assert_eq!(read_ipc(bytes), expected);
}

#[test]
fn exports_hold_every_match_once_in_position_order() {
    let store = store();
    let filters = [
        QueryEventsRequest::default(),
        QueryEventsRequest { entity_id: Some("entity/3".into()), ..Default::default() },
        QueryEventsRequest { event_type: Some("type-2".into()), after: Some(1_000), ..Default::default() },
        QueryEventsRequest {
            entity_id: Some("entity/1".into()),
            event_type: Some("type-0".into()),
            limit: Some(7),
            ..Default::default()
        },
        QueryEventsRequest { entity_id: Some("nobody".into()), ..Default::default() },
    ];
    for request in filters {
        let expected = all_matches(&store, &request);
        for format in [ExportFormat::ArrowIpc, ExportFormat::Parquet] {
            let mut out = Vec::new();
            let written = store.export(request.clone(), format, &mut out).unwrap();
            assert_eq!(written, expected.len() as u64, "{format:?} {request:?}");
            let read = match format {
                ExportFormat::ArrowIpc => read_ipc(out),
                ExportFormat::Parquet => read_parquet(out),
            };
            assert_eq!(read, expected, "{format:?} {request:?}");
        }
    }
}

#[test]
fn an_export_is_of_the_log_as_it_was_when_it_started() {
    let store = Arc::new(store());
    let before = store.stats().total_events;
    // A writer that appends while exports run: each export holds a gapless prefix.
    std::thread::scope(|scope| {
        let writer = {
            let store = store.clone();
            scope.spawn(move || {
                for i in 0..2_000 {
                    store.ingest(Event::new("late".into(), "late".into(), json!(i))).unwrap();
                }
            })
        };
        for _ in 0..5 {
            let mut out = Vec::new();
            let written =
                store.export(QueryEventsRequest::default(), ExportFormat::ArrowIpc, &mut out).unwrap();
            let events = read_ipc(out);
            assert!(written >= before);
            let positions: Vec<u64> = events.iter().map(|e| e.position).collect();
            assert_eq!(positions, (1..=written).collect::<Vec<_>>());
        }
        writer.join().unwrap();
    });
}

#[test]
fn bad_filters_are_refused_before_anything_is_written() {
    let store = store();
    let mut out = Vec::new();
    let request = QueryEventsRequest { entity_id: Some(String::new()), ..Default::default() };
    let error = store.export(request, ExportFormat::Parquet, &mut out).unwrap_err();
    assert_eq!(error.code(), "ValidationError");
    assert!(out.is_empty());
}
