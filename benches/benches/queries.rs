//! Queries over a store of 1M events: one entity's events, one type's events, and a
//! type's events after a cursor deep in its list.
//!
//! The store is built once, outside the timing: 1,000,000 events, the `i`th of entity
//! `i % 100,000` (10 events each, spread over the whole log) and of type `i % 10`
//! (100,000 events each). Targets: an entity query under 100 µs (the seed's) and under
//! 10 µs (this issue's). The `after` group shows that paging costs the same wherever
//! the cursor is: the cursor is a binary search, not a scan.
//!
//! Each query runs twice: over a store whose events are event objects (`queries`,
//! the in-memory store), and over a durable store whose full chunks are sealed into
//! Arrow columns (`queries_sealed`, 983,040 of the 1M events), where issue 4 asks for
//! no more than a 2x slowdown. `entity_views` is the same query without making the
//! events whole: what the server renders JSON from.

#![allow(clippy::expect_used, reason = "a bench whose engine call fails must stop loudly")]

use std::hint::black_box;
use std::time::Duration;

use allsource_benches::{assert_query_len, entity_id, entity_query, event_type, event_type_query};
use allsource_benches::{filled_store, sealed_store, StoreShape};
use allsource_core::EventStore;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

const SHAPE: StoreShape = StoreShape { n_events: 1_000_000, n_entities: 100_000, n_event_types: 10 };

/// How many different entities the entity query cycles through, so that it does not
/// time one entity's lists sitting hot in the cache.
const N_QUERIED_ENTITIES: u64 = 4_096;

fn queries(c: &mut Criterion) {
    let store = filled_store(SHAPE);
    run(c, "queries", &store);
    // The same store's events in sealed chunks (Arrow columns) instead of event objects.
    let (sealed, _dir) = sealed_store(SHAPE);
    run(c, "queries_sealed", &sealed);
}

fn run(c: &mut Criterion, name: &str, store: &EventStore) {
    let events_per_entity = SHAPE.events_per_entity() as usize;
    // Entities spread over the id space, each checked to have its 10 events.
    let entities: Vec<String> =
        (0..N_QUERIED_ENTITIES).map(|k| entity_id(k * (SHAPE.n_entities / N_QUERIED_ENTITIES))).collect();
    for entity in &entities {
        assert_query_len(store, entity_query(entity, 1_000), events_per_entity);
    }
    let queried_type = event_type(3);
    for limit in [10, 1_000] {
        assert_query_len(store, event_type_query(&queried_type, 0, limit), limit);
    }

    let mut group = c.benchmark_group(name);
    group.bench_function(format!("entity/{events_per_entity}_events"), |b| {
        let mut next = 0;
        b.iter(|| {
            let entity = &entities[next % entities.len()];
            next += 1;
            black_box(store.query(entity_query(entity, 1_000)).expect("query succeeds"))
        })
    });
    // What the server renders its JSON from: the events' views.
    group.bench_function(format!("entity_views/{events_per_entity}_events"), |b| {
        let mut next = 0;
        b.iter(|| {
            let entity = &entities[next % entities.len()];
            next += 1;
            black_box(store.query_views(entity_query(entity, 1_000)).expect("query succeeds"))
        })
    });
    for limit in [10, 1_000] {
        group.bench_with_input(BenchmarkId::new("event_type/limit", limit), &limit, |b, &limit| {
            b.iter(|| {
                black_box(store.query(event_type_query(&queried_type, 0, limit)).expect("query succeeds"))
            })
        });
    }
    // The next 10 events of a type after a cursor at the start, the middle and near
    // the end of the log.
    for after in [0, SHAPE.n_events / 2, SHAPE.n_events - 1_000] {
        assert_query_len(store, event_type_query(&queried_type, after, 10), 10);
        group.bench_with_input(BenchmarkId::new("event_type/after", after), &after, |b, &after| {
            b.iter(|| {
                black_box(store.query(event_type_query(&queried_type, after, 10)).expect("query succeeds"))
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = queries
}
criterion_main!(benches);
