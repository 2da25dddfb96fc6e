//! Formats are forever: the committed fixture data directories open, and recover
//! exactly the events that were written into them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use allsource_core_types::Event;
use allsource_storage::{DurableLog, Log, SyncMode, Wal, WalConfig};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn fixture(version: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(version)
}

/// The event after the fixture's eight.
fn ninth() -> Event {
    let mut next = (*common::fixture::fixture_groups()[0][0]).clone();
    next.position = 9;
    next.version = 1;
    next.entity_id = allsource_core_types::EntityId::try_from("entity-new").unwrap();
    next.timestamp = allsource_core_types::Timestamp::from_micros(1_800_000_000_000_000);
    next
}

#[test]
fn wal_fixtures_of_every_format_open_recover_and_go_on() {
    for version in ["v1", "v2"] {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&fixture(version), dir.path());
        let (wal, report) = Wal::open_dir(dir.path(), WalConfig::default()).unwrap();
        let mut expected: Vec<Event> =
            common::fixture::fixture_groups().into_iter().flatten().map(|e| (*e).clone()).collect();
        assert_eq!(report.bytes_cut, 0, "{version}");
        assert_eq!(report.segments, 2, "{version}");
        assert_eq!(wal.recover().unwrap().into_events().unwrap(), expected, "{version}");
        // The open segment keeps its format: appended to, reopened, read back whole.
        wal.append(&[std::sync::Arc::new(ninth())]).unwrap();
        drop(wal);
        expected.push(ninth());
        let (wal, report) = Wal::open_dir(dir.path(), WalConfig::default()).unwrap();
        assert_eq!((report.bytes_cut, report.segments), (0, 2), "{version}");
        assert_eq!(wal.recover().unwrap().into_events().unwrap(), expected, "{version}");
    }
}

#[test]
fn sealed_chunks_fixture_opens_and_recovers_every_event() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture("v1-chunks"), dir.path());
    let (log, report) = DurableLog::open_dir(dir.path(), WalConfig::default()).unwrap();
    let expected: Vec<Event> =
        common::fixture::fixture_groups().into_iter().flatten().map(|e| (*e).clone()).collect();
    assert_eq!((report.chunks, report.archived_events, report.events), (2, 8, 8));
    assert_eq!(log.recover().unwrap().into_events().unwrap(), expected);
    assert_eq!(log.sealed_position(), 8);
    // Appending continues after the sealed chunks and the WAL.
    log.append(&[std::sync::Arc::new(ninth())]).unwrap();
}

#[test]
fn the_writer_still_writes_format_v2_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let config = WalConfig { sync: SyncMode::None, segment_bytes_max: 600, ..WalConfig::default() };
    let (wal, _) = Wal::open_dir(dir.path(), config).unwrap();
    for group in common::fixture::fixture_groups() {
        wal.append(&group).unwrap();
    }
    drop(wal);
    for name in ["00000000000000000001.wal", "00000000000000000005.wal"] {
        let written = std::fs::read(dir.path().join("wal").join(name)).unwrap();
        let committed = std::fs::read(fixture("v2").join("wal").join(name)).unwrap();
        assert!(
            written == committed,
            "{name} differs from the v2 fixture: a format change needs a new version"
        );
    }
}
