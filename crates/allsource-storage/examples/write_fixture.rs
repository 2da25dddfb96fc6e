//! Writes a fixture data directory of the current format:
//! `cargo run -p allsource-storage --example write_fixture -- crates/allsource-storage/tests/fixtures/v1`.
//! Run once per format version; the directory is committed and never rewritten.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/fixture.rs"]
mod fixture;

use std::path::PathBuf;

use allsource_storage::{Log, SyncMode, Wal, WalConfig};

fn main() {
    let dir: PathBuf = std::env::args().nth(1).expect("usage: write_fixture DIR").into();
    // Small segments, so the fixture has more than one.
    let config = WalConfig { sync: SyncMode::Always, segment_bytes_max: 600 };
    let (wal, report) = Wal::open_dir(&dir, config).expect("open");
    assert_eq!(report.events, 0, "the fixture directory must start empty");
    for group in fixture::fixture_groups() {
        wal.append(&group).expect("append");
    }
    println!("wrote {:?}", wal.describe());
}
