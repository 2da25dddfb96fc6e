//! Single-event ingestion: one thread calling `EventStore::ingest` with a small
//! payload, reported in events per second.
//!
//! Target: at least 1M events/s (the seed's "1M+ events/sec" and this issue's
//! single-threaded target). The event proposals are built outside the timing; what is
//! timed is the engine's work: validation, the sequencer, the commit step, the table,
//! the indexes and the projections.

#![allow(clippy::expect_used, reason = "a bench whose engine call fails must stop loudly")]

use std::hint::black_box;
use std::time::Duration;

use allsource_benches::{time_appends, StoreShape};
use allsource_core::EventStore;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// The shape of the ingested events: many entities and a few types, as in a real log.
const SHAPE: StoreShape = StoreShape { n_events: u64::MAX, n_entities: 10_000, n_event_types: 10 };

fn ingestion(c: &mut Criterion) {
    // Setup check: an ingested event comes back sequenced.
    let store = EventStore::new();
    let event = store.ingest(SHAPE.event(0)).expect("ingest succeeds");
    assert_eq!((event.position, event.version), (1, 1));

    let mut group = c.benchmark_group("ingestion");
    group.throughput(Throughput::Elements(1));
    group.bench_function("single_event", |b| {
        b.iter_custom(|iters| {
            time_appends(
                iters,
                1,
                |i| SHAPE.event(i),
                |store, event| {
                    black_box(store.ingest(event).expect("ingest succeeds"));
                },
            )
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = ingestion
}
criterion_main!(benches);
