//! Durable ingestion: a fixed-duration, bounded load generator over the durable store
//! (`EventStore::open_dir`, `--sync always`, WAL on the real disk under
//! `target/durable-bench/`), with the in-memory store and the raw disk measured in the
//! same run for comparison. Not criterion: what matters here is latency percentiles
//! and fsync counts, which criterion does not report.
//!
//! Scenarios (names are what a filter matches, as a substring):
//!
//! | name | what |
//! |---|---|
//! | `disk/fdatasync_100B` | one thread: `write` of 100 bytes at the end of a file + `fdatasync`, in a loop |
//! | `disk/fdatasync_100B_preallocated` | the same over a file filled with zeros first: no size change to sync |
//! | `disk/fdatasync_1MiB` | the same with 1 MiB writes: the disk's synced bandwidth |
//! | `durable/single/{1,8,64,256}_writer(s)` | N threads, each `append`ing single events to its own entity |
//! | `durable/batch_100/1_writer` | one thread `append_batch`ing 100 events at a time |
//! | `durable/batch_1000/{1,4}_writer(s)` | one or four threads `append_batch`ing 1,000 events at a time |
//! | `memory/single/64_writers` | the 64-writer scenario on the in-memory store (`EventStore::new`) |
//! | `{durable,memory}/single/64_tasks` | 64 async tasks on a 2-worker tokio runtime, each awaiting `append_async`: how the HTTP server drives the engine |
//!
//! Each store scenario opens a fresh store, lets the writers run for a warm-up, then
//! measures a fixed window: events per second from the committed position's advance
//! over the window's wall time; latency per `append`/`append_batch` call (started in
//! the window) from an HDR histogram; fsyncs and events per fsync from the delta of
//! `stats().log` over the window. Every window is bounded in time and in events. The
//! 1 MiB probe runs last, and the run's files are removed only at its end, so that
//! neither writeback nor the file system's discards of one scenario land in another.
//! The machine is shared: compare figures of one run with each other, and rerun before
//! trusting a single miss.
//! Inputs are built off the clock of the latency, but not of the wall time: single
//! events by the writer thread itself, between calls; batches likewise when there are
//! several writers (each builds its next batch while the others' are committed), and by
//! a feeder thread when there is one writer, so that its appends come back to back as a
//! pipelining client's would (building 1,000 events costs about as much CPU as
//! appending them; built inline, one writer's batch rate drops by ~15% on 2 cores, while
//! a feeder per writer with 4 writers costs ~15% by taking CPU from the store).
//!
//! Usage: `cargo bench -p allsource-benches --bench durable -- [--quick] [--list]
//! [FILTER..]`. `--quick` shortens every window (a smoke test; its figures are rough).
//! The table goes to stdout; the results are merged into
//! `target/durable-bench/results.json` (a scenario not rerun keeps its last result),
//! which `cargo xtask bench` reads and checks against the targets. Run outside
//! `cargo bench` (no `--bench` argument, as `cargo test --benches` does), it does
//! nothing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a bench whose engine call fails must stop loudly"
)]

#[path = "../../xtask/src/text.rs"]
mod text;

use std::fs::OpenOptions;
use std::io::{Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use allsource_benches::new_event;
use allsource_core::{EventStore, LogInfo, NewEvent, SyncMode, WalConfig};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use text::format_rate;

/// The version of the layout of `results.json`.
const RESULTS_FORMAT: u64 = 1;

/// The bytes of one small record of the raw-disk probe: about one single-event WAL
/// record (a 16-byte header, a 16-byte body header and a ~100-byte event).
const SMALL_RECORD_BYTES: usize = 100;
/// The bytes of one large write of the raw-disk probe.
const LARGE_RECORD_BYTES: usize = 1 << 20;

/// Writers' phases, shared through an `AtomicU8`.
const WARM_UP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// How long each phase lasts, and how much it may do at most.
#[derive(Debug, Clone, Copy)]
struct Budget {
    warm_up: Duration,
    measure: Duration,
    /// Events a store scenario may append during warm-up.
    warm_up_events_max: u64,
    /// Events a store scenario may append during the measured window.
    measure_events_max: u64,
    /// Write+fdatasync pairs of the 100-byte probe.
    small_syncs_max: u64,
    /// 1 MiB writes of the bandwidth probe.
    large_writes_max: u64,
}

impl Budget {
    fn new(quick: bool) -> Budget {
        if quick {
            Budget {
                warm_up: Duration::from_millis(100),
                measure: Duration::from_millis(400),
                warm_up_events_max: 200_000,
                measure_events_max: 1_000_000,
                small_syncs_max: 20_000,
                large_writes_max: 64,
            }
        } else {
            Budget {
                warm_up: Duration::from_millis(500),
                measure: Duration::from_millis(2_500),
                warm_up_events_max: 1_000_000,
                measure_events_max: 5_000_000,
                small_syncs_max: 200_000,
                large_writes_max: 256,
            }
        }
    }
}

/// Where a store scenario keeps its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoreKind {
    /// `EventStore::open_dir` with `--sync always`.
    Durable,
    /// `EventStore::new()`.
    Memory,
}

impl StoreKind {
    fn name(self) -> &'static str {
        match self {
            StoreKind::Durable => "durable",
            StoreKind::Memory => "memory",
        }
    }
}

/// One scenario of the run.
#[derive(Debug, Clone, Copy)]
enum Scenario {
    /// `write` + `fdatasync` of `bytes` after the previous write, one thread: at the end
    /// of a growing file, or over a `preallocated` one.
    Disk { bytes: usize, preallocated: bool },
    /// `writers` threads appending, each to its own entity: single events with
    /// `append` when `batch` is 1, else batches of `batch` events with `append_batch`.
    Store { kind: StoreKind, writers: usize, batch: usize },
    /// `tasks` async tasks on a tokio runtime with one worker per core, each awaiting
    /// `append_async` of single events to its own entity, as the server's handlers do.
    Tasks { kind: StoreKind, tasks: usize },
}

/// Every scenario, in the order they run and are shown. The disk first: it is the
/// yardstick of the others.
const SCENARIOS: [Scenario; 13] = [
    Scenario::Disk { bytes: SMALL_RECORD_BYTES, preallocated: false },
    Scenario::Disk { bytes: SMALL_RECORD_BYTES, preallocated: true },
    Scenario::Disk { bytes: LARGE_RECORD_BYTES, preallocated: false },
    Scenario::Store { kind: StoreKind::Durable, writers: 1, batch: 1 },
    Scenario::Store { kind: StoreKind::Durable, writers: 8, batch: 1 },
    Scenario::Store { kind: StoreKind::Durable, writers: 64, batch: 1 },
    Scenario::Store { kind: StoreKind::Durable, writers: 256, batch: 1 },
    Scenario::Store { kind: StoreKind::Durable, writers: 1, batch: 100 },
    Scenario::Store { kind: StoreKind::Durable, writers: 1, batch: 1_000 },
    Scenario::Store { kind: StoreKind::Durable, writers: 4, batch: 1_000 },
    Scenario::Store { kind: StoreKind::Memory, writers: 64, batch: 1 },
    Scenario::Tasks { kind: StoreKind::Durable, tasks: 64 },
    Scenario::Tasks { kind: StoreKind::Memory, tasks: 64 },
];

impl Scenario {
    fn name(&self) -> String {
        match *self {
            Scenario::Disk { bytes, preallocated } => {
                let size = if bytes >= 1 << 20 { format!("{}MiB", bytes >> 20) } else { format!("{bytes}B") };
                let over = if preallocated { "_preallocated" } else { "" };
                format!("disk/fdatasync_{size}{over}")
            }
            Scenario::Store { kind, writers, batch } => {
                let kind = match kind {
                    StoreKind::Durable => "durable",
                    StoreKind::Memory => "memory",
                };
                let shape = if batch == 1 { "single".to_string() } else { format!("batch_{batch}") };
                let writers =
                    if writers == 1 { "1_writer".to_string() } else { format!("{writers}_writers") };
                format!("{kind}/{shape}/{writers}")
            }
            Scenario::Tasks { kind, tasks } => format!("{}/single/{tasks}_tasks", kind.name()),
        }
    }
}

/// What one scenario measured.
#[derive(Debug, Clone)]
struct Measured {
    name: String,
    kind: &'static str,
    writers: usize,
    /// Events per call (1 for single appends; 0 for the disk probes).
    events_per_call: usize,
    /// The measured window's wall time.
    seconds: f64,
    /// Calls (appends, or write+fdatasync pairs) started in the window.
    calls: u64,
    /// Events committed in the window (store scenarios).
    events: Option<u64>,
    /// Bytes written in the window (disk probes).
    bytes: Option<u64>,
    /// fdatasync calls the WAL made in the window, and the events they covered.
    syncs: Option<u64>,
    synced_events: Option<u64>,
    /// Latency per call, in nanoseconds.
    latency: Histogram<u64>,
}

impl Measured {
    fn events_per_second(&self) -> Option<f64> {
        self.events.map(|events| events as f64 / self.seconds)
    }

    fn calls_per_second(&self) -> f64 {
        self.calls as f64 / self.seconds
    }

    fn bytes_per_second(&self) -> Option<f64> {
        self.bytes.map(|bytes| bytes as f64 / self.seconds)
    }

    fn events_per_sync(&self) -> Option<f64> {
        match (self.syncs, self.synced_events) {
            (Some(syncs), Some(events)) if syncs > 0 => Some(events as f64 / syncs as f64),
            _ => None,
        }
    }

    /// The latency at `quantile`, in microseconds.
    fn micros(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1_000.0
    }

    fn to_json(&self, quick: bool, finished_unix_ms: u64) -> Value {
        let latency = &self.latency;
        json!({
            "name": self.name,
            "kind": self.kind,
            "writers": self.writers,
            "events_per_call": self.events_per_call,
            "quick": quick,
            "finished_unix_ms": finished_unix_ms,
            "seconds": self.seconds,
            "calls": self.calls,
            "calls_per_second": self.calls_per_second(),
            "events": self.events,
            "events_per_second": self.events_per_second(),
            "bytes": self.bytes,
            "bytes_per_second": self.bytes_per_second(),
            "syncs": self.syncs,
            "synced_events": self.synced_events,
            "events_per_sync": self.events_per_sync(),
            "latency_us": {
                "p50": self.micros(0.5),
                "p90": self.micros(0.9),
                "p99": self.micros(0.99),
                "p999": self.micros(0.999),
                "max": latency.max() as f64 / 1_000.0,
                "mean": latency.mean() / 1_000.0,
            },
        })
    }
}

/// A latency histogram in nanoseconds, from 1 ns to 10 s, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000_000, 3).expect("valid histogram bounds")
}

fn record(histogram: &mut Histogram<u64>, took: Duration) {
    histogram.saturating_record(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
}

/// The command line.
#[derive(Debug, Default)]
struct Options {
    /// Run at all: `cargo bench` passes `--bench`; `cargo test --benches` does not.
    bench: bool,
    quick: bool,
    list: bool,
    filters: Vec<String>,
}

fn parse_options(args: impl IntoIterator<Item = String>) -> Options {
    let mut options = Options::default();
    for arg in args {
        match arg.as_str() {
            "--bench" => options.bench = true,
            "--quick" => options.quick = true,
            "--list" => options.list = true,
            flag if flag.starts_with('-') => eprintln!("durable: ignoring the option {flag}"),
            filter => options.filters.push(filter.to_string()),
        }
    }
    options
}

fn selected(name: &str, filters: &[String]) -> bool {
    filters.is_empty() || filters.iter().any(|filter| name.contains(filter.as_str()))
}

fn main() {
    let options = parse_options(std::env::args().skip(1));
    let scenarios: Vec<Scenario> =
        SCENARIOS.iter().copied().filter(|s| selected(&s.name(), &options.filters)).collect();
    if options.list {
        for scenario in &scenarios {
            println!("{}: bench", scenario.name());
        }
        return;
    }
    if !options.bench {
        println!("durable: not run outside `cargo bench` (pass --bench to run it)");
        return;
    }
    if scenarios.is_empty() {
        println!("durable: no scenario matches {:?}", options.filters);
        return;
    }

    let budget = Budget::new(options.quick);
    let bench_dir = target_dir().join("durable-bench");
    let run = RunDir::create(&bench_dir);
    eprintln!(
        "durable: {} scenario(s){}, data under {}",
        scenarios.len(),
        if options.quick { " (quick)" } else { "" },
        run.path.display()
    );

    // The 1 MiB probe runs last: it writes hundreds of MiB, whose writeback would
    // disturb the scenarios after it. Files are removed only at the end of the run, for
    // the same reason (the file system discards freed blocks, on this machine online).
    let mut order: Vec<Scenario> = scenarios.clone();
    order.sort_by_key(|s| matches!(s, Scenario::Disk { bytes, .. } if *bytes >= LARGE_RECORD_BYTES));
    let mut results = Vec::new();
    for scenario in order {
        let name = scenario.name();
        eprintln!("durable: running {name}");
        let directory = run.path.join(name.replace('/', "-"));
        let measured = match scenario {
            Scenario::Disk { bytes, preallocated } => {
                disk_probe(&name, &directory, bytes, preallocated, &budget)
            }
            Scenario::Store { kind, writers, batch } => {
                store_scenario(&name, &directory, kind, writers, batch, &budget)
            }
            Scenario::Tasks { kind, tasks } => tasks_scenario(&name, &directory, kind, tasks, &budget),
        };
        results.push((measured, unix_millis()));
    }
    // Shown in the order of SCENARIOS.
    results.sort_by_key(|(m, _)| scenarios.iter().position(|s| s.name() == m.name));
    drop(run);

    println!();
    println!("Durable ingestion (--sync always, WAL under {}):", bench_dir.display());
    println!();
    print!("{}", table(results.iter().map(|(m, _)| m)));
    let path = bench_dir.join("results.json");
    let fresh: Vec<Value> = results.iter().map(|(m, finished)| m.to_json(options.quick, *finished)).collect();
    match write_results(&path, fresh) {
        Ok(()) => {
            println!("\nResults merged into {}; `cargo xtask bench --report` checks them.", path.display())
        }
        Err(error) => {
            eprintln!("durable: could not write {}: {error}", path.display());
            std::process::exit(1);
        }
    }
}

/// Cargo's target directory: the nearest ancestor of this executable holding the
/// `CACHEDIR.TAG` cargo writes there (the executable is `<target>/release/deps/...`).
fn target_dir() -> PathBuf {
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.ancestors().skip(1).find(|dir| dir.join("CACHEDIR.TAG").is_file()) {
            return dir.to_path_buf();
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target")
}

fn unix_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}

/// This run's data directory, `<target>/durable-bench/run-<pid>-<ms>`, removed when
/// dropped (also when a scenario panics).
struct RunDir {
    path: PathBuf,
}

impl RunDir {
    fn create(bench_dir: &Path) -> RunDir {
        let path = bench_dir.join(format!("run-{}-{}", std::process::id(), unix_millis()));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        RunDir { path }
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.path) {
            eprintln!("durable: could not remove {}: {error}", self.path.display());
        }
    }
}

/// One thread writing `bytes` after the previous write and `fdatasync`ing after each,
/// as the WAL does with one record: a warm-up, then the measured window. Appending to
/// a new file, as the WAL does, each sync also makes the file's new size durable;
/// `preallocated` overwrites a file first filled with zeros and synced instead, so that
/// a sync has only data to write: what preallocating WAL segments would buy.
fn disk_probe(name: &str, directory: &Path, bytes: usize, preallocated: bool, budget: &Budget) -> Measured {
    std::fs::create_dir_all(directory).expect("create the probe's directory");
    let path = directory.join("probe");
    let max_calls =
        if bytes >= LARGE_RECORD_BYTES { budget.large_writes_max } else { budget.small_syncs_max };
    let warm_up_calls = max_calls / 4;
    let mut file = if preallocated {
        let mut file =
            OpenOptions::new().write(true).create_new(true).open(&path).expect("create the probe file");
        let zeros = vec![0_u8; 1 << 20];
        let mut left = (warm_up_calls + max_calls) * bytes as u64;
        while left > 0 {
            let n = left.min(zeros.len() as u64);
            file.write_all(&zeros[..n as usize]).expect("fill the probe file");
            left -= n;
        }
        file.sync_all().expect("sync the filled probe file");
        file.seek(SeekFrom::Start(0)).expect("rewind the probe file");
        file
    } else {
        OpenOptions::new().append(true).create_new(true).open(&path).expect("create the probe file")
    };
    let bytes_of_one = vec![0x5a_u8; bytes];
    let mut run = |window: Duration, max_calls: u64, latency: &mut Histogram<u64>| {
        let started = Instant::now();
        let mut calls = 0;
        while calls < max_calls && started.elapsed() < window {
            let call = Instant::now();
            file.write_all(&bytes_of_one).expect("write to the probe file");
            file.sync_data().expect("fdatasync the probe file");
            record(latency, call.elapsed());
            calls += 1;
        }
        (calls, started.elapsed().as_secs_f64())
    };
    run(budget.warm_up, warm_up_calls, &mut histogram());
    let mut latency = histogram();
    let (calls, seconds) = run(budget.measure, max_calls, &mut latency);
    Measured {
        name: name.to_string(),
        kind: "disk",
        writers: 1,
        events_per_call: 0,
        seconds,
        calls,
        events: None,
        bytes: Some(calls * bytes as u64),
        syncs: Some(calls),
        synced_events: None,
        latency,
    }
}

/// What a writer thread brings back.
struct WriterReport {
    latency: Histogram<u64>,
    /// Events it appended, in every phase.
    appended: u64,
}

/// `writers` threads appending to a fresh store: a warm-up, then the measured window.
fn store_scenario(
    name: &str,
    directory: &Path,
    kind: StoreKind,
    writers: usize,
    batch: usize,
    budget: &Budget,
) -> Measured {
    let store = Arc::new(open_store(kind, directory));
    let phase = Arc::new(AtomicU8::new(WARM_UP));
    let ready = Arc::new(Barrier::new(writers + 1));
    let handles: Vec<_> = (0..writers as u64)
        .map(|writer| {
            let (store, phase, ready) = (store.clone(), phase.clone(), ready.clone());
            thread::Builder::new()
                .name(format!("writer-{writer}"))
                .spawn(move || {
                    if batch == 1 {
                        single_writer(&store, writer, &phase, &ready)
                    } else {
                        batch_writer(&store, writer, batch, writers == 1, &phase, &ready)
                    }
                })
                .expect("spawn a writer thread")
        })
        .collect();
    ready.wait();
    let window = measure_window(&store, &phase, budget);
    let reports = handles.into_iter().map(|handle| handle.join().expect("a writer thread panicked"));
    finish(name, store, kind, writers, batch, window, reports)
}

/// What a measured window saw: its length, and the committed positions and log
/// figures at its ends.
struct Window {
    seconds: f64,
    first: u64,
    last: u64,
    before: LogInfo,
    after: LogInfo,
}

/// Lets the writers warm up, measures one window, then tells them to stop.
fn measure_window(store: &EventStore, phase: &AtomicU8, budget: &Budget) -> Window {
    run_phase(store, budget.warm_up, budget.warm_up_events_max);
    // `stats()` is read outside the timed window's ends, and the window's events come
    // from the committed position, an atomic.
    let before = store.stats().log;
    let first = store.committed_position();
    let started = Instant::now();
    phase.store(MEASURE, Ordering::Release);
    run_phase(store, budget.measure, budget.measure_events_max);
    let last = store.committed_position();
    let seconds = started.elapsed().as_secs_f64();
    let after = store.stats().log;
    phase.store(STOP, Ordering::Release);
    Window { seconds, first, last, before, after }
}

/// A fresh store of `kind`; a durable one in `directory`.
fn open_store(kind: StoreKind, directory: &Path) -> EventStore {
    match kind {
        StoreKind::Durable => {
            let config = WalConfig { sync: SyncMode::Always, ..Default::default() };
            let (store, report) = EventStore::open_dir(directory, config).expect("open the durable store");
            assert_eq!(store.stats().total_events, 0, "a fresh directory holds no events: {report:?}");
            store
        }
        StoreKind::Memory => EventStore::new(),
    }
}

/// Checks that every acknowledged event is committed, closes the store, and puts the
/// figures of a store scenario together.
fn finish(
    name: &str,
    store: Arc<EventStore>,
    kind: StoreKind,
    writers: usize,
    batch: usize,
    window: Window,
    reports: impl IntoIterator<Item = WriterReport>,
) -> Measured {
    let mut latency = histogram();
    let mut appended = 0;
    for report in reports {
        latency.add(&report.latency).expect("histograms of the same bounds add up");
        appended += report.appended;
    }
    let Window { seconds, first, last, before, after } = window;
    let stats = store.stats();
    assert!(!stats.read_only, "{name}: the store turned read-only");
    assert_eq!(stats.total_events, appended, "{name}: every acknowledged event is committed");
    drop(store);

    let durable = kind == StoreKind::Durable;
    Measured {
        name: name.to_string(),
        kind: kind.name(),
        writers,
        events_per_call: batch,
        seconds,
        calls: latency.len(),
        events: Some(last - first),
        // The WAL's size, not what was written: when a seal removes segments during the
        // window it shrinks, and the figure is left out rather than wrapped around.
        bytes: durable.then(|| after.wal_bytes.checked_sub(before.wal_bytes)).flatten(),
        syncs: durable.then(|| after.syncs - before.syncs),
        synced_events: durable.then(|| after.synced_events - before.synced_events),
        latency,
    }
}

/// `tasks` async tasks appending single events, on a runtime with one worker thread per
/// core: the shape of the HTTP server, where many connections share a few threads and
/// a commit wakes a task rather than a blocked thread.
fn tasks_scenario(name: &str, directory: &Path, kind: StoreKind, tasks: usize, budget: &Budget) -> Measured {
    let store = Arc::new(open_store(kind, directory));
    let workers = thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("build the tokio runtime");
    let phase = Arc::new(AtomicU8::new(WARM_UP));
    let handles: Vec<_> = (0..tasks as u64)
        .map(|task| {
            let (store, phase) = (store.clone(), phase.clone());
            runtime.spawn(async move {
                let mut latency = histogram();
                let mut appended = 0;
                loop {
                    let now = phase.load(Ordering::Acquire);
                    if now == STOP {
                        break;
                    }
                    let event = new_event(0, task, appended);
                    let call = Instant::now();
                    store.append_async(event).await.expect("append succeeds");
                    if now == MEASURE {
                        record(&mut latency, call.elapsed());
                    }
                    appended += 1;
                }
                WriterReport { latency, appended }
            })
        })
        .collect();
    let window = measure_window(&store, &phase, budget);
    let reports: Vec<WriterReport> =
        handles.into_iter().map(|handle| runtime.block_on(handle).expect("a writer task panicked")).collect();
    drop(runtime);
    finish(name, store, kind, tasks, 1, window, reports)
}

/// Lets the writers run until `duration` has passed or `events_max` events were
/// committed, whichever comes first.
fn run_phase(store: &EventStore, duration: Duration, events_max: u64) {
    let started = Instant::now();
    let first = store.committed_position();
    while started.elapsed() < duration && store.committed_position() - first < events_max {
        thread::sleep(Duration::from_millis(2));
    }
}

/// Appends single events to entity `entity-{writer}` until told to stop; records the
/// latency of the calls that started in the measured window.
fn single_writer(store: &EventStore, writer: u64, phase: &AtomicU8, ready: &Barrier) -> WriterReport {
    let mut latency = histogram();
    let mut appended = 0;
    ready.wait();
    loop {
        let now = phase.load(Ordering::Acquire);
        if now == STOP {
            break;
        }
        let event = new_event(0, writer, appended);
        let call = Instant::now();
        store.append(event).expect("append succeeds");
        if now == MEASURE {
            record(&mut latency, call.elapsed());
        }
        appended += 1;
    }
    WriterReport { latency, appended }
}

/// Appends batches of `batch` events to entity `entity-{writer}` until told to stop.
/// With `ahead`, a feeder thread builds the batches ahead (two at most); without, the
/// writer builds each before its call.
fn batch_writer(
    store: &EventStore,
    writer: u64,
    batch: usize,
    ahead: bool,
    phase: &AtomicU8,
    ready: &Barrier,
) -> WriterReport {
    let build = move |first: u64| -> Vec<NewEvent> {
        (first..first + batch as u64).map(|i| new_event(0, writer, i)).collect()
    };
    let (send, receive) = sync_channel::<Vec<NewEvent>>(2);
    let feeder = ahead.then(|| {
        thread::Builder::new()
            .name(format!("feeder-{writer}"))
            .spawn(move || {
                let mut first = 0;
                // Until the writer hangs up: it is done.
                while send.send(build(first)).is_ok() {
                    first += batch as u64;
                }
            })
            .expect("spawn a feeder thread")
    });
    let mut latency = histogram();
    let mut appended = 0;
    ready.wait();
    loop {
        let now = phase.load(Ordering::Acquire);
        if now == STOP {
            break;
        }
        let events = match feeder {
            Some(_) => receive.recv().expect("the feeder sends until the writer hangs up"),
            None => build(appended),
        };
        let call = Instant::now();
        let done = store.append_batch(events).expect("append_batch succeeds");
        if now == MEASURE {
            record(&mut latency, call.elapsed());
        }
        appended += done.created as u64;
    }
    drop(receive);
    if let Some(feeder) = feeder {
        feeder.join().expect("the feeder thread panicked");
    }
    WriterReport { latency, appended }
}

/// Merges `fresh` into the results at `path` (a scenario keeps its last result until
/// it is rerun) and writes them back, in the order of [`SCENARIOS`].
fn write_results(path: &Path, fresh: Vec<Value>) -> std::io::Result<()> {
    let mut scenarios: Vec<Value> = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .filter(|old| old["format"] == RESULTS_FORMAT)
        .and_then(|mut old| old.get_mut("scenarios").map(Value::take))
        .and_then(|old| match old {
            Value::Array(old) => Some(old),
            _ => None,
        })
        .unwrap_or_default();
    scenarios.retain(|old| !fresh.iter().any(|new| new["name"] == old["name"]));
    scenarios.extend(fresh);
    let order: Vec<String> = SCENARIOS.iter().map(Scenario::name).collect();
    let rank = |s: &Value| order.iter().position(|name| s["name"] == name.as_str()).unwrap_or(order.len());
    scenarios.sort_by_key(rank);
    let results = json!({
        "format": RESULTS_FORMAT,
        "updated_unix_ms": unix_millis(),
        "units": "latency in microseconds per call; rates per second of the measured window",
        "scenarios": scenarios,
    });
    let text = serde_json::to_string_pretty(&results).map_err(std::io::Error::other)?;
    std::fs::write(path, text + "\n")
}

/// The table printed at the end of a run.
fn table<'a>(results: impl Iterator<Item = &'a Measured>) -> String {
    let header =
        ["scenario", "events/s", "calls/s", "p50", "p99", "p99.9", "max", "fsyncs", "events/fsync", "MB/s"];
    let dash = || "-".to_string();
    let rows: Vec<Vec<String>> = results
        .map(|m| {
            vec![
                m.name.clone(),
                m.events_per_second().map_or_else(dash, format_rate),
                format_rate(m.calls_per_second()),
                format_micros(m.micros(0.5)),
                format_micros(m.micros(0.99)),
                format_micros(m.micros(0.999)),
                format_micros(m.latency.max() as f64 / 1_000.0),
                m.syncs.map_or_else(dash, |s| s.to_string()),
                m.events_per_sync().map_or_else(dash, |e| format!("{e:.1}")),
                m.bytes_per_second().map_or_else(dash, |b| format!("{:.1}", b / 1e6)),
            ]
        })
        .collect();
    text::render(&header, &rows)
}

/// `1.23 ms`, `456 µs`, `12.3 µs`, `0.85 µs`.
fn format_micros(micros: f64) -> String {
    if micros >= 1_000.0 {
        format!("{:.2} ms", micros / 1_000.0)
    } else if micros >= 100.0 {
        format!("{micros:.0} µs")
    } else if micros >= 10.0 {
        format!("{micros:.1} µs")
    } else {
        format!("{micros:.2} µs")
    }
}
