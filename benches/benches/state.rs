//! An entity's state: rebuilt by replaying its 100 events, against read from the
//! snapshot projection.
//!
//! The store holds 100,000 events: the `i`th of entity `i % 1,000` (100 events each,
//! spread over the log) with the small payload `{"name":"Alice","n":i}`. Targets: a
//! replay under 1 ms (the seed's) and under 100 µs (this issue's); a snapshot read
//! under 5 µs (this issue's). `state_sealed` runs the same over a durable store whose
//! full chunks (65,536 of the 100,000 events) are sealed into Arrow columns.
//!
//! `merge` measures what the snapshot projection does per committed event: merging one
//! payload of about 170 bytes (the footprint bench's) into one of 100,000 entity states, the
//! next state each time, so that states are as cold in cache as under load: text into
//! text (`text`, what the projection does: each state is compact JSON text in a block
//! of its own, replaced by the merged text), or parsing the payload into a `Value` and
//! merging that into a state kept as a `Value` (`value`, what it did before); and the
//! projection's whole step for one event, its map lookup and the state's block included
//! (`process`).

#![allow(clippy::expect_used, reason = "a bench whose engine call fails must stop loudly")]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use allsource_benches::{entity_id, filled_store, new_event, order_payload, sealed_store, StoreShape};
use allsource_core::projection::{apply_merge_patch, merge_patch_compact, EntitySnapshots, Projection};
use allsource_core::{EntityId, Event, EventStore, EventType, Timestamp, Uuid};
use criterion::{criterion_group, criterion_main, Criterion};

const SHAPE: StoreShape = StoreShape { n_events: 100_000, n_entities: 1_000, n_event_types: 10 };

fn state(c: &mut Criterion) {
    let store = filled_store(SHAPE);
    run(c, "state", &store);
    // The same events in sealed chunks (Arrow columns) instead of event objects.
    let (sealed, _dir) = sealed_store(SHAPE);
    run(c, "state_sealed", &sealed);
}

fn run(c: &mut Criterion, name: &str, store: &EventStore) {
    let events_per_entity = SHAPE.events_per_entity();
    let entity = entity_id(421);
    // Setup check: the state and the snapshot agree, at the entity's last version.
    let replayed = store.reconstruct_state(&entity, None).expect("the entity has events");
    let snapshot = store.snapshot(&entity).expect("the entity has a snapshot");
    assert_eq!(replayed, snapshot);
    assert_eq!(replayed.version, events_per_entity);

    let mut group = c.benchmark_group(name);
    group.bench_function(format!("snapshot/{events_per_entity}_events"), |b| {
        b.iter(|| black_box(store.snapshot(&entity).expect("snapshot succeeds")))
    });
    // The state at the entity's last version is the snapshot's, without a replay. One
    // more event makes the state as of the 100th a replay of all 100.
    let as_of = replayed.last_event_at;
    let extra = store.append(new_event(0, 421, SHAPE.n_events)).expect("the append succeeds").event;
    assert!(extra.timestamp > as_of, "the extra event is later than the 100th");
    let as_of_100th = store.reconstruct_state(&entity, Some(as_of)).expect("the entity has events");
    assert_eq!((as_of_100th.state, as_of_100th.version), (replayed.state.clone(), events_per_entity));
    group.bench_function(format!("replay/{events_per_entity}_events"), |b| {
        b.iter(|| black_box(store.reconstruct_state(&entity, Some(as_of)).expect("replay succeeds")))
    });
    group.finish();
}

fn merge(c: &mut Criterion) {
    const STATES: usize = 100_000;
    let payloads: Vec<String> = (0..1_024).map(|i| order_payload(i).to_string()).collect();
    let mut group = c.benchmark_group("merge");
    // Setup check: a merged state is the last payload merged into it.
    let check = |probe: &serde_json::Value| {
        assert!(probe["items"][1]["sku"] == "B-22" && probe["note"].as_str().is_some_and(|n| n.len() == 40));
    };
    const STEP: usize = 7_919; // a prime: every state in turn, far apart in memory

    let mut states: Vec<Arc<str>> =
        (0..STATES as u64).map(|i| Arc::from(order_payload(i).to_string())).collect();
    let mut merged = String::new();
    let mut next = 0usize;
    group.bench_function("text/100K_states", |b| {
        b.iter(|| {
            let state = &mut states[next % STATES];
            merged.clear();
            merge_patch_compact(state, &payloads[next % payloads.len()], &mut merged)
                .expect("the payload is JSON");
            *state = Arc::from(merged.as_str());
            next += STEP;
        })
    });
    check(&serde_json::from_str(&states[(next - STEP) % STATES]).expect("a state is JSON"));

    let mut states: Vec<serde_json::Value> = (0..STATES as u64).map(order_payload).collect();
    let mut next = 0usize;
    group.bench_function("value/100K_states", |b| {
        b.iter(|| {
            let patch: serde_json::Value =
                serde_json::from_str(&payloads[next % payloads.len()]).expect("the payload is JSON");
            apply_merge_patch(&mut states[next % STATES], &patch);
            next += STEP;
        })
    });
    check(&states[(next - STEP) % STATES]);

    // The whole step, map and block included: `EntitySnapshots::process` of the next
    // entity's next event. Each entity's events repeat its first payload, so its state
    // keeps its text and its block.
    let snapshots = EntitySnapshots::default();
    let event_type = EventType::try_from("order.updated").expect("a valid type");
    let mut events: Vec<Event> = (0..STATES as u64)
        .map(|i| Event {
            id: Uuid::from_u128(u128::from(i) + 1),
            event_type: event_type.clone(),
            entity_id: EntityId::try_from(entity_id(i)).expect("a valid id"),
            payload: order_payload(i).into(),
            metadata: serde_json::json!({}).into(),
            timestamp: Timestamp::from_micros(0),
            version: 0,
            position: i + 1,
        })
        .collect();
    let mut next = 0usize;
    group.bench_function("process/100K_entities", |b| {
        b.iter(|| {
            let event = &mut events[next % STATES];
            event.version += 1;
            snapshots.process(event).expect("the payload is JSON");
            next += STEP;
        })
    });
    assert_eq!(snapshots.len(), STATES, "every entity has a snapshot");
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = state, merge
}
criterion_main!(benches);
