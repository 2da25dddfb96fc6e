//! The WAL through its public API: round trips on real files, torn tails cut at every
//! byte, corruption refused with the file and offset, rotation, the lock file, and
//! injected faults on the simulated file system.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use allsource_core_types::{EntityId, Event, EventType, Position, Timestamp};
use allsource_storage::fs::{Fs, RealFs};
use allsource_storage::sim::{CrashKind, SimFs};
use allsource_storage::{Log, Preallocate, SyncMode, Wal, WalConfig};
use serde_json::json;
use uuid::Uuid;

fn event(position: Position) -> Arc<Event> {
    Arc::new(Event {
        id: Uuid::from_u128(0x1234_0000 + u128::from(position)),
        event_type: EventType::try_from(if position.is_multiple_of(2) { "even" } else { "odd" }).unwrap(),
        entity_id: EntityId::try_from(format!("entity-{position}")).unwrap(),
        payload:
            json!({"n": position, "max": u64::MAX, "min": i64::MIN, "f": 1e-300, "s": "\u{0}\"\u{1F600}"})
                .into(),
        metadata: json!({"trace": format!("t{position}")}).into(),
        timestamp: Timestamp::from_micros(1_800_000_000_000_000 + position as i64),
        version: 1,
        position,
    })
}

fn events(range: std::ops::RangeInclusive<Position>) -> Vec<Arc<Event>> {
    range.map(event).collect()
}

fn plain(events: &[Arc<Event>]) -> Vec<Event> {
    events.iter().map(|e| (**e).clone()).collect()
}

fn config(segment_bytes_max: u64) -> WalConfig {
    WalConfig {
        sync: SyncMode::Always,
        segment_bytes_max,
        preallocate: Preallocate::Inline,
        ..WalConfig::default()
    }
}

fn open_sim(fs: &SimFs, segment_bytes_max: u64) -> Result<Wal, allsource_core_types::Error> {
    Wal::open(Arc::new(fs.clone()), Path::new("/data/wal"), config(segment_bytes_max)).map(|(wal, _)| wal)
}

/// Writes groups of 1, 2, 3, ... events up to position `last` and returns the
/// sizes of the groups.
fn write_groups(wal: &Wal, last: Position) -> Vec<usize> {
    write_groups_from(wal, 1, last)
}

/// [`write_groups`] from position `first`.
fn write_groups_from(wal: &Wal, first: Position, last: Position) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut next = first;
    let mut size = 1;
    while next <= last {
        let end = (next + size - 1).min(last);
        wal.append(&events(next..=end)).unwrap();
        sizes.push((end - next + 1) as usize);
        next = end + 1;
        size += 1;
    }
    sizes
}

fn segment_paths(fs: &SimFs) -> Vec<PathBuf> {
    fs.paths().into_iter().filter(|p| p.extension().is_some_and(|e| e == "wal")).collect()
}

#[test]
fn real_files_round_trip_and_continue() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, report) = Wal::open_dir(dir.path(), WalConfig::default()).unwrap();
        assert_eq!(report.events, 0);
        wal.append(&events(1..=3)).unwrap();
        wal.append(&events(4..=4)).unwrap();
        let info = wal.describe();
        assert_eq!((info.last_position, info.syncs, info.synced_events, info.segments), (4, 2, 4, 1));
    }
    let (wal, report) = Wal::open_dir(dir.path(), WalConfig::default()).unwrap();
    assert_eq!((report.events, report.bytes_cut), (4, 0));
    assert_eq!(wal.recover().unwrap().into_events().unwrap(), plain(&events(1..=4)));
    wal.append(&events(5..=6)).unwrap();
    // A gap is refused, and refused without poisoning the log.
    assert_eq!(wal.append(&events(8..=8)).unwrap_err().code(), "InternalError");
    wal.append(&events(7..=7)).unwrap();
    drop(wal);
    let (wal, _) = Wal::open_dir(dir.path(), WalConfig::default()).unwrap();
    assert_eq!(wal.recover().unwrap().into_events().unwrap(), plain(&events(1..=7)));
}

/// Every synced record lands in the sync histograms: one latency per sync, and the
/// events each sync covered, whose sum is `synced_events`. Without syncs, nothing.
#[test]
fn syncs_are_observed_in_histograms() {
    let fs = SimFs::new();
    let wal = open_sim(&fs, 1 << 20).unwrap();
    assert_eq!(write_groups(&wal, 10), [1, 2, 3, 4]);
    let info = wal.describe();
    assert_eq!(info.events_per_sync.bounds, &allsource_storage::EVENTS_PER_SYNC_BOUNDS);
    // Buckets <= 1, <= 2, <= 4, then nothing above.
    assert_eq!(info.events_per_sync.counts[..4], [1, 1, 2, 0]);
    assert_eq!((info.events_per_sync.count(), info.events_per_sync.sum), (4, 10));
    assert_eq!(info.events_per_sync.sum, info.synced_events);
    assert_eq!(info.sync_micros.count(), info.syncs);
    assert_eq!(info.sync_micros.counts.len(), allsource_storage::SYNC_MICROS_BOUNDS.len() + 1);

    let unsynced = SimFs::new();
    let config = WalConfig { sync: SyncMode::None, ..config(1 << 20) };
    let (wal, _) = Wal::open(Arc::new(unsynced), Path::new("/data/wal"), config).unwrap();
    wal.append(&events(1..=3)).unwrap();
    let info = wal.describe();
    assert_eq!((info.events_per_sync.count(), info.sync_micros.count(), info.syncs), (0, 0, 0));
}

#[test]
fn a_second_process_cannot_open_a_locked_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (_wal, _) = Wal::open_dir(dir.path(), WalConfig::default()).unwrap();
    let error = Wal::open_dir(dir.path(), WalConfig::default()).err().expect("second open must fail");
    assert!(error.to_string().contains("in use"), "{error}");
}

#[test]
fn segments_rotate_and_recover_in_order() {
    let fs = SimFs::new();
    let wal = open_sim(&fs, 2_000).unwrap();
    write_groups(&wal, 60);
    assert!(segment_paths(&fs).len() > 3, "{:?}", segment_paths(&fs));
    drop(wal);
    let wal = open_sim(&fs, 2_000).unwrap();
    assert_eq!(wal.recover().unwrap().into_events().unwrap(), plain(&events(1..=60)));
    wal.append(&events(61..=61)).unwrap();
}

#[test]
fn torn_tail_is_cut_at_every_byte_offset() {
    let fs = SimFs::new();
    let wal = open_sim(&fs, u64::MAX).unwrap();
    let sizes = write_groups(&wal, 10); // groups 1,2,3,4 (positions 1..=10)
    drop(wal);
    let path = segment_paths(&fs).remove(0);
    let full = fs.file(&path).unwrap();
    let kept_without_last: Position = sizes[..sizes.len() - 1].iter().sum::<usize>() as Position;
    // The start of the last record: re-encode by writing the first groups only.
    let reference = SimFs::new();
    let wal = open_sim(&reference, u64::MAX).unwrap();
    write_groups(&wal, kept_without_last);
    let last_record_start = reference.file(&path).unwrap().len();
    drop(wal);
    for cut in last_record_start..full.len() {
        let image = SimFs::new();
        image.create_dir_all(Path::new("/data/wal")).unwrap();
        image.set_file(&path, full[..cut].to_vec());
        let (wal, report) =
            Wal::open(Arc::new(image.clone()), Path::new("/data/wal"), config(u64::MAX)).unwrap();
        assert_eq!(
            wal.recover().unwrap().into_events().unwrap(),
            plain(&events(1..=kept_without_last)),
            "cut at {cut}"
        );
        assert_eq!(report.bytes_cut as usize, cut - last_record_start, "cut at {cut}");
        assert_eq!(image.file(&path).unwrap().len(), last_record_start);
        // Appending continues after the cut, and survives another reopen.
        wal.append(&events(kept_without_last + 1..=kept_without_last + 1)).unwrap();
        drop(wal);
        let wal = open_sim(&image, u64::MAX).unwrap();
        assert_eq!(wal.recover().unwrap().into_events().unwrap(), plain(&events(1..=kept_without_last + 1)));
    }
}

/// A WAL of one segment holding positions 1..=6, closed: the file system, the
/// segment's path and its bytes.
fn six_events_in_one_segment() -> (SimFs, PathBuf, Vec<u8>) {
    let fs = SimFs::new();
    let wal = open_sim(&fs, u64::MAX).unwrap();
    write_groups(&wal, 6);
    drop(wal);
    let path = segment_paths(&fs).remove(0);
    let bytes = fs.file(&path).unwrap();
    (fs, path, bytes)
}

#[test]
fn garbage_after_the_last_record_is_cut() {
    let (fs, path, clean) = six_events_in_one_segment();
    for garbage in [vec![0xFF; 17], (0..=255u8).collect::<Vec<_>>(), [vec![0u8; 100], vec![1]].concat()] {
        let mut bytes = clean.clone();
        bytes.extend_from_slice(&garbage);
        fs.set_file(&path, bytes);
        let (wal, report) =
            Wal::open(Arc::new(fs.clone()), Path::new("/data/wal"), config(u64::MAX)).unwrap();
        assert_eq!(wal.recover().unwrap().into_events().unwrap(), plain(&events(1..=6)));
        assert_eq!(report.bytes_cut as usize, garbage.len());
        assert_eq!(report.zeros_cut, 0);
        assert_eq!(fs.file(&path).unwrap(), clean);
    }
    // A torn record in a segment written ahead of time: its bytes, then zeros to the
    // segment's end. All of it is cut; the zeros are counted apart.
    for (torn, zeros) in [(vec![0x7Fu8; 40], 4096usize), ([vec![9u8; 10], vec![0; 5], vec![3]].concat(), 1)] {
        fs.set_file(&path, [clean.clone(), torn.clone(), vec![0; zeros]].concat());
        let (wal, report) =
            Wal::open(Arc::new(fs.clone()), Path::new("/data/wal"), config(u64::MAX)).unwrap();
        assert_eq!(wal.recover().unwrap().into_events().unwrap(), plain(&events(1..=6)));
        assert_eq!((report.bytes_cut as usize, report.zeros_cut as usize), (torn.len() + zeros, zeros));
        assert_eq!(fs.file(&path).unwrap(), clean);
    }
}

#[test]
fn zeros_after_the_last_record_are_preallocated_space_and_are_written_over() {
    let (fs, path, clean) = six_events_in_one_segment();
    for zeros in [1, 15, 16, 4096] {
        fs.set_file(&path, [clean.clone(), vec![0u8; zeros]].concat());
        let (wal, report) =
            Wal::open(Arc::new(fs.clone()), Path::new("/data/wal"), config(u64::MAX)).unwrap();
        assert_eq!(wal.recover().unwrap().into_events().unwrap(), plain(&events(1..=6)));
        assert_eq!((report.bytes_cut, report.bytes), (0, clean.len() as u64), "{zeros} zeros");
        // The next record goes where the last one ended, over the zeros.
        wal.append(&events(7..=7)).unwrap();
        drop(wal);
        let after = fs.file(&path).unwrap();
        assert_eq!(after[..clean.len()], clean[..]);
        let wal = open_sim(&fs, u64::MAX).unwrap();
        assert_eq!(wal.recover().unwrap().into_events().unwrap(), plain(&events(1..=7)), "{zeros} zeros");
        drop(wal);
        fs.set_file(&path, clean.clone());
    }
}

#[test]
fn a_flipped_bit_before_the_tail_refuses_to_start() {
    let fs = SimFs::new();
    let wal = open_sim(&fs, u64::MAX).unwrap();
    write_groups(&wal, 10);
    drop(wal);
    let path = segment_paths(&fs).remove(0);
    let clean = fs.file(&path).unwrap();
    // Every bit of the header and of the first records (the last record is the tail).
    let reference = SimFs::new();
    let wal = open_sim(&reference, u64::MAX).unwrap();
    write_groups(&wal, 6);
    let before_last = reference.file(&path).unwrap().len();
    drop(wal);
    for byte in (0..before_last).step_by(3) {
        let mut bytes = clean.clone();
        bytes[byte] ^= 0x10;
        fs.set_file(&path, bytes);
        let error = open_sim(&fs, u64::MAX).err().unwrap_or_else(|| panic!("flip at {byte} was accepted"));
        let message = error.to_string();
        assert!(
            message.contains("corrupt WAL segment") && message.contains(&path.display().to_string()),
            "{message}"
        );
        assert!(message.contains("byte offset"), "{message}");
        // Refusing changes nothing on disk.
        assert_eq!(fs.file(&path).unwrap().len(), clean.len());
    }
}

#[test]
fn a_version_gap_or_time_going_back_refuses_to_start_naming_the_record() {
    for (name, damage) in [("version", 0), ("timestamp", 1)] {
        let fs = SimFs::new();
        let wal = open_sim(&fs, u64::MAX).unwrap();
        wal.append(&events(1..=2)).unwrap();
        let mut bad = (*event(3)).clone();
        if damage == 0 {
            bad.version = 2; // the entity's first event
        } else {
            bad.timestamp = Timestamp::from_micros(0);
        }
        wal.append(&[Arc::new(bad)]).unwrap();
        wal.append(&events(4..=4)).unwrap();
        drop(wal);
        let error = open_sim(&fs, u64::MAX).err().unwrap_or_else(|| panic!("a {name} error was accepted"));
        let message = error.to_string();
        assert!(message.contains("corrupt WAL segment") && message.contains("byte offset"), "{message}");
        assert!(message.contains(name), "{message}");
    }
}

#[test]
fn corruption_in_an_earlier_segment_refuses_to_start() {
    let fs = SimFs::new();
    let wal = open_sim(&fs, 1_500).unwrap();
    write_groups(&wal, 40);
    drop(wal);
    let segments = segment_paths(&fs);
    assert!(segments.len() >= 3);
    let victim = &segments[1];
    let mut bytes = fs.file(victim).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1; // the last byte of a non-last segment
    fs.set_file(victim, bytes);
    let error = open_sim(&fs, 1_500).err().expect("must refuse");
    assert!(error.to_string().contains(&victim.display().to_string()), "{error}");
}

#[test]
fn an_unfinished_rotation_is_removed() {
    let fs = SimFs::new();
    let wal = open_sim(&fs, u64::MAX).unwrap();
    write_groups(&wal, 3);
    drop(wal);
    for partial in [0usize, 5, 31] {
        let path = Path::new("/data/wal/00000000000000000004.wal");
        let header_like = vec![0x41; partial];
        fs.set_file(path, header_like);
        let (wal, report) =
            Wal::open(Arc::new(fs.clone()), Path::new("/data/wal"), config(u64::MAX)).unwrap();
        assert_eq!(wal.recover().unwrap().into_events().unwrap(), plain(&events(1..=3)));
        assert_eq!(report.bytes_cut as usize, partial);
        assert!(fs.file(path).is_none());
    }
}

#[test]
fn a_spare_left_by_a_crash_is_removed_and_segments_keep_their_events() {
    let fs = SimFs::new();
    let wal = open_sim(&fs, 1_000).unwrap();
    write_groups(&wal, 20);
    let spare = Path::new("/data/wal/next-segment.spare");
    assert!(fs.file(spare).is_some_and(|bytes| bytes.len() == 1_000 && bytes.iter().all(|&b| b == 0)));
    let image = fs.crash_image(CrashKind::Process, 1);
    drop(wal);
    // A clean close removes the unused spare; a crash leaves it, and opening removes it.
    assert!(fs.file(spare).is_none());
    assert!(image.file(spare).is_some());
    let wal = open_sim(&image, 1_000).unwrap();
    assert!(image.file(spare).is_none());
    assert_eq!(wal.recover().unwrap().into_events().unwrap(), plain(&events(1..=20)));
    // The first segment grew, and was closed early when the first spare was ready;
    // every later one is a spare, 1,000 bytes from its start.
    let lengths: Vec<usize> = segment_paths(&image).iter().map(|p| image.file(p).unwrap().len()).collect();
    assert!(lengths[0] < 1_000 && lengths[1..].iter().all(|&n| n >= 1_000), "{lengths:?}");
    wal.append(&events(21..=25)).unwrap();
    drop(wal);
    let wal = open_sim(&image, 1_000).unwrap();
    assert_eq!(wal.recover().unwrap().into_events().unwrap(), plain(&events(1..=25)));
}

#[test]
fn a_reopened_spare_segment_is_written_over_not_closed_early() {
    let fs = SimFs::new();
    let wal = open_sim(&fs, 4_000).unwrap();
    // Until the open segment is a spare a quarter full or more, with room left.
    let logical_end = |bytes: &[u8]| bytes.iter().rposition(|&b| b != 0).map_or(0, |at| at + 1);
    let mut next = 1;
    let segments = loop {
        wal.append(&events(next..=next)).unwrap();
        next += 1;
        let segments = segment_paths(&fs);
        let last = fs.file(segments.last().unwrap()).unwrap();
        if segments.len() >= 2 && last.len() == 4_000 && (1_000..2_500).contains(&logical_end(&last)) {
            break segments;
        }
        assert!(next < 200, "no spare a quarter full after {next} events");
    };
    drop(wal);
    let wal = open_sim(&fs, 4_000).unwrap();
    // The first append makes a spare (the segment is a quarter full); the second goes
    // into the same segment, over its zeros, rather than closing it for the spare.
    wal.append(&events(next..=next)).unwrap();
    wal.append(&events(next + 1..=next + 1)).unwrap();
    assert!(fs.file(Path::new("/data/wal/next-segment.spare")).is_some(), "{:?}", fs.paths());
    assert_eq!(segment_paths(&fs), segments);
    drop(wal);
    let wal = open_sim(&fs, 4_000).unwrap();
    assert_eq!(wal.recover().unwrap().into_events().unwrap(), plain(&events(1..=next + 1)));
}

#[test]
fn a_spare_that_cannot_be_made_is_removed_and_segments_grow_as_before() {
    let fs = SimFs::new();
    let wal = open_sim(&fs, 400).unwrap();
    // The first append: the segment's creation (create, header, sync, directory sync),
    // the record (write, sync), then the spare (remove, create, preallocate): the
    // ninth operation is the preallocation; the tenth removes the part-made spare.
    let opened = fs.operations();
    fs.fail_operation(9);
    wal.append(&events(1..=1)).unwrap();
    assert_eq!(fs.operations() - opened, 10, "the spare was not made by the first append");
    assert!(fs.file(Path::new("/data/wal/next-segment.spare")).is_none(), "{:?}", fs.paths());
    // No more attempts: later segments grow from their header.
    write_groups_from(&wal, 2, 30);
    assert!(fs.file(Path::new("/data/wal/next-segment.spare")).is_none());
    let segments = segment_paths(&fs);
    assert!(segments.len() > 2, "{segments:?}");
    let last = fs.file(segments.last().unwrap()).unwrap();
    assert!(last.len() < 400 || last.last() != Some(&0), "the last segment is not a spare");
    drop(wal);
    let wal = open_sim(&fs, 400).unwrap();
    assert_eq!(wal.recover().unwrap().into_events().unwrap(), plain(&events(1..=30)));
}

#[test]
fn injected_faults_fail_stop_and_lose_nothing_acknowledged() {
    // Fail each mutating operation in turn; whatever was acknowledged before the
    // fault survives a crash at that moment, and what follows is refused. The
    // operations include making a spare segment, and rotating into it.
    let clean = SimFs::new();
    let wal = open_sim(&clean, 600).unwrap();
    let opened = clean.operations();
    for group in 0..6u64 {
        wal.append(&events(group * 2 + 1..=group * 2 + 2)).unwrap();
    }
    assert!(clean.paths().iter().any(|p| p.ends_with("next-segment.spare")), "{:?}", clean.paths());
    let last_segment = segment_paths(&clean).pop().unwrap();
    assert!(clean.file(&last_segment).unwrap().len() >= 600, "the last segment was a spare");
    let operations = clean.operations() - opened;
    drop(wal);
    for fail_at in 1..=operations {
        for kind in [CrashKind::Process, CrashKind::Power] {
            let fs = SimFs::new();
            let wal = open_sim(&fs, 600).unwrap();
            fs.fail_operation(fail_at);
            let mut acknowledged = 0;
            let mut failed = false;
            for group in 0..6u64 {
                let range = group * 2 + 1..=group * 2 + 2;
                match wal.append(&events(range)) {
                    Ok(()) => {
                        assert!(!failed, "an append succeeded after a failure");
                        acknowledged = group * 2 + 2;
                    }
                    Err(error) => {
                        assert_eq!(error.code(), "StorageError");
                        assert_eq!(error.status(), 503);
                        failed = true;
                        break;
                    }
                }
            }
            if failed {
                // A poisoned WAL refuses everything after.
                assert!(wal.append(&events(acknowledged + 1..=acknowledged + 1)).is_err());
            }
            for seed in 0..4 {
                let image = fs.crash_image(kind, seed);
                let wal = open_sim(&image, 600)
                    .unwrap_or_else(|e| panic!("fail_at {fail_at} {kind:?} seed {seed}: {e}"));
                let recovered = wal.recover().unwrap().into_events().unwrap();
                let n = recovered.len() as Position;
                assert!(n >= acknowledged, "fail_at {fail_at} {kind:?}: lost acknowledged events");
                // Anything beyond is the whole failed group, never half of it.
                assert!(n == acknowledged || n == acknowledged + 2, "fail_at {fail_at}: {n} events");
                assert_eq!(recovered, plain(&events(1..=n)));
            }
        }
    }
}

#[test]
fn a_full_disk_turns_the_wal_read_only() {
    let fs = SimFs::new();
    let wal = open_sim(&fs, u64::MAX).unwrap();
    wal.append(&events(1..=2)).unwrap();
    fs.set_disk_full(true);
    let error = wal.append(&events(3..=4)).unwrap_err();
    assert_eq!((error.code(), error.status()), ("StorageError", 503));
    fs.set_disk_full(false);
    assert!(wal.append(&events(3..=4)).is_err(), "a poisoned WAL must stay read-only");
    drop(wal);
    let wal = open_sim(&fs.crash_image(CrashKind::Process, 1), u64::MAX).unwrap();
    assert_eq!(wal.recover().unwrap().into_events().unwrap(), plain(&events(1..=2)));
}

#[test]
fn real_fs_trait_object_works_for_the_wal_directory() {
    let dir = tempfile::tempdir().unwrap();
    let fs: Arc<dyn Fs> = Arc::new(RealFs);
    let (wal, _) = Wal::open(fs.clone(), &dir.path().join("wal"), config(u64::MAX)).unwrap();
    wal.append(&events(1..=1)).unwrap();
    assert_eq!(fs.list(&dir.path().join("wal")).unwrap(), vec!["00000000000000000001.wal".to_string()]);
}
