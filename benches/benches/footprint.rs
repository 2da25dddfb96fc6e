//! The storage footprint: resident memory per event against the events' raw JSON size,
//! restart time, and the Arrow export rate, over a durable store on the real disk
//! (a data directory under `target/footprint-bench/`, deleted afterwards).
//!
//! Usage: `cargo bench -p allsource-benches --bench footprint -- [--events N] [--dir DIR]`
//! (default 1,000,000; the columnar issue's target is stated for 10,000,000, which
//! needs about 4 GB of memory). `--dir DIR` keeps the data directory, and prints the
//! arguments with which `-- --bench --reopen DIR RAW_BYTES EVENTS` measures the
//! restart alone. Events have ~240-byte JSON
//! payloads over 100,000 entities and 10 types, appended in batches of 1,000 with
//! `--sync none` (the disk's sync rate is the durable bench's subject, not this one's).
//! Resident memory is read from `/proc/self/status` (Linux), so the process measures
//! itself: run it alone. Run outside `cargo bench` (no `--bench` argument), it does
//! nothing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a bench whose engine call fails must stop loudly"
)]

use std::path::PathBuf;
use std::time::Instant;

use allsource_benches::order_payload;
use allsource_core::{Event, EventStore, ExportFormat, NewEvent, QueryEventsRequest, SyncMode, WalConfig};

/// Resident memory of this process, in bytes (0 where `/proc` does not say).
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    kib * 1024
}

fn event(i: u64) -> NewEvent {
    Event::new(format!("order.type{}", i % 10), format!("order-{}", i % 100_000), order_payload(i))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("footprint: not run outside `cargo bench` (pass --bench to run it)");
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--reopen") {
        let arg = |k: usize| args.get(i + k).expect("--reopen DIR RAW_BYTES EVENTS");
        reopen(
            std::path::Path::new(arg(1)),
            arg(2).parse().expect("raw bytes"),
            arg(3).parse().expect("events"),
        );
        return;
    }
    let n: u64 = args
        .iter()
        .position(|a| a == "--events")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("--events takes a number"))
        .unwrap_or(1_000_000);
    // `--dir DIR` keeps the data directory for later runs of `--reopen DIR RAW_BYTES
    // EVENTS` (the restart alone); by default a fresh one is made and removed.
    let kept = args.iter().position(|a| a == "--dir").and_then(|i| args.get(i + 1)).map(PathBuf::from);
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("footprint-bench");
    let dir = kept.clone().unwrap_or_else(|| target.join(format!("run-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir);
    let config = WalConfig { sync: SyncMode::None, ..WalConfig::default() };

    let raw_bytes;
    {
        let (store, _) = EventStore::open_dir(&dir, config.clone()).expect("open the store");
        let before = resident_bytes();
        let started = Instant::now();
        let mut raw = 0u64;
        let mut batch = Vec::with_capacity(1_000);
        for i in 0..n {
            let e = event(i);
            raw += serde_json::to_string(&e).map_or(0, |text| text.len() as u64);
            batch.push(e);
            if batch.len() == 1_000 {
                store.append_batch(std::mem::take(&mut batch)).expect("append");
            }
        }
        if !batch.is_empty() {
            store.append_batch(batch).expect("append");
        }
        let seconds = started.elapsed().as_secs_f64();
        let resident = resident_bytes().saturating_sub(before);
        raw_bytes = raw;
        println!(
            "ingest:  {n} events in {seconds:.2} s ({:.0} events/s, building them included); raw JSON {:.0} B/event; resident +{} MB = {:.0} B/event ({:.1}x raw)",
            n as f64 / seconds,
            raw as f64 / n as f64,
            resident >> 20,
            resident as f64 / n as f64,
            resident as f64 / raw as f64,
        );
    } // a clean stop: the rest is sealed, the projections checkpointed

    // The restart is measured in a fresh process: this one's allocator still holds the
    // memory the first store freed, which would hide the second store's.
    let output = std::process::Command::new(std::env::current_exe().expect("this executable"))
        .args(["--bench", "--reopen"])
        .arg(&dir)
        .arg(raw_bytes.to_string())
        .arg(n.to_string())
        .output()
        .expect("run the restart in a child process");
    print!("{}", String::from_utf8_lossy(&output.stdout));
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the restart process failed");
    match kept {
        Some(dir) => println!("kept:    {} (--reopen {} {raw_bytes} {n})", dir.display(), dir.display()),
        None => drop(std::fs::remove_dir_all(&dir)),
    }
}

/// The second half, in its own process: reopen the data directory, then export it.
fn reopen(dir: &std::path::Path, raw_bytes: u64, n: u64) {
    let config = WalConfig { sync: SyncMode::None, ..WalConfig::default() };
    let before = resident_bytes();
    let started = Instant::now();
    let (store, report) = EventStore::open_dir(dir, config).expect("reopen the store");
    let seconds = started.elapsed().as_secs_f64();
    let resident = resident_bytes().saturating_sub(before);
    assert_eq!(report.events, n, "every event is recovered");
    println!(
        "restart: {} events ({} from {} chunks) in {seconds:.2} s; resident +{} MB = {:.0} B/event ({:.1}x raw)",
        report.events,
        report.archived_events,
        report.chunks,
        resident >> 20,
        resident as f64 / n as f64,
        resident as f64 / raw_bytes as f64,
    );
    println!(
        "         chunks loaded in {:.2} s, WAL read in {:.2} s, tables rebuilt in {:.2} s",
        report.chunks_load_time.as_secs_f64(),
        report.wal_read_time.as_secs_f64(),
        report.rebuild_time.as_secs_f64(),
    );
    let stats = store.stats();
    println!(
        "         of which {} events held as Arrow columns: {} MB = {:.0} B/event ({:.2}x raw)",
        stats.columnar_events,
        stats.columnar_bytes >> 20,
        stats.columnar_bytes as f64 / stats.columnar_events.max(1) as f64,
        stats.columnar_bytes as f64 / stats.columnar_events.max(1) as f64 / (raw_bytes as f64 / n as f64),
    );

    let started = Instant::now();
    let written = store
        .export(
            QueryEventsRequest { limit: Some(10_000), ..Default::default() },
            ExportFormat::ArrowIpc,
            std::io::sink(),
        )
        .expect("export");
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(written, n);
    println!(
        "export:  {written} events as an Arrow IPC stream in {seconds:.2} s ({:.0} events/s)",
        n as f64 / seconds
    );
}
