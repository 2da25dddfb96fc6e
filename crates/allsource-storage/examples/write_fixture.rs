//! Writes the fixture data directories of the current formats:
//! `cargo run -p allsource-storage --example write_fixture -- crates/allsource-storage/tests/fixtures`.
//! Run once per format version; the directories are committed and never rewritten.
//! `v2`: a WAL of two segments (`v1`, the same in WAL format 1, was written by that
//! format's writer). `v1-chunks`: the same events, all sealed into two Parquet chunks
//! listed by a manifest, beside a WAL of format 1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/fixture.rs"]
mod fixture;

use std::path::PathBuf;

use allsource_storage::{DurableLog, Log, Preallocate, SyncMode, Wal, WalConfig};

fn main() {
    let root: PathBuf = std::env::args().nth(1).expect("usage: write_fixture DIR").into();
    // Small segments, so the fixtures have more than one.
    let config = WalConfig {
        sync: SyncMode::Always,
        segment_bytes_max: 600,
        chunk_events: 4,
        preallocate: Preallocate::Off,
    };

    let dir = root.join("v2");
    if !dir.exists() {
        let (wal, report) = Wal::open_dir(&dir, config.clone()).expect("open");
        assert_eq!(report.events, 0, "the fixture directory must start empty");
        for group in fixture::fixture_groups() {
            wal.append(&group).expect("append");
        }
        println!("wrote {}: {:?}", dir.display(), wal.describe());
    }

    let dir = root.join("v1-chunks");
    if !dir.exists() {
        let (log, report) = DurableLog::open_dir(&dir, config).expect("open");
        assert_eq!(report.events, 0, "the fixture directory must start empty");
        let events: Vec<_> = fixture::fixture_groups().into_iter().flatten().collect();
        for group in fixture::fixture_groups() {
            log.append(&group).expect("append");
        }
        for chunk in events.chunks(4) {
            log.seal(chunk).expect("seal");
        }
        println!("wrote {}: {:?}", dir.display(), log.describe());
    }
}
