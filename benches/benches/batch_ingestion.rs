//! Batch ingestion: `EventStore::append_batch` of 100, 1,000 and 10,000 small events,
//! reported in events per second.
//!
//! A batch takes the sequencer's lock once, so its per-event cost should be below
//! single-event ingestion's; the targets are the same (at least 1M events/s).

#![allow(clippy::expect_used, reason = "a bench whose engine call fails must stop loudly")]

use std::hint::black_box;
use std::time::Duration;

use allsource_benches::{time_appends, StoreShape};
use allsource_core::{EventStore, NewEvent};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// The shape of the ingested events: many entities and a few types, as in a real log.
const SHAPE: StoreShape = StoreShape { n_events: u64::MAX, n_entities: 10_000, n_event_types: 10 };

/// The batch of `n_events` events that is the `i`th input.
fn batch(i: u64, n_events: u64) -> Vec<NewEvent> {
    (i * n_events..(i + 1) * n_events).map(|n| SHAPE.event(n)).collect()
}

fn batch_ingestion(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch_ingestion");
    for n_events in [100_u64, 1_000, 10_000] {
        // Setup check: a batch is appended whole, at consecutive positions.
        let store = EventStore::new();
        let appended = store.append_batch(batch(0, n_events)).expect("append_batch succeeds");
        assert_eq!(appended.created as u64, n_events);
        assert_eq!(appended.events.last().map(|e| e.position), Some(n_events));

        group.throughput(Throughput::Elements(n_events));
        group.bench_with_input(BenchmarkId::new("append_batch", n_events), &n_events, |b, &n_events| {
            b.iter_custom(|iters| {
                time_appends(
                    iters,
                    n_events,
                    |i| batch(i, n_events),
                    |store, events| {
                        black_box(store.append_batch(events).expect("append_batch succeeds"));
                    },
                )
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = batch_ingestion
}
criterion_main!(benches);
