//! Shared helpers of the benchmark suites in `benches/benches/`: event builders and
//! store builders, so that every suite measures the same shape of data.
//!
//! The criterion suites run in-process over [`EventStore::new`] (the in-memory commit
//! step), so they measure the engine itself: validation, the sequencer, the indexes and
//! the projections, with no I/O. The `durable` bench (not criterion) drives the durable
//! store on the real disk instead, and reports latency percentiles and fsyncs.
//! `cargo xtask bench` runs them all and compares the results with the targets.
//!
//! The data is deliberately plain: small payloads (`{"name":"Alice","n":i}`, about 25
//! bytes of JSON), entity ids like `entity-42`, and a handful of event types. Events of
//! one entity are spread over the log (entity `i % n_entities`), as they are in a real
//! store, so an entity query touches positions far apart rather than one run of them.

/// The benches measure the engine with the allocator the server ships with.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use allsource_core::{Event, EventStore, NewEvent, QueryEventsRequest, SyncMode, WalConfig};
use serde_json::{json, Value};

/// Events per `append_batch` call when a helper fills a store: the largest batch the
/// engine accepts, so filling is as fast as the engine allows.
pub const FILL_BATCH_EVENTS: usize = allsource_core::limits::BATCH_EVENTS_MAX;

/// The small payload of the `n`th event: `{"name":"Alice","n":n}`.
pub fn small_payload(n: u64) -> Value {
    json!({"name": "Alice", "n": n})
}

/// The order payload of the `i`th event: about 170 bytes of JSON, mostly different for
/// each `i` (the footprint and merge benches').
pub fn order_payload(i: u64) -> Value {
    json!({
        "name": format!("customer-{i}"),
        "email": format!("c{i}@example.com"),
        "amount": i as f64 * 1.25,
        "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-22", "qty": 1}],
        "note": "x".repeat(40),
    })
}

/// The id of the `index`th entity: `entity-{index}`.
pub fn entity_id(index: u64) -> String {
    format!("entity-{index}")
}

/// The name of the `index`th event type: `type-{index}`.
pub fn event_type(index: u64) -> String {
    format!("type-{index}")
}

/// A new event of type `type-{type_index}` for entity `entity-{entity_index}`, with the
/// small payload of `n`.
pub fn new_event(type_index: u64, entity_index: u64, n: u64) -> NewEvent {
    Event::new(event_type(type_index), entity_id(entity_index), small_payload(n))
}

/// The shape of a store built by [`filled_store`]: `n_events` events, the `i`th (from
/// 0) of entity `i % n_entities` and of type `i % n_event_types`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreShape {
    /// Events in the store.
    pub n_events: u64,
    /// Distinct entities; each has `n_events / n_entities` events.
    pub n_entities: u64,
    /// Distinct event types; each has `n_events / n_event_types` events.
    pub n_event_types: u64,
}

impl StoreShape {
    /// The `i`th event (from 0) of this shape.
    pub fn event(&self, i: u64) -> NewEvent {
        new_event(i % self.n_event_types, i % self.n_entities, i)
    }

    /// Events each entity has.
    pub fn events_per_entity(&self) -> u64 {
        self.n_events / self.n_entities
    }

    /// Events each event type has.
    pub fn events_per_type(&self) -> u64 {
        self.n_events / self.n_event_types
    }
}

/// A store holding the events of `shape`, appended in batches of
/// [`FILL_BATCH_EVENTS`]. Panics if an append fails: a bench cannot go on without its
/// data.
pub fn filled_store(shape: StoreShape) -> Arc<EventStore> {
    let store = Arc::new(EventStore::new());
    fill(&store, shape);
    store
}

fn fill(store: &EventStore, shape: StoreShape) {
    assert!(shape.n_entities > 0 && shape.n_event_types > 0, "empty shape: {shape:?}");
    let mut first = 0;
    while first < shape.n_events {
        let last = (first + FILL_BATCH_EVENTS as u64).min(shape.n_events);
        let batch: Vec<NewEvent> = (first..last).map(|i| shape.event(i)).collect();
        if let Err(error) = store.append_batch(batch) {
            panic!("filling the store failed at event {first}: {error}");
        }
        first = last;
    }
    assert_eq!(store.stats().total_events, shape.n_events, "the store holds every event");
}

/// A durable store (in a temporary directory, `--sync none`) filled like
/// [`filled_store`], returned once every full table chunk is sealed, so that reads
/// come from Arrow columns rather than event objects. Keep the directory alive as long
/// as the store.
pub fn sealed_store(shape: StoreShape) -> (Arc<EventStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("no temporary directory: {e}"));
    let config = WalConfig { sync: SyncMode::None, ..WalConfig::default() };
    let (store, _) = EventStore::open_dir(dir.path(), config)
        .unwrap_or_else(|e| panic!("cannot open a store in {}: {e}", dir.path().display()));
    let store = Arc::new(store);
    fill(&store, shape);
    let chunk = allsource_core::CHUNK_EVENTS_DEFAULT;
    let sealed = shape.n_events / chunk * chunk;
    let deadline = Instant::now() + Duration::from_secs(120);
    while store.stats().columnar_events < sealed {
        assert!(Instant::now() < deadline, "the store did not seal its chunks: {:?}", store.stats());
        std::thread::sleep(Duration::from_millis(20));
    }
    (store, dir)
}

/// Events a store may hold before [`time_appends`] swaps it for an empty one, so that a
/// long run does not grow one store without bound (and memory with it).
pub const STORE_EVENTS_MAX: u64 = 1 << 20;

/// Events whose inputs [`time_appends`] builds ahead of one timed stretch: enough to
/// make the clock's cost vanish, few enough to bound the memory they take.
pub const PREBUILT_EVENTS: u64 = 1 << 16;

/// The time `iters` calls of `append` take, each on a fresh input of
/// `events_per_input` events built by `make_input(i)` for `i` in `0..iters`.
///
/// Only the calls are timed: inputs are built ahead in stretches of about
/// [`PREBUILT_EVENTS`] events, and the store is swapped for an empty one, between
/// stretches, once it holds [`STORE_EVENTS_MAX`] events. This is the body of a
/// criterion `iter_custom` for the ingestion suites.
pub fn time_appends<T>(
    iters: u64,
    events_per_input: u64,
    mut make_input: impl FnMut(u64) -> T,
    mut append: impl FnMut(&EventStore, T),
) -> Duration {
    let inputs_per_stretch = (PREBUILT_EVENTS / events_per_input.max(1)).max(1);
    let mut store = EventStore::new();
    let mut elapsed = Duration::ZERO;
    let mut first = 0;
    while first < iters {
        let last = (first + inputs_per_stretch).min(iters);
        if store.stats().total_events >= STORE_EVENTS_MAX {
            store = EventStore::new();
        }
        let inputs: Vec<T> = (first..last).map(&mut make_input).collect();
        let start = Instant::now();
        for input in inputs {
            append(&store, input);
        }
        elapsed += start.elapsed();
        first = last;
    }
    elapsed
}

/// A query for one entity's events, at most `limit`.
pub fn entity_query(entity: &str, limit: usize) -> QueryEventsRequest {
    QueryEventsRequest { entity_id: Some(entity.to_string()), limit: Some(limit), ..Default::default() }
}

/// A query for the events of one type after position `after`, at most `limit`.
pub fn event_type_query(event_type: &str, after: u64, limit: usize) -> QueryEventsRequest {
    QueryEventsRequest {
        event_type: Some(event_type.to_string()),
        after: Some(after),
        limit: Some(limit),
        ..Default::default()
    }
}

/// Runs `query` and panics unless it returns exactly `expected` events: the setup check
/// that makes a broken bench fail loudly instead of timing an error path.
pub fn assert_query_len(store: &EventStore, query: QueryEventsRequest, expected: usize) {
    let description = format!("{query:?}");
    match store.query(query) {
        Ok(page) => assert_eq!(page.events.len(), expected, "{description} returned the wrong count"),
        Err(error) => panic!("{description} failed: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filled_store_has_the_shape() {
        let shape = StoreShape { n_events: 1_000, n_entities: 100, n_event_types: 4 };
        let store = filled_store(shape);
        let stats = store.stats();
        assert_eq!(stats.total_entities, 100);
        assert_eq!(stats.total_event_types, 4);
        assert_query_len(&store, entity_query(&entity_id(7), 1_000), 10);
        assert_query_len(&store, event_type_query(&event_type(3), 0, 10_000), 250);
        assert_query_len(&store, event_type_query(&event_type(3), 990, 10), 3);
    }
}
