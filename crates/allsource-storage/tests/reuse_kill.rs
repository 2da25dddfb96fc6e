//! Reused WAL segments under `kill -9`, from outside: this program runs itself again as
//! a writer process that appends to a data directory of 64 KiB segments on real files,
//! sealing every 64 events, so that sealed segments become the next ones and records go
//! over their old ones. The writer is killed with SIGKILL at a random moment, five
//! times on one directory; after each kill, recovery in this process must find every
//! acknowledged event, in order, and nothing but the appends in flight beyond them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use allsource_core_types::{Event, Position};
use allsource_storage::{DurableLog, Log, Preallocate, SyncMode, WalConfig};

const CHUNK_EVENTS: u64 = 64;
/// The writer stops by itself after this many events or this long, if never killed.
const WRITER_EVENTS_MAX: u64 = 200_000;
const WRITER_TIME_MAX: Duration = Duration::from_secs(60);

fn config() -> WalConfig {
    WalConfig {
        sync: SyncMode::Always,
        segment_bytes_max: 64 * 1024,
        chunk_events: CHUNK_EVENTS,
        preallocate: Preallocate::Background,
    }
}

/// Events at `range`, each its entity's first.
fn events(range: std::ops::RangeInclusive<Position>) -> Vec<Arc<Event>> {
    range.map(|position| common::lone_event(position, 300)).collect()
}

/// The writer: recovers, then appends pairs of events, printing `acked N` after each
/// append returns and `reused` whenever a seal leaves a sealed segment as the spare.
fn writer(dir: &Path) {
    let (log, _) = DurableLog::open_dir(dir, config()).unwrap();
    let mut next = log.recover().unwrap().into_events().unwrap().len() as Position + 1;
    let mut sealed = log.sealed_position();
    let spare = dir.join("wal").join("next-segment.spare");
    let started = Instant::now();
    let mut out = std::io::stdout().lock();
    while next < WRITER_EVENTS_MAX && started.elapsed() < WRITER_TIME_MAX {
        log.append(&events(next..=next + 1)).unwrap();
        next += 2;
        writeln!(out, "acked {}", next - 1).unwrap();
        while next - 1 - sealed >= CHUNK_EVENTS {
            log.seal(&events(sealed + 1..=sealed + CHUNK_EVENTS)).unwrap();
            sealed += CHUNK_EVENTS;
            let head = std::fs::read(&spare).map(|bytes| bytes.starts_with(b"ALLSWAL")).unwrap_or(false);
            if head {
                writeln!(out, "reused").unwrap();
            }
        }
        out.flush().unwrap();
    }
}

/// A small deterministic generator for the kill moments.
fn below(state: &mut u64, n: u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state % n
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, dir] = args.as_slice() {
        if flag == "--writer" {
            writer(Path::new(dir));
            return;
        }
    }
    // Listing (`--list`), or filtering by another test's name: nothing here to run.
    const NAME: &str = "kill_9_while_writing_over_reused_segments";
    if args.iter().any(|a| a == "--list") {
        println!("{NAME}: test");
        return;
    }
    let filters: Vec<&String> = args.iter().skip(1).filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty() && !filters.iter().any(|f| NAME.contains(f.as_str())) {
        return;
    }
    let seed = std::env::var("ALLSOURCE_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
            | 1
    });
    println!("{NAME}: ALLSOURCE_CRASH_SEED={seed}");
    let mut rng = seed;
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut old_bytes_cut_seen = false;
    // Five kills: each lands in a reused segment with old records past its end about
    // six times in seven, and the test asks for one at least.
    for cycle in 1..=5 {
        let ctx = format!("ALLSOURCE_CRASH_SEED={seed}, cycle {cycle}");
        let mut child =
            Command::new(&exe).arg("--writer").arg(dir.path()).stdout(Stdio::piped()).spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Killed at a random ack after the second reuse of this run.
        let (mut reuses, mut acked, mut after) = (0, 0, None);
        let extra = 1 + below(&mut rng, 300);
        for line in lines.by_ref() {
            let line = line.unwrap();
            if line == "reused" {
                reuses += 1;
            } else if let Some(n) = line.strip_prefix("acked ") {
                acked = n.parse::<Position>().unwrap();
                if reuses >= 2 {
                    let seen = after.get_or_insert(0);
                    *seen += 1;
                    if *seen >= extra {
                        break;
                    }
                }
            }
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(reuses >= 2, "{ctx}: the writer stopped ({status}) after {reuses} reuses, {acked} events");
        for line in lines {
            if let Some(n) = line.unwrap().strip_prefix("acked ") {
                acked = n.parse().unwrap();
            }
        }
        let (log, report) =
            DurableLog::open_dir(dir.path(), config()).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        let recovered = log.recover().unwrap().into_events().unwrap();
        let n = recovered.len() as Position;
        // Beyond the last ack printed: at most an acked pair not yet printed and a pair
        // in flight.
        assert!((acked..=acked + 4).contains(&n), "{ctx}: {n} events recovered, {acked} acknowledged");
        let expected: Vec<Event> = events(1..=n).iter().map(|e| (**e).clone()).collect();
        assert!(recovered == expected, "{ctx}: the recovered log is not the appended one");
        old_bytes_cut_seen |= report.old_bytes_cut > 0;
        println!("{ctx}: killed after {acked} acknowledged, {n} recovered, {report:?}");
    }
    assert!(old_bytes_cut_seen, "no kill landed in a reused segment (ALLSOURCE_CRASH_SEED={seed})");
    println!("test {NAME} ... ok");
}
