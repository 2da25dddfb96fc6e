//! The engine over a data directory (WAL + sealed Parquet chunks) on the simulated
//! file system: every acknowledged event survives every crash point (appends, seals,
//! WAL segment removal), nothing unacknowledged half-appears, and a failed commit
//! turns the store read-only while reads keep working.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use allsource_core::{Event, EventStore, NewEvent, QueryEventsRequest, Uuid};
use allsource_storage::sim::{CrashKind, SimFs};
use allsource_storage::{DurableLog, Preallocate, SyncMode, WalConfig};
use proptest::prelude::*;
use serde_json::json;

/// Small segments and chunks, so that a few dozen events rotate segments, seal chunks
/// and remove covered segments.
fn config() -> WalConfig {
    WalConfig {
        sync: SyncMode::Always,
        segment_bytes_max: 2_048,
        chunk_events: 5,
        preallocate: Preallocate::Inline,
    }
}

fn open(fs: &SimFs) -> EventStore {
    let (log, _) = DurableLog::open(Arc::new(fs.clone()), Path::new("/data"), config()).unwrap();
    EventStore::open(Box::new(log)).unwrap()
}

fn all_events(store: &EventStore) -> Vec<Arc<Event>> {
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .query(QueryEventsRequest { after: Some(after), limit: Some(10_000), ..Default::default() })
            .unwrap();
        events.extend(page.events.iter().cloned());
        match page.next_after {
            Some(next) => after = next,
            None => return events,
        }
    }
}

/// One client's batch: ids chosen by the client, so it can look for them afterwards.
fn batch(writer: usize, index: usize, size: usize) -> Vec<NewEvent> {
    (0..size)
        .map(|item| {
            Event::new(
                format!("type-{}", item % 3),
                format!("entity-{}", (writer + item) % 4),
                json!({"writer": writer, "batch": index, "item": item, "big": u64::MAX}),
            )
            .with_id(Uuid::now_v7())
        })
        .collect()
}

/// Runs `writers` threads appending batches until the injected fault stops them;
/// returns (acknowledged events, every submitted batch's ids).
fn run_until_fault(store: &EventStore, writers: usize, batches: usize) -> (Vec<Arc<Event>>, Vec<Vec<Uuid>>) {
    let acknowledged = Mutex::new(Vec::new());
    let submitted = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for writer in 0..writers {
            let (acknowledged, submitted) = (&acknowledged, &submitted);
            scope.spawn(move || {
                for index in 0..batches {
                    let events = batch(writer, index, 1 + (writer + index) % 3);
                    let ids: Vec<Uuid> =
                        events.iter().map(|e| e.id.as_deref().unwrap().parse().unwrap()).collect();
                    submitted.lock().unwrap().push(ids);
                    let result = if events.len() == 1 {
                        store.append(events.into_iter().next().unwrap()).map(|a| vec![a.event])
                    } else {
                        store.append_batch(events).map(|b| b.events)
                    };
                    match result {
                        Ok(events) => acknowledged.lock().unwrap().extend(events),
                        Err(error) => {
                            assert_eq!(error.code(), "StorageError");
                            assert_eq!(error.status(), 503);
                            return;
                        }
                    }
                }
            });
        }
    });
    (acknowledged.into_inner().unwrap(), submitted.into_inner().unwrap())
}

fn check_recovered(image: &SimFs, acknowledged: &[Arc<Event>], submitted: &[Vec<Uuid>], what: &str) {
    let store = open(image);
    let events = all_events(&store);
    let positions: Vec<u64> = events.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=events.len() as u64).collect::<Vec<_>>(), "{what}: positions not gapless");
    for event in acknowledged {
        let recovered = store.get_event(event.id).unwrap_or_else(|_| panic!("{what}: lost {}", event.id));
        assert_eq!(*recovered, **event, "{what}");
    }
    let present: HashSet<Uuid> = events.iter().map(|e| e.id).collect();
    for ids in submitted {
        let found = ids.iter().filter(|id| present.contains(id)).count();
        assert!(found == 0 || found == ids.len(), "{what}: a batch half-appeared ({found} of {})", ids.len());
    }
    let submitted_ids: HashSet<Uuid> = submitted.iter().flatten().copied().collect();
    assert!(present.iter().all(|id| submitted_ids.contains(id)), "{what}: an event was invented");
    // Appends continue after the last position.
    let next = store.ingest(Event::new("after".into(), "after".into(), json!({}))).unwrap();
    assert_eq!(next.position, events.len() as u64 + 1, "{what}");
    for pair in events.windows(2) {
        assert!(pair[0].timestamp <= pair[1].timestamp);
    }
    assert!(next.timestamp >= events.last().map_or(next.timestamp, |e| e.timestamp));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// A fault at any operation, then a crash of either kind: every acknowledged event
    /// is recovered as it was acknowledged, batches are whole or absent, nothing is
    /// invented, and appends continue.
    #[test]
    fn every_acknowledged_event_survives_every_crash_point(fail_at in 1u64..80, seed in any::<u64>(), writers in 1usize..4) {
        let fs = SimFs::new();
        let store = open(&fs);
        fs.fail_operation(fail_at);
        let (acknowledged, submitted) = run_until_fault(&store, writers, 12);
        drop(store);
        for kind in [CrashKind::Process, CrashKind::Power] {
            let image = fs.crash_image(kind, seed);
            check_recovered(&image, &acknowledged, &submitted, &format!("fail_at {fail_at} {kind:?} seed {seed}"));
        }
    }
}

#[test]
fn a_failed_commit_makes_the_store_read_only_and_reads_keep_working() {
    let fs = SimFs::new();
    let store = open(&fs);
    let kept = store.ingest(Event::new("t".into(), "e".into(), json!({"a": 1}))).unwrap();
    fs.set_disk_full(true);
    let error = store.ingest(Event::new("t".into(), "e".into(), json!({"a": 2}))).unwrap_err();
    assert_eq!((error.code(), error.status()), ("StorageError", 503));
    fs.set_disk_full(false);
    let error = store.ingest(Event::new("t".into(), "e".into(), json!({"a": 3}))).unwrap_err();
    assert_eq!(error.status(), 503, "the store must stay read-only until reopened");
    assert!(store.stats().read_only);
    // What needs no write is still answered: a retry of a stored event, a conflict, a
    // duplicate id; a batch with one new event is refused whole.
    let retry = store.append(Event::new("t".into(), "e".into(), json!({"a": 1})).with_id(kept.id)).unwrap();
    assert!(!retry.created);
    assert_eq!(retry.event, kept);
    let stale = Event::new("t".into(), "e".into(), json!({"a": 4})).with_expected_version(0);
    assert_eq!(store.append(stale).unwrap_err().code(), "ConcurrencyConflict");
    let changed = Event::new("t".into(), "e".into(), json!({"a": 5})).with_id(kept.id);
    assert_eq!(store.append(changed).unwrap_err().code(), "DuplicateEventId");
    let batch = vec![
        Event::new("t".into(), "e".into(), json!({"a": 1})).with_id(kept.id),
        Event::new("t".into(), "e".into(), json!({"a": 6})),
    ];
    assert_eq!(store.append_batch(batch).unwrap_err().code(), "StorageError");
    assert_eq!(store.get_event(kept.id).unwrap(), kept);
    assert_eq!(store.snapshot("e").unwrap().state, json!({"a": 1}));
    assert_eq!(store.stats().total_events, 1);
    drop(store);
    let store = open(&fs.crash_image(CrashKind::Process, 7));
    assert_eq!(store.get_event(kept.id).unwrap(), kept);
    assert_eq!(store.stats().total_events, 1);
}

#[test]
fn restart_rebuilds_indexes_projections_and_continues() {
    let fs = SimFs::new();
    let (first, state) = {
        let store = open(&fs);
        let first =
            store.ingest(Event::new("created".into(), "order/7".into(), json!({"s": "new"}))).unwrap();
        store
            .append_batch(vec![
                Event::new("paid".into(), "order/7".into(), json!({"s": "paid", "n": 1})),
                Event::new("created".into(), "order/8".into(), json!({"s": "new"})),
            ])
            .unwrap();
        (first, store.reconstruct_state("order/7", None).unwrap())
    };
    let store = open(&fs);
    assert_eq!(store.get_event(first.id).unwrap(), first);
    assert_eq!(store.reconstruct_state("order/7", None).unwrap(), state);
    assert_eq!(store.snapshot("order/7").unwrap(), state);
    let stats = store.stats();
    assert_eq!(
        (stats.total_events, stats.total_entities, stats.total_event_types, stats.total_ingested),
        (3, 2, 2, 0)
    );
    let next =
        store.append(Event::new("shipped".into(), "order/7".into(), json!({})).with_expected_version(2));
    let next = next.unwrap().event;
    assert_eq!((next.position, next.version), (4, 3));
    // An idempotent retry of a recovered event appends nothing.
    let retry = store
        .append(Event::new("created".into(), "order/7".into(), json!({"s": "new"})).with_id(first.id))
        .unwrap();
    assert!(!retry.created);
}

#[test]
fn group_commit_shares_syncs_between_concurrent_writers() {
    let fs = SimFs::new();
    let store = open(&fs);
    std::thread::scope(|scope| {
        for writer in 0..16 {
            let store = &store;
            scope.spawn(move || {
                for i in 0..50 {
                    store.ingest(Event::new("t".into(), format!("w{writer}"), json!({"i": i}))).unwrap();
                }
            });
        }
    });
    let info = store.stats().log;
    assert_eq!(info.synced_events, 800);
    assert!(info.syncs <= 800);
    assert_eq!(all_events(&store).len(), 800);
}

#[test]
fn full_chunks_are_sealed_into_parquet_and_the_wal_shrinks() {
    let fs = SimFs::new();
    let chunk_files = |fs: &SimFs| -> Vec<String> {
        fs.paths()
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect()
    };
    let before = {
        let store = open(&fs);
        for i in 0..23 {
            store.ingest(Event::new(format!("t{}", i % 2), format!("e{}", i % 3), json!({"i": i}))).unwrap();
        }
        let before = (all_events(&store), store.reconstruct_state("e1", None).unwrap());
        drop(store); // seals the full chunks still due, then the rest as a partial chunk
        before
    };
    let paths = fs.paths();
    assert_eq!(chunk_files(&fs).len(), 5, "{paths:?}"); // 4 x 5 events, then 3
    assert!(paths.iter().any(|p| p.ends_with("MANIFEST")));
    assert!(!paths.iter().any(|p| p.to_string_lossy().ends_with(".tmp")), "{paths:?}");
    let wal_segments = paths.iter().filter(|p| p.extension().is_some_and(|e| e == "wal")).count();
    assert!(wal_segments <= 2, "covered WAL segments are removed: {paths:?}");

    {
        let store = open(&fs);
        let info = store.stats().log;
        assert_eq!((info.kind, info.sealed_position, info.chunks), ("wal+parquet", 23, 5));
        assert_eq!(all_events(&store), before.0);
        assert_eq!(store.reconstruct_state("e1", None).unwrap(), before.1);
        assert_eq!(store.snapshot("e1").unwrap(), before.1);
        let next = store.ingest(Event::new("t".into(), "e1".into(), json!({}))).unwrap();
        assert_eq!(next.position, 24);
        // The shutdown seals [24, 24]: two small chunks side by side.
    }
    assert_eq!(chunk_files(&fs).len(), 6);
    // The next start merges them into one file; the old ones are removed.
    let store = open(&fs);
    drop(store);
    let files = chunk_files(&fs);
    assert_eq!(files.len(), 5, "{files:?}");
    assert!(files.contains(&"00000000000000000021-00000000000000000024.parquet".to_string()), "{files:?}");
    let store = open(&fs);
    assert_eq!(store.stats().log.chunks, 5);
    assert_eq!(all_events(&store).len(), 24);
    assert_eq!(&all_events(&store)[..23], &before.0[..]);
}

#[test]
fn projection_checkpoints_are_restored_when_they_match_the_log_and_ignored_otherwise() {
    let fs = SimFs::new();
    let expected = {
        let store = open(&fs);
        for i in 0..12 {
            store
                .ingest(Event::new(
                    "t".into(),
                    format!("e{}", i % 2),
                    json!({"i": i, "tag": format!("v{i}")}),
                ))
                .unwrap();
        }
        let expected =
            (store.snapshot("e0").unwrap(), store.projection("event_counters").unwrap().get_state("t"));
        drop(store); // seals 10 events, then checkpoints the projections at the committed 12
        expected
    };
    let checkpoint_path = Path::new("/data/CHECKPOINT");
    let checkpoint: serde_json::Value = serde_json::from_slice(&fs.file(checkpoint_path).unwrap()).unwrap();
    assert_eq!(checkpoint["position"], 12);
    assert_eq!(checkpoint["projections"]["event_counters"]["t"], 12);

    // A matching checkpoint is restored: a state planted in it shows, so it was used.
    let mut planted = checkpoint.clone();
    planted["projections"]["event_counters"]["t"] = json!(1000);
    fs.set_file(checkpoint_path, serde_json::to_vec(&planted).unwrap());
    {
        let store = open(&fs);
        let counters = store.projection("event_counters").unwrap();
        assert_eq!(counters.get_state("t"), Some(json!({"count": 1000})), "restored, not replayed");
        assert_eq!(store.snapshot("e0").unwrap(), expected.0);
    }

    // A checkpoint that does not match the log (another event at its position), or that
    // does not read, is ignored: the projections are rebuilt by replay.
    let mut foreign = checkpoint.clone();
    foreign["event_id"] = json!(Uuid::nil());
    for bad in [serde_json::to_vec(&foreign).unwrap(), b"{not json".to_vec()] {
        fs.set_file(checkpoint_path, bad);
        let store = open(&fs);
        assert_eq!(store.projection("event_counters").unwrap().get_state("t"), expected.1);
        assert_eq!(store.snapshot("e0").unwrap(), expected.0);
        assert_eq!(store.snapshot("e0").unwrap(), store.reconstruct_state("e0", None).unwrap());
    }
}

/// Checkpoints taken while writers keep appending (the entity snapshots are read with
/// appends flowing, the counters between two groups), then a crash in the middle of the
/// run, with no clean stop: the store restored from the last checkpoint and the events
/// after it has every entity's snapshot equal to a replay of its events, and counts
/// each type's events exactly once.
#[test]
fn checkpoints_taken_during_appends_restore_exactly_after_a_crash() {
    let fs = SimFs::new();
    let store = Arc::new(open(&fs));
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..100 {
                    // Payloads that add, change and remove keys, so that applying an
                    // event twice or missing one would show in the state.
                    let payload = match i % 3 {
                        0 => json!({"n": i, format!("w{writer}"): i, "gone": null}),
                        1 => json!({"n": {"nested": i}, "gone": writer}),
                        _ => json!({format!("w{writer}"): null, "list": [i, writer]}),
                    };
                    let entity = format!("e{}", (writer + i) % 5);
                    store.ingest(Event::new(format!("t{}", i % 2), entity, payload)).unwrap();
                }
            })
        })
        .collect();
    // A crash of the process while the writers still write, once a checkpoint exists:
    // no shutdown seal, no shutdown checkpoint.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let image = loop {
        let image = fs.crash_image(CrashKind::Process, 11);
        if image.file(Path::new("/data/CHECKPOINT")).is_some() && store.committed_position() >= 100 {
            break image;
        }
        assert!(std::time::Instant::now() < deadline, "no checkpoint was written");
        std::thread::yield_now();
    };
    for writer in writers {
        writer.join().unwrap();
    }
    let checkpoint: serde_json::Value =
        serde_json::from_slice(&image.file(Path::new("/data/CHECKPOINT")).unwrap()).unwrap();
    // A planted count shows that the checkpoint was restored rather than ignored.
    let mut planted = checkpoint.clone();
    let counted_t0 = checkpoint["projections"]["event_counters"]["t0"].as_u64().unwrap_or(0);
    planted["projections"]["event_counters"]["t0"] = json!(counted_t0 + 1000);
    image.set_file(Path::new("/data/CHECKPOINT"), serde_json::to_vec(&planted).unwrap());

    let restarted = open(&image);
    let events = all_events(&restarted);
    assert!(events.len() as u64 >= checkpoint["position"].as_u64().unwrap());
    for e in 0..5 {
        let entity = format!("e{e}");
        let restored = restarted.snapshot(&entity).unwrap();
        assert_eq!(
            restored,
            restarted.reconstruct_state(&entity, None).unwrap(),
            "{entity}: differs from replay"
        );
    }
    let counters = restarted.projection("event_counters").unwrap();
    for (event_type, planted) in [("t0", 1000), ("t1", 0)] {
        let count = events.iter().filter(|e| e.event_type.as_str() == event_type).count() + planted;
        assert_eq!(
            counters.get_state(event_type),
            Some(json!({"count": count})),
            "{event_type}: each event once"
        );
    }
}
