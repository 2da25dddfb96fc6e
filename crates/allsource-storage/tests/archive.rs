//! Sealed chunks: what a crash leaves around a seal is cleaned up, a damaged chunk or
//! manifest refuses to start naming the file, and the WAL never ends before the chunks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use allsource_core_types::Event;
use allsource_storage::fs::Fs;
use allsource_storage::sim::{CrashKind, SimFs};
use allsource_storage::{DurableLog, Log, Preallocate, SyncMode, WalConfig};

fn config() -> WalConfig {
    WalConfig {
        sync: SyncMode::Always,
        segment_bytes_max: 600,
        chunk_events: 4,
        preallocate: Preallocate::Inline,
    }
}

fn open(fs: &SimFs) -> Result<(DurableLog, allsource_storage::RecoveryReport), allsource_core_types::Error> {
    DurableLog::open(Arc::new(fs.clone()), Path::new("/data"), config())
}

fn events() -> Vec<Arc<Event>> {
    common::fixture::fixture_groups().into_iter().flatten().collect()
}

fn plain(events: &[Arc<Event>]) -> Vec<Event> {
    events.iter().map(|e| (**e).clone()).collect()
}

/// A directory with the 8 fixture events appended and the first 4 sealed.
fn sealed_once() -> SimFs {
    let fs = SimFs::new();
    let (log, _) = open(&fs).unwrap();
    for group in common::fixture::fixture_groups() {
        log.append(&group).unwrap();
    }
    log.seal(&events()[..4]).unwrap();
    fs
}

fn chunk_paths(fs: &SimFs) -> Vec<PathBuf> {
    fs.paths().into_iter().filter(|p| p.extension().is_some_and(|e| e == "parquet")).collect()
}

#[test]
fn seals_recover_and_leftovers_are_removed() {
    let fs = sealed_once();
    // What an interrupted second seal leaves: a temporary file and an unlisted chunk.
    fs.set_file(
        Path::new("/data/chunks/00000000000000000005-00000000000000000008.parquet.tmp"),
        vec![1, 2, 3],
    );
    fs.set_file(Path::new("/data/chunks/00000000000000000005-00000000000000000008.parquet"), vec![4, 5]);
    fs.set_file(Path::new("/data/MANIFEST.tmp"), b"{".to_vec());
    let (log, report) = open(&fs).unwrap();
    assert_eq!((report.chunks, report.archived_events, report.events), (1, 4, 8));
    assert_eq!(log.recover().unwrap().into_events().unwrap(), plain(&events()));
    assert_eq!(chunk_paths(&fs).len(), 1, "{:?}", fs.paths());
    assert!(!fs.paths().iter().any(|p| p.to_string_lossy().ends_with(".tmp")), "{:?}", fs.paths());
    // The second seal now goes through.
    log.seal(&events()[4..]).unwrap();
    drop(log);
    let (log, report) = open(&fs).unwrap();
    assert_eq!((report.chunks, report.events), (2, 8));
    assert_eq!(log.recover().unwrap().into_events().unwrap(), plain(&events()));
}

#[test]
fn every_crash_point_of_a_seal_recovers_every_event() {
    for fail_at in 1..=12u64 {
        for kind in [CrashKind::Process, CrashKind::Power] {
            let fs = SimFs::new();
            let (log, _) = open(&fs).unwrap();
            for group in common::fixture::fixture_groups() {
                log.append(&group).unwrap();
            }
            fs.fail_operation(fail_at);
            let sealed = log.seal(&events()[..4]).is_ok() && log.seal(&events()[4..]).is_ok();
            drop(log);
            for seed in 0..3 {
                let image = fs.crash_image(kind, seed);
                let (log, report) =
                    open(&image).unwrap_or_else(|e| panic!("fail_at {fail_at} {kind:?}: {e}"));
                assert_eq!(
                    log.recover().unwrap().into_events().unwrap(),
                    plain(&events()),
                    "fail_at {fail_at} {kind:?} seed {seed}"
                );
                if sealed && kind == CrashKind::Process {
                    assert_eq!(report.chunks, 2);
                }
            }
        }
    }
}

#[test]
fn a_damaged_chunk_or_manifest_refuses_to_start_naming_it() {
    let chunk = "/data/chunks/00000000000000000001-00000000000000000004.parquet";
    type Damage = Box<dyn Fn(&SimFs)>;
    let cases: Vec<(&str, Damage)> = vec![
        (
            chunk,
            Box::new(|fs: &SimFs| {
                let mut bytes = fs.file(Path::new(chunk)).unwrap();
                let middle = bytes.len() / 2;
                bytes.truncate(middle);
                fs.set_file(Path::new(chunk), bytes);
            }),
        ),
        (chunk, Box::new(|fs: &SimFs| fs.remove(Path::new(chunk)).unwrap())),
        (
            "MANIFEST",
            Box::new(|fs: &SimFs| {
                fs.set_file(Path::new("/data/MANIFEST"), b"{\"format\": 1, \"chun".to_vec())
            }),
        ),
    ];
    for (name, damage) in cases {
        let fs = sealed_once();
        damage(&fs);
        let error = open(&fs).err().unwrap_or_else(|| panic!("damage to {name} was accepted"));
        assert!(error.to_string().contains(name), "{error}");
        assert!(error.to_string().contains("refusing to start"), "{error}");
    }
}

#[test]
fn sealed_wal_segments_are_removed_and_skipped() {
    let fs = SimFs::new();
    let (log, _) = open(&fs).unwrap();
    for group in common::fixture::fixture_groups() {
        log.append(&group).unwrap();
    }
    let segments_before = log.describe().segments;
    assert!(segments_before >= 2);
    log.seal(&events()[..4]).unwrap();
    log.seal(&events()[4..]).unwrap();
    let info = log.describe();
    assert_eq!((info.sealed_position, info.chunks), (8, 2));
    assert_eq!(info.segments, 1, "only the open segment is kept");
    drop(log);
    let (log, report) = open(&fs).unwrap();
    assert_eq!((report.archived_events, report.events), (8, 8));
    assert_eq!(log.recover().unwrap().into_events().unwrap(), plain(&events()));
}

#[test]
fn small_chunks_are_merged_and_every_crash_point_of_a_merge_recovers() {
    // Four small chunks of 2 events (as shutdowns leave them), merged into one.
    let build = || {
        let fs = SimFs::new();
        let (log, _) = open(&fs).unwrap();
        for group in common::fixture::fixture_groups() {
            log.append(&group).unwrap();
        }
        for pair in events().chunks(2) {
            log.seal(pair).unwrap();
        }
        drop(log);
        fs
    };
    let fs = build();
    assert_eq!(chunk_paths(&fs).len(), 4);
    let (log, _) = open(&fs).unwrap();
    assert!(log.compact().unwrap());
    assert!(!log.compact().unwrap(), "nothing left to merge");
    let info = log.describe();
    assert_eq!((info.chunks, info.sealed_position), (1, 8));
    drop(log);
    assert_eq!(
        chunk_paths(&fs),
        vec![PathBuf::from("/data/chunks/00000000000000000001-00000000000000000008.parquet")]
    );
    let (log, report) = open(&fs).unwrap();
    assert_eq!((report.chunks, report.archived_events), (1, 8));
    assert_eq!(log.recover().unwrap().into_events().unwrap(), plain(&events()));

    for fail_at in 1..=12u64 {
        for kind in [CrashKind::Process, CrashKind::Power] {
            let fs = build();
            let (log, _) = open(&fs).unwrap();
            fs.fail_operation(fail_at);
            let _ = log.compact();
            drop(log);
            for seed in 0..3 {
                let image = fs.crash_image(kind, seed);
                let (log, report) =
                    open(&image).unwrap_or_else(|e| panic!("fail_at {fail_at} {kind:?}: {e}"));
                assert_eq!(
                    log.recover().unwrap().into_events().unwrap(),
                    plain(&events()),
                    "fail_at {fail_at} {kind:?} seed {seed}"
                );
                assert!(report.chunks == 1 || report.chunks == 4, "{report:?}");
                // Whatever the crash left, exactly the listed files remain.
                assert_eq!(chunk_paths(&image).len() as u64, report.chunks, "{:?}", image.paths());
            }
        }
    }
}

#[test]
fn a_checkpoint_reads_back_as_written_and_a_failed_one_keeps_the_last() {
    use allsource_storage::archive::NewCheckpoint;
    let fs = SimFs::new();
    let (log, _) = open(&fs).unwrap();
    assert!(log.read_checkpoint().is_none());
    let new = |position: u64, states: Vec<(&str, &'static str)>| NewCheckpoint {
        position,
        event_id: uuid::Uuid::from_u128(u128::from(position)),
        timestamp_micros: -7,
        projections: states
            .into_iter()
            .map(|(name, text)| {
                let writer: allsource_core_types::JsonWriter =
                    Box::new(move |out| out.write_all(text.as_bytes()));
                (name.to_string(), writer)
            })
            .collect(),
    };
    log.write_checkpoint(new(3, vec![("a \"quoted\" name", r#"{"k":[1,2]}"#), ("b", "7")])).unwrap();
    let read = log.read_checkpoint().unwrap();
    assert_eq!((read.position, read.event_id, read.timestamp_micros), (3, uuid::Uuid::from_u128(3), -7));
    let states: Vec<(&str, &str)> = read.projections.iter().map(|(k, v)| (k.as_str(), v.get())).collect();
    assert_eq!(states, [("a \"quoted\" name", r#"{"k":[1,2]}"#), ("b", "7")]);

    // A state whose writer fails: the checkpoint on disk stays the last good one.
    let mut failing = new(5, vec![("b", "8")]);
    failing.projections.push((
        "c".to_string(),
        Box::new(|out: &mut dyn std::io::Write| {
            out.write_all(b"{\"half")?;
            Err(std::io::Error::other("the state could not be written"))
        }),
    ));
    let error = log.write_checkpoint(failing).unwrap_err();
    assert!(error.to_string().contains("could not be written"), "{error}");
    let read = log.read_checkpoint().unwrap();
    assert_eq!(read.position, 3);
    assert_eq!(read.projections["b"].get(), "7");
}

#[test]
fn every_crash_point_while_sealed_segments_are_reused_loses_nothing_acknowledged() {
    // Segments of 2400 bytes (six records of two events), sealed every 6 events: a
    // seal right after a rotation finds no spare ready, and makes the segment it
    // frees the next spare; the writer rotates into it over its old records.
    let config = WalConfig { segment_bytes_max: 2400, ..config() };
    let open = |fs: &SimFs| DurableLog::open(Arc::new(fs.clone()), Path::new("/data"), config.clone());
    let all: Vec<Arc<Event>> = (1..=48).map(|p| common::lone_event(p, 100)).collect();
    let spare = Path::new("/data/wal/next-segment.spare");
    // Appends pairs, sealing every 6 events, until the first failure; returns how many
    // events were acknowledged, and how often a seal left a reused segment as the spare.
    let run = |fs: &SimFs, log: &DurableLog| -> (usize, usize) {
        let (mut acknowledged, mut reused) = (0, 0);
        for pair in all.chunks(2) {
            if log.append(pair).is_err() {
                break;
            }
            acknowledged += 2;
            if acknowledged % 6 == 0 {
                if log.seal(&all[acknowledged - 6..acknowledged]).is_err() {
                    break;
                }
                reused += usize::from(fs.file(spare).is_some_and(|bytes| bytes.starts_with(b"ALLSWAL")));
            }
        }
        (acknowledged, reused)
    };
    let clean = SimFs::new();
    let (log, _) = open(&clean).unwrap();
    let opened = clean.operations();
    let (acknowledged, reused) = run(&clean, &log);
    assert_eq!(acknowledged, all.len());
    assert!(reused >= 3, "sealed segments were reused {reused} times");
    let operations = clean.operations() - opened;
    drop(log);
    let (log, report) = open(&clean).unwrap();
    assert_eq!(log.recover().unwrap().into_events().unwrap(), plain(&all));
    assert_eq!(report.bytes_cut, report.old_bytes_cut, "{report:?}");

    // Each operation in turn fails (and the code handles the failure), or the process
    // dies right after it.
    for fail_at in 1..=operations {
        for (kind, dies) in [(CrashKind::Process, false), (CrashKind::Power, false), (CrashKind::Power, true)]
        {
            let fs = SimFs::new();
            let (log, _) = open(&fs).unwrap();
            if dies {
                fs.crash_after(fail_at);
            } else {
                fs.fail_operation(fail_at);
            }
            let (acknowledged, _) = run(&fs, &log);
            for seed in 0..3 {
                let image = fs.crash_image(kind, seed);
                let (log, _) =
                    open(&image).unwrap_or_else(|e| panic!("fail_at {fail_at} {kind:?} seed {seed}: {e}"));
                let recovered = log.recover().unwrap().into_events().unwrap();
                // Every acknowledged event, and at most the pair whose append failed.
                assert!(
                    recovered.len() == acknowledged || recovered.len() == acknowledged + 2,
                    "fail_at {fail_at} {kind:?} seed {seed}: {} events, {acknowledged} acknowledged",
                    recovered.len()
                );
                assert_eq!(
                    recovered,
                    plain(&all[..recovered.len()]),
                    "fail_at {fail_at} {kind:?} seed {seed}"
                );
                // And the store goes on from there, through another crash.
                let next = recovered.len();
                if next < all.len() {
                    log.append(&all[next..next + 1]).unwrap();
                    drop(log);
                    let (log, _) = open(&image.crash_image(kind, seed))
                        .unwrap_or_else(|e| panic!("fail_at {fail_at} {kind:?} seed {seed}, reopened: {e}"));
                    assert_eq!(log.recover().unwrap().into_events().unwrap(), plain(&all[..next + 1]));
                }
            }
        }
    }
}
