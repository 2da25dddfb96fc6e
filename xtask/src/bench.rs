//! `cargo xtask bench`: runs the criterion suites of `allsource-benches`, then reads the
//! results criterion saved and prints them against the targets.
//!
//! Criterion saves, for every benchmark, `<criterion dir>/<id>/new/benchmark.json` (its
//! id and throughput) and `new/estimates.json` (statistics of the time per iteration,
//! in nanoseconds). The figure we report is the **median** time per iteration: on a
//! shared 2-core machine it is the estimate least moved by the odd descheduled sample.
//! A benchmark with an elements throughput is reported in events per second
//! (elements per iteration / median time), any other in microseconds per operation.
//!
//! The `durable` bench is not criterion: it is a fixed-duration load generator over the
//! durable store that writes `<target dir>/durable-bench/results.json` (events per
//! second, latency percentiles per call, fsyncs and events per fsync of each scenario,
//! and the raw disk's fdatasync figures). Its rows get a table of their own, checked
//! against the durable-ingestion targets (see [`durable_checks`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::text::{format_rate, render};
use crate::{cargo_metadata, run_cargo, target_directory};

/// A target a figure should meet.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    /// At least this many events per second.
    EventsPerSecondAtLeast(f64),
    /// Strictly less than this many microseconds per operation.
    MicrosecondsBelow(f64),
}

/// The targets of one benchmark: the seed's (the README's claims: ingestion 1M+/s,
/// entity query < 100 µs, state reconstruction < 1 ms, concurrent writes 500K+/s) and
/// this issue's stricter ones.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Targets {
    seed: Option<Target>,
    issue: Option<Target>,
}

/// The benchmarks that carry targets, by criterion id, so that a missing result is
/// reported rather than silently left out.
const TARGETED: [&str; 8] = [
    "ingestion/single_event",
    "batch_ingestion/append_batch/100",
    "batch_ingestion/append_batch/1000",
    "batch_ingestion/append_batch/10000",
    "concurrent_ingestion/100_threads",
    "queries/entity/10_events",
    "state/replay/100_events",
    "state/snapshot/100_events",
];

fn targets_of(id: &str) -> Targets {
    use Target::{EventsPerSecondAtLeast as AtLeast, MicrosecondsBelow as Below};
    match id {
        // Both single-threaded small-payload ingestion; a batch is held to the same bar.
        "ingestion/single_event" => Targets { seed: Some(AtLeast(1e6)), issue: Some(AtLeast(1e6)) },
        _ if id.starts_with("batch_ingestion/") => {
            Targets { seed: Some(AtLeast(1e6)), issue: Some(AtLeast(1e6)) }
        }
        _ if id.starts_with("concurrent_ingestion/") => {
            Targets { seed: Some(AtLeast(5e5)), issue: Some(AtLeast(5e5)) }
        }
        "queries/entity/10_events" => Targets { seed: Some(Below(100.0)), issue: Some(Below(10.0)) },
        "state/replay/100_events" => Targets { seed: Some(Below(1_000.0)), issue: Some(Below(100.0)) },
        "state/snapshot/100_events" => Targets { seed: None, issue: Some(Below(5.0)) },
        _ => Targets::default(),
    }
}

/// One benchmark's saved result.
#[derive(Debug, Clone, PartialEq)]
struct BenchResult {
    /// Criterion's full id: `group/function/parameter`.
    id: String,
    /// The median time per iteration, in nanoseconds.
    median_ns: f64,
    /// Events per iteration, when the benchmark declared an elements throughput.
    elements: Option<u64>,
    /// When criterion wrote it.
    modified: Option<SystemTime>,
}

impl BenchResult {
    fn events_per_second(&self) -> f64 {
        self.elements.unwrap_or(1) as f64 / (self.median_ns * 1e-9)
    }

    fn microseconds(&self) -> f64 {
        self.median_ns / 1_000.0
    }

    /// The figure in the unit of the benchmark's kind.
    fn figure(&self) -> String {
        match self.elements {
            Some(_) => format_events_per_second(self.events_per_second()),
            None => format_microseconds(self.microseconds()),
        }
    }

    fn meets(&self, target: Target) -> bool {
        match target {
            Target::EventsPerSecondAtLeast(minimum) => self.events_per_second() >= minimum,
            Target::MicrosecondsBelow(maximum) => self.microseconds() < maximum,
        }
    }
}

/// The bench target that is not criterion.
const DURABLE_BENCH: &str = "durable";

/// What `cargo xtask bench` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Plan {
    /// Only print the table from the results already saved.
    Report,
    /// The criterion suites, then the durable bench, each given `bench_args` (what
    /// follows `--`: a filter, criterion's options).
    All { bench_args: Vec<String> },
    /// Only the durable bench, given `bench_args` (`--quick`, filters).
    Durable { bench_args: Vec<String> },
    /// `cargo bench -p allsource-benches ARGS..` as given (ARGS hold cargo options,
    /// e.g. `--bench queries`), so every bench target it selects runs in cargo's order.
    Cargo { cargo_args: Vec<String> },
}

fn plan(args: &[String]) -> Result<Plan> {
    let after_dash = |rest: &[String]| -> Vec<String> {
        match rest.split_first() {
            Some((first, rest)) if first == "--" => rest.to_vec(),
            _ => rest.to_vec(),
        }
    };
    match args.split_first() {
        Some((first, rest)) if first == "--report" => {
            if !rest.is_empty() {
                bail!("`cargo xtask bench --report` takes no other arguments, got {rest:?}");
            }
            Ok(Plan::Report)
        }
        Some((first, rest)) if first == DURABLE_BENCH => Ok(Plan::Durable { bench_args: after_dash(rest) }),
        Some((first, rest)) if first == "--" => Ok(Plan::All { bench_args: rest.to_vec() }),
        None => Ok(Plan::All { bench_args: Vec::new() }),
        Some(_) => Ok(Plan::Cargo { cargo_args: args.to_vec() }),
    }
}

/// `cargo bench -p allsource-benches` with `targets` (`--bench NAME` each) and
/// `bench_args` after `--`.
fn bench_command(targets: &[String], bench_args: &[String]) -> Vec<String> {
    let mut command = vec!["bench".to_string(), "-p".to_string(), "allsource-benches".to_string()];
    for target in targets {
        command.extend(["--bench".to_string(), target.clone()]);
    }
    if !bench_args.is_empty() {
        command.push("--".to_string());
        command.extend(bench_args.iter().cloned());
    }
    command
}

/// `cargo xtask bench [--report | durable [ARGS..] | ARGS..]`.
pub fn run(args: &[String]) -> Result<()> {
    let plan = plan(args)?;
    let started = SystemTime::now();
    let metadata = cargo_metadata()?;
    match &plan {
        Plan::Report => {}
        Plan::All { bench_args } => {
            let suites: Vec<String> =
                bench_targets(&metadata).into_iter().filter(|name| name != DURABLE_BENCH).collect();
            if suites.is_empty() {
                bail!("allsource-benches has no criterion bench target");
            }
            run_cargo(bench_command(&suites, bench_args))?;
            run_cargo(bench_command(&[DURABLE_BENCH.to_string()], bench_args))?;
        }
        Plan::Durable { bench_args } => run_cargo(bench_command(&[DURABLE_BENCH.to_string()], bench_args))?,
        Plan::Cargo { cargo_args } => {
            let mut command = bench_command(&[], &[]);
            command.extend(cargo_args.iter().cloned());
            run_cargo(command)?;
        }
    }
    let run_started = (plan != Plan::Report).then_some(started);

    let target_dir = target_directory(&metadata)?;
    let directory = criterion_directory(&target_dir);
    let results = read_results(&directory)?;
    let durable_path = target_dir.join("durable-bench").join("results.json");
    let durable = read_durable(&durable_path)?;
    if results.is_empty() && durable.is_empty() {
        bail!(
            "no criterion results under {} and no {}; run `cargo xtask bench` first",
            directory.display(),
            durable_path.display()
        );
    }
    if !results.is_empty() {
        println!();
        println!("Results from {} (median time per iteration):", directory.display());
        println!();
        print!("{}", table(&results, run_started));
    }
    if !durable.is_empty() {
        println!();
        println!("Durable ingestion, --sync always, from {}:", durable_path.display());
        println!();
        print!("{}", durable_table(&durable, run_started));
    }
    Ok(())
}

/// The bench targets of `allsource-benches`, in the order its Cargo.toml lists them.
fn bench_targets(metadata: &Value) -> Vec<String> {
    let Some(package) =
        metadata["packages"].as_array().and_then(|p| p.iter().find(|p| p["name"] == "allsource-benches"))
    else {
        return Vec::new();
    };
    let Some(targets) = package["targets"].as_array() else { return Vec::new() };
    targets
        .iter()
        .filter(|t| t["kind"].as_array().is_some_and(|kinds| kinds.iter().any(|k| k == "bench")))
        .filter_map(|t| t["name"].as_str().map(str::to_string))
        .collect()
}

/// Criterion's output folder: `$CRITERION_HOME`, else `<target dir>/criterion`.
fn criterion_directory(target_dir: &Path) -> PathBuf {
    match std::env::var_os("CRITERION_HOME") {
        Some(home) => PathBuf::from(home),
        None => target_dir.join("criterion"),
    }
}

/// Every result under `directory`: each `new/benchmark.json` with its `new/estimates.json`.
fn read_results(directory: &Path) -> Result<Vec<BenchResult>> {
    let mut results = Vec::new();
    if directory.is_dir() {
        collect_results(directory, &mut results)?;
    }
    results.sort_by(|a, b| (suite_rank(&a.id), &a.id).cmp(&(suite_rank(&b.id), &b.id)));
    Ok(results)
}

/// The order the suites are shown in: ingestion first, as in the benches' Cargo.toml;
/// unknown groups last.
fn suite_rank(id: &str) -> usize {
    const SUITES: [&str; 5] = ["ingestion", "batch_ingestion", "concurrent_ingestion", "queries", "state"];
    let group = id.split('/').next().unwrap_or(id);
    SUITES.iter().position(|suite| *suite == group).unwrap_or(SUITES.len())
}

fn collect_results(directory: &Path, results: &mut Vec<BenchResult>) -> Result<()> {
    let entries =
        std::fs::read_dir(directory).with_context(|| format!("could not list {}", directory.display()))?;
    for entry in entries {
        let path = entry?.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|name| name == "new") {
            if path.join("benchmark.json").is_file() {
                results.push(read_result(&path)?);
            }
        } else if path.file_name().is_some_and(|name| name != "base" && name != "change" && name != "report")
        {
            collect_results(&path, results)?;
        }
    }
    Ok(())
}

/// The result saved in one `new` folder.
fn read_result(new_directory: &Path) -> Result<BenchResult> {
    let benchmark_path = new_directory.join("benchmark.json");
    let estimates_path = new_directory.join("estimates.json");
    let benchmark = read_json(&benchmark_path)?;
    let estimates = read_json(&estimates_path)?;
    let modified = std::fs::metadata(&estimates_path).and_then(|m| m.modified()).ok();
    parse_result(&benchmark, &estimates, modified)
        .with_context(|| format!("unexpected criterion output in {}", new_directory.display()))
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("could not read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

fn parse_result(benchmark: &Value, estimates: &Value, modified: Option<SystemTime>) -> Result<BenchResult> {
    let id = benchmark["full_id"].as_str().context("benchmark.json has no full_id")?.to_string();
    let median_ns = estimates["median"]["point_estimate"]
        .as_f64()
        .context("estimates.json has no median.point_estimate")?;
    if median_ns.is_nan() || median_ns <= 0.0 {
        bail!("the median of {id} is {median_ns} ns");
    }
    // Serialized as {"Elements": n}, {"Bytes": n}, ..., or null.
    let elements = benchmark["throughput"]["Elements"].as_u64();
    Ok(BenchResult { id, median_ns, elements, modified })
}

/// The table: every result found, plus a line for each targeted benchmark with no
/// result. With `run_started`, results older than the run are marked stale (left over
/// from an earlier run that a filter did not repeat).
fn table(results: &[BenchResult], run_started: Option<SystemTime>) -> String {
    let header = ["benchmark", "measured", "seed target", "seed", "issue target", "issue", "note"];
    let mut rows: Vec<[String; 7]> = Vec::new();
    let (mut n_met, mut n_targets) = (0, 0);
    for result in results {
        let targets = targets_of(&result.id);
        let mut verdict = |target: Option<Target>| match target {
            None => ("-".to_string(), "".to_string()),
            Some(target) => {
                n_targets += 1;
                let met = result.meets(target);
                n_met += usize::from(met);
                (format_target(target), if met { "met" } else { "MISSED" }.to_string())
            }
        };
        let (seed_target, seed_verdict) = verdict(targets.seed);
        let (issue_target, issue_verdict) = verdict(targets.issue);
        let stale = match (run_started, result.modified) {
            (Some(started), Some(modified)) => modified < started,
            _ => false,
        };
        let note = if stale { "stale: not rerun" } else { "" };
        rows.push([
            result.id.clone(),
            result.figure(),
            seed_target,
            seed_verdict,
            issue_target,
            issue_verdict,
            note.to_string(),
        ]);
    }
    for id in TARGETED {
        if !results.iter().any(|r| r.id == id) {
            rows.push([
                id.to_string(),
                "no result".to_string(),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
            ]);
        }
    }

    let mut out = render(&header, &rows);
    let _ = writeln!(out);
    let _ = writeln!(out, "{n_met} of {n_targets} targets met.");
    out
}

/// The durable bench's scenarios that the targets read.
const DURABLE_1_WRITER: &str = "durable/single/1_writer";
const DURABLE_64_WRITERS: &str = "durable/single/64_writers";
const MEMORY_64_WRITERS: &str = "memory/single/64_writers";
const DURABLE_64_TASKS: &str = "durable/single/64_tasks";
const MEMORY_64_TASKS: &str = "memory/single/64_tasks";
const DURABLE_BATCH_1000: &str = "durable/batch_1000/1_writer";
const DISK_FDATASYNC: &str = "disk/fdatasync_100B";

/// The share of the in-memory rate that 64 durable writers must reach.
const DURABLE_SHARE_OF_MEMORY_MIN: f64 = 0.5;
/// The rate durable 1,000-event batches must reach, in events per second.
const DURABLE_BATCH_EVENTS_PER_SECOND_MIN: f64 = 5e5;
/// One writer's durable append p99 may take this many of the disk's raw fdatasyncs.
const DURABLE_P99_FSYNCS_MAX: f64 = 2.0;

/// One scenario of the durable bench, as `results.json` holds it.
#[derive(Debug, Clone, PartialEq)]
struct DurableResult {
    /// `durable/single/64_writers`, `disk/fdatasync_100B`, ...
    name: String,
    /// `durable`, `memory` or `disk`.
    kind: String,
    /// Measured by a `--quick` run: short windows, rough figures.
    quick: bool,
    /// When the scenario finished.
    finished: Option<SystemTime>,
    /// Calls per second: appends, or write+fdatasync pairs of the disk probes.
    calls_per_second: f64,
    /// Committed events per second (store scenarios).
    events_per_second: Option<f64>,
    /// Bytes written per second (the WAL's, or the disk probe's).
    bytes_per_second: Option<f64>,
    /// Latency per call, in microseconds.
    p50_us: f64,
    p99_us: f64,
    /// fdatasync calls in the window, and events per fdatasync (durable scenarios).
    syncs: Option<u64>,
    events_per_sync: Option<f64>,
}

/// The durable bench's results at `path`; none when the file does not exist.
fn read_durable(path: &Path) -> Result<Vec<DurableResult>> {
    if !path.is_file() {
        return Ok(Vec::new());
    }
    parse_durable(&read_json(path)?)
        .with_context(|| format!("unexpected durable bench output in {}", path.display()))
}

fn parse_durable(results: &Value) -> Result<Vec<DurableResult>> {
    if results["format"] != 1 {
        bail!("format {} where 1 was expected", results["format"]);
    }
    let scenarios = results["scenarios"].as_array().context("no scenarios array")?;
    scenarios
        .iter()
        .map(|s| {
            let name = s["name"].as_str().context("a scenario has no name")?.to_string();
            let number =
                |field: &Value, what: &str| field.as_f64().with_context(|| format!("{name} has no {what}"));
            Ok(DurableResult {
                kind: s["kind"].as_str().with_context(|| format!("{name} has no kind"))?.to_string(),
                quick: s["quick"].as_bool().unwrap_or(false),
                finished: s["finished_unix_ms"]
                    .as_u64()
                    .map(|ms| SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms)),
                calls_per_second: number(&s["calls_per_second"], "calls_per_second")?,
                events_per_second: s["events_per_second"].as_f64(),
                bytes_per_second: s["bytes_per_second"].as_f64(),
                p50_us: number(&s["latency_us"]["p50"], "latency_us.p50")?,
                p99_us: number(&s["latency_us"]["p99"], "latency_us.p99")?,
                syncs: s["syncs"].as_u64(),
                events_per_sync: s["events_per_sync"].as_f64(),
                name,
            })
        })
        .collect()
}

/// One durable-ingestion target, checked.
#[derive(Debug, Clone, PartialEq)]
struct DurableCheck {
    /// What is required.
    target: String,
    /// What was measured, or `no result` when a scenario it needs is missing.
    measured: String,
    /// `None` when a scenario it needs is missing.
    met: Option<bool>,
    /// More figures.
    note: String,
    /// The scenarios it reads.
    inputs: Vec<&'static str>,
}

/// The issue's durable-ingestion targets:
///
/// - 64 concurrent writers of single events reach at least half the in-memory rate of
///   the same benchmark (`durable/single/64_writers` vs `memory/single/64_writers`);
/// - durable batch ingestion of 1,000-event batches reaches 500K events/s (one writer);
/// - one writer's durable append is "no worse than two fsyncs of this disk": its p99
///   is at most 2 × the raw fdatasync **p99** of the same disk in the same run (tail
///   against tail). The note adds the stricter reading, 2 × the raw fdatasync p50.
fn durable_checks(results: &[DurableResult]) -> Vec<DurableCheck> {
    let find = |name: &str| results.iter().find(|r| r.name == name);
    let missing = |target: String, inputs: Vec<&'static str>| DurableCheck {
        target,
        measured: "no result".to_string(),
        met: None,
        note: String::new(),
        inputs,
    };
    let mut checks = Vec::new();

    // Threads blocking on each append, and async tasks as the HTTP server runs them.
    for (durable_name, memory_name) in
        [(DURABLE_64_WRITERS, MEMORY_64_WRITERS), (DURABLE_64_TASKS, MEMORY_64_TASKS)]
    {
        let target =
            format!("{durable_name} >= {:.0}% of {memory_name}", DURABLE_SHARE_OF_MEMORY_MIN * 100.0);
        let inputs = vec![durable_name, memory_name];
        let durable = find(durable_name).and_then(|r| r.events_per_second);
        let memory = find(memory_name).and_then(|r| r.events_per_second).filter(|&m| m > 0.0);
        checks.push(match (durable, memory) {
            (Some(durable), Some(memory)) => {
                let share = durable / memory;
                DurableCheck {
                    target,
                    measured: format!("{:.1}%", share * 100.0),
                    met: Some(share >= DURABLE_SHARE_OF_MEMORY_MIN),
                    note: format!(
                        "{} vs {}",
                        format_events_per_second(durable),
                        format_events_per_second(memory)
                    ),
                    inputs,
                }
            }
            _ => missing(target, inputs),
        });
    }

    let target = format!(
        "{DURABLE_BATCH_1000} {}",
        format_target(Target::EventsPerSecondAtLeast(DURABLE_BATCH_EVENTS_PER_SECOND_MIN))
    );
    let inputs = vec![DURABLE_BATCH_1000];
    checks.push(match find(DURABLE_BATCH_1000) {
        Some(DurableResult { events_per_second: Some(rate), events_per_sync, .. }) => DurableCheck {
            target,
            measured: format_events_per_second(*rate),
            met: Some(*rate >= DURABLE_BATCH_EVENTS_PER_SECOND_MIN),
            note: events_per_sync.map(|e| format!("{e:.0} events/fsync")).unwrap_or_default(),
            inputs,
        },
        _ => missing(target, inputs),
    });

    let target = format!("{DURABLE_1_WRITER} p99 <= {DURABLE_P99_FSYNCS_MAX} × {DISK_FDATASYNC} p99");
    let inputs = vec![DURABLE_1_WRITER, DISK_FDATASYNC];
    checks.push(match (find(DURABLE_1_WRITER), find(DISK_FDATASYNC)) {
        (Some(writer), Some(disk)) => {
            let bound = DURABLE_P99_FSYNCS_MAX * disk.p99_us;
            let strict = DURABLE_P99_FSYNCS_MAX * disk.p50_us;
            DurableCheck {
                target,
                measured: format!(
                    "{} (bound {})",
                    format_microseconds(writer.p99_us),
                    format_microseconds(bound)
                ),
                met: Some(writer.p99_us <= bound),
                note: format!(
                    "vs {DURABLE_P99_FSYNCS_MAX} × raw p50 = {}: {}",
                    format_microseconds(strict),
                    if writer.p99_us <= strict { "met" } else { "missed" }
                ),
                inputs,
            }
        }
        _ => missing(target, inputs),
    });
    checks
}

/// Why a durable figure should be read with care: from a `--quick` run, or older than
/// this run (a filter did not repeat it).
fn durable_note(result: &DurableResult, run_started: Option<SystemTime>) -> String {
    let stale = match (run_started, result.finished) {
        (Some(started), Some(finished)) => finished < started,
        _ => false,
    };
    let mut notes = Vec::new();
    if stale {
        notes.push("stale: not rerun");
    }
    if result.quick {
        notes.push("quick run");
    }
    notes.join(", ")
}

/// The durable bench's figures, then its targets checked.
fn durable_table(results: &[DurableResult], run_started: Option<SystemTime>) -> String {
    let dash = || "-".to_string();
    let header = ["scenario", "events/s", "calls/s", "p50", "p99", "fsyncs", "events/fsync", "MB/s", "note"];
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.events_per_second.map_or_else(dash, format_rate),
                format_rate(r.calls_per_second),
                format_microseconds(r.p50_us),
                format_microseconds(r.p99_us),
                r.syncs.map_or_else(dash, |s| s.to_string()),
                r.events_per_sync.map_or_else(dash, |e| format!("{e:.1}")),
                r.bytes_per_second.map_or_else(dash, |b| format!("{:.1}", b / 1e6)),
                durable_note(r, run_started),
            ]
        })
        .collect();
    let mut out = render(&header, &rows);
    let _ = writeln!(out);

    let checks = durable_checks(results);
    let (mut n_met, mut n_checked) = (0, 0);
    let rows: Vec<Vec<String>> = checks
        .iter()
        .map(|check| {
            n_checked += usize::from(check.met.is_some());
            n_met += usize::from(check.met == Some(true));
            let verdict = match check.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "",
            };
            let mut notes: Vec<String> = Vec::new();
            if !check.note.is_empty() {
                notes.push(check.note.clone());
            }
            let flags: Vec<String> = check
                .inputs
                .iter()
                .filter_map(|name| results.iter().find(|r| r.name == *name))
                .map(|r| durable_note(r, run_started))
                .filter(|note| !note.is_empty())
                .collect();
            if let Some(flag) = flags.first() {
                notes.push(flag.clone());
            }
            vec![check.target.clone(), check.measured.clone(), verdict.to_string(), notes.join("; ")]
        })
        .collect();
    out.push_str(&render(&["durable target", "measured", "verdict", "note"], &rows));
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{n_met} of {n_checked} durable targets met. Latency: the p99 of one writer's appends against {DURABLE_P99_FSYNCS_MAX} × the p99 of"
    );
    let _ =
        writeln!(out, "the disk's raw append+fdatasync (tail against tail); the note holds the p50 reading.");
    out
}

fn format_target(target: Target) -> String {
    // Targets are round numbers: print them as such (`>= 1M events/s`, `< 100 µs`).
    match target {
        Target::EventsPerSecondAtLeast(minimum) if minimum >= 1e6 => {
            format!(">= {}M events/s", minimum / 1e6)
        }
        Target::EventsPerSecondAtLeast(minimum) => format!(">= {}K events/s", minimum / 1e3),
        Target::MicrosecondsBelow(maximum) if maximum >= 1_000.0 => format!("< {} ms", maximum / 1_000.0),
        Target::MicrosecondsBelow(maximum) => format!("< {maximum} µs"),
    }
}

fn format_events_per_second(events_per_second: f64) -> String {
    if events_per_second >= 1e6 {
        format!("{:.2}M events/s", events_per_second / 1e6)
    } else if events_per_second >= 1e3 {
        format!("{:.0}K events/s", events_per_second / 1e3)
    } else {
        format!("{events_per_second:.0} events/s")
    }
}

fn format_microseconds(microseconds: f64) -> String {
    if microseconds >= 1_000.0 {
        format!("{:.2} ms", microseconds / 1_000.0)
    } else if microseconds >= 100.0 {
        format!("{microseconds:.0} µs")
    } else if microseconds >= 1.0 {
        format!("{microseconds:.2} µs")
    } else {
        format!("{microseconds:.3} µs")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn result(id: &str, median_ns: f64, elements: Option<u64>) -> BenchResult {
        BenchResult { id: id.to_string(), median_ns, elements, modified: None }
    }

    #[test]
    fn parses_criterion_output() {
        let benchmark = json!({
            "group_id": "batch_ingestion", "function_id": "append_batch", "value_str": "100",
            "throughput": {"Elements": 100}, "full_id": "batch_ingestion/append_batch/100",
            "directory_name": "batch_ingestion/append_batch/100", "title": "batch_ingestion/append_batch/100"
        });
        let estimates = json!({
            "mean": {"point_estimate": 60000.0}, "median": {"point_estimate": 50000.0},
            "slope": null
        });
        let parsed = parse_result(&benchmark, &estimates, None).unwrap();
        assert_eq!(parsed, result("batch_ingestion/append_batch/100", 50_000.0, Some(100)));
        assert_eq!(parsed.events_per_second(), 2e6);
        assert_eq!(parsed.figure(), "2.00M events/s");

        let benchmark = json!({"full_id": "state/snapshot/100_events", "throughput": null});
        let parsed = parse_result(&benchmark, &estimates, None).unwrap();
        assert_eq!(parsed.elements, None);
        assert_eq!(parsed.figure(), "50.00 µs");
        assert!(parse_result(&json!({}), &estimates, None).is_err());
    }

    #[test]
    fn targets_met_and_missed() {
        let check = |r: BenchResult, seed: Option<bool>, issue: Option<bool>| {
            let targets = targets_of(&r.id);
            assert_eq!(targets.seed.map(|t| r.meets(t)), seed, "{r:?} seed");
            assert_eq!(targets.issue.map(|t| r.meets(t)), issue, "{r:?} issue");
        };
        check(result("ingestion/single_event", 900.0, Some(1)), Some(true), Some(true));
        check(result("ingestion/single_event", 1_100.0, Some(1)), Some(false), Some(false));
        check(result("concurrent_ingestion/100_threads", 0.15e9, Some(100_000)), Some(true), Some(true));
        check(result("queries/entity/10_events", 50_000.0, None), Some(true), Some(false));
        check(result("state/replay/100_events", 99_000.0, None), Some(true), Some(true));
        check(result("state/snapshot/100_events", 5_000.0, None), None, Some(false));
        check(result("queries/event_type/limit/10", 1.0, None), None, None);
    }

    /// A scenario as the durable bench writes it into results.json.
    fn durable_json(name: &str, kind: &str, events_per_second: Option<f64>, p50: f64, p99: f64) -> Value {
        json!({
            "name": name, "kind": kind, "writers": 1, "events_per_call": 1, "quick": false,
            "finished_unix_ms": 1_000, "seconds": 2.5, "calls": 100, "calls_per_second": 40.0,
            "events": 100, "events_per_second": events_per_second, "bytes": null, "bytes_per_second": null,
            "syncs": if kind == "durable" { json!(50) } else { Value::Null },
            "synced_events": if kind == "durable" { json!(100) } else { Value::Null },
            "events_per_sync": if kind == "durable" { json!(2.0) } else { Value::Null },
            "latency_us": {"p50": p50, "p90": p99, "p99": p99, "p999": p99, "max": p99, "mean": p50}
        })
    }

    #[test]
    fn durable_results_parse_and_meet_targets() {
        let scenarios = vec![
            durable_json(DISK_FDATASYNC, "disk", None, 200.0, 300.0),
            durable_json(DURABLE_1_WRITER, "durable", Some(4_000.0), 210.0, 599.0),
            durable_json(DURABLE_64_WRITERS, "durable", Some(200_000.0), 500.0, 1_000.0),
            durable_json(MEMORY_64_WRITERS, "memory", Some(400_000.0), 10.0, 100.0),
            durable_json(DURABLE_BATCH_1000, "durable", Some(499_000.0), 2_000.0, 3_000.0),
            durable_json(DURABLE_64_TASKS, "durable", Some(100_000.0), 600.0, 1_000.0),
            durable_json(MEMORY_64_TASKS, "memory", Some(400_000.0), 2.0, 50.0),
        ];
        let parsed = parse_durable(&json!({"format": 1, "scenarios": scenarios})).unwrap();
        assert_eq!(parsed.len(), 7);
        let writer = &parsed[1];
        assert_eq!((writer.name.as_str(), writer.kind.as_str()), (DURABLE_1_WRITER, "durable"));
        assert_eq!(
            (writer.p50_us, writer.p99_us, writer.syncs, writer.events_per_sync),
            (210.0, 599.0, Some(50), Some(2.0))
        );
        assert_eq!(writer.finished, Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1)));
        assert_eq!(parsed[0].events_per_second, None);

        let checks = durable_checks(&parsed);
        let verdicts: Vec<Option<bool>> = checks.iter().map(|c| c.met).collect();
        // 200K is exactly 50% of 400K; 100K is 25% of 400K; 499K < 500K;
        // 599 µs <= 2 × 300 µs (but > 2 × 200 µs).
        assert_eq!(verdicts, [Some(true), Some(false), Some(false), Some(true)]);
        assert_eq!(checks[0].measured, "50.0%");
        assert_eq!(checks[1].measured, "25.0%");
        assert!(checks[3].note.contains("400 µs: missed"), "{checks:?}");

        // A missing scenario is reported as such, not as met or missed.
        let checks = durable_checks(&parsed[1..]);
        assert_eq!(checks[3].met, None);
        assert_eq!(checks[3].measured, "no result");

        let text = durable_table(&parsed, Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(2)));
        assert!(text.contains("2 of 4 durable targets met."), "{text}");
        assert!(text.contains("stale: not rerun"), "{text}");
        assert!(text.contains(">= 500K events/s") && !text.contains(">= >="), "{text}");

        assert!(parse_durable(&json!({"format": 2, "scenarios": []})).is_err());
        assert!(parse_durable(&json!({"format": 1, "scenarios": [{"name": "x"}]})).is_err());
    }

    #[test]
    fn bench_plans() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(plan(&[]).unwrap(), Plan::All { bench_args: vec![] });
        assert_eq!(plan(&args(&["--", "queries"])).unwrap(), Plan::All { bench_args: args(&["queries"]) });
        assert_eq!(plan(&args(&["--report"])).unwrap(), Plan::Report);
        assert!(plan(&args(&["--report", "x"])).is_err());
        assert_eq!(
            plan(&args(&["durable", "--quick", "disk"])).unwrap(),
            Plan::Durable { bench_args: args(&["--quick", "disk"]) }
        );
        assert_eq!(
            plan(&args(&["durable", "--", "--quick"])).unwrap(),
            Plan::Durable { bench_args: args(&["--quick"]) }
        );
        assert_eq!(
            plan(&args(&["--bench", "queries"])).unwrap(),
            Plan::Cargo { cargo_args: args(&["--bench", "queries"]) }
        );
        assert_eq!(
            bench_command(&args(&["durable"]), &args(&["--quick"])),
            args(&["bench", "-p", "allsource-benches", "--bench", "durable", "--", "--quick"])
        );
        assert_eq!(bench_command(&[], &[]), args(&["bench", "-p", "allsource-benches"]));
    }

    #[test]
    fn table_lists_missing_targets() {
        let text = table(&[result("state/snapshot/100_events", 400.0, None)], None);
        assert!(text.contains("state/snapshot/100_events"), "{text}");
        assert!(text.contains("0.400 µs"), "{text}");
        assert!(text.contains("ingestion/single_event") && text.contains("no result"), "{text}");
        assert!(text.contains("< 5 µs"), "{text}");
        assert!(text.contains("1 of 1 targets met."), "{text}");
        assert_eq!(format_target(Target::EventsPerSecondAtLeast(5e5)), ">= 500K events/s");
        assert_eq!(format_target(Target::EventsPerSecondAtLeast(1e6)), ">= 1M events/s");
        assert_eq!(format_target(Target::MicrosecondsBelow(1_000.0)), "< 1 ms");
    }
}
