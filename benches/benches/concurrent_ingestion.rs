//! Concurrent ingestion: 100 threads appending single events at once, each to its own
//! entities, reported in events per second over the wall time of the whole round.
//!
//! Target: at least 500K events/s (the seed's and this issue's). Every append goes
//! through the one sequencer, so this measures how well its critical section holds up
//! under contention (on a 2-core machine, mostly the cost of handing the lock over).

#![allow(clippy::expect_used, reason = "a bench whose engine call fails must stop loudly")]

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use allsource_benches::new_event;
use allsource_core::{EventStore, NewEvent};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};

/// Writer threads.
const N_THREADS: u64 = 100;
/// Events each thread appends in one round.
const EVENTS_PER_THREAD: u64 = 1_000;
/// Entities each thread writes to; no two threads share one.
const ENTITIES_PER_THREAD: u64 = 10;
/// Distinct event types.
const N_EVENT_TYPES: u64 = 10;

/// The events thread `thread` appends in one round.
fn thread_events(thread: u64) -> Vec<NewEvent> {
    (0..EVENTS_PER_THREAD)
        .map(|j| {
            let n = thread * EVENTS_PER_THREAD + j;
            new_event(n % N_EVENT_TYPES, thread * ENTITIES_PER_THREAD + j % ENTITIES_PER_THREAD, n)
        })
        .collect()
}

/// One round on a fresh store: the wall time from the moment all threads are ready
/// until the last one has appended its last event. Spawning the threads, building
/// their events and dropping the store are not timed.
fn round() -> (Duration, Arc<EventStore>) {
    let store = Arc::new(EventStore::new());
    let ready = Arc::new(Barrier::new(N_THREADS as usize + 1));
    let writers: Vec<_> = (0..N_THREADS)
        .map(|thread| {
            let (store, ready) = (store.clone(), ready.clone());
            let events = thread_events(thread);
            thread::spawn(move || {
                ready.wait();
                for event in events {
                    black_box(store.append(event).expect("append succeeds"));
                }
            })
        })
        .collect();
    ready.wait();
    let start = Instant::now();
    for writer in writers {
        writer.join().expect("a writer thread panicked");
    }
    (start.elapsed(), store)
}

fn concurrent_ingestion(c: &mut Criterion) {
    // Setup check: every event of every thread is stored, each entity's versions gapless.
    let (_, store) = round();
    let stats = store.stats();
    assert_eq!(stats.total_events, N_THREADS * EVENTS_PER_THREAD);
    assert_eq!(stats.total_entities, N_THREADS * ENTITIES_PER_THREAD);
    let state = store.snapshot("entity-0").expect("entity-0 has events");
    assert_eq!(state.version, EVENTS_PER_THREAD / ENTITIES_PER_THREAD);
    drop(store);

    let mut group = c.benchmark_group("concurrent_ingestion");
    // A round takes tens of milliseconds: one round per sample is plenty.
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(N_THREADS * EVENTS_PER_THREAD));
    group.bench_function(format!("{N_THREADS}_threads"), |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                let (took, store) = round();
                elapsed += took;
                drop(store);
            }
            elapsed
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = concurrent_ingestion
}
criterion_main!(benches);
