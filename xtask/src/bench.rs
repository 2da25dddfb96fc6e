//! `cargo xtask bench`: runs the criterion suites of `allsource-benches`, then reads the
//! results criterion saved and prints them against the targets.
//!
//! Criterion saves, for every benchmark, `<criterion dir>/<id>/new/benchmark.json` (its
//! id and throughput) and `new/estimates.json` (statistics of the time per iteration,
//! in nanoseconds). The figure we report is the **median** time per iteration: on a
//! shared 2-core machine it is the estimate least moved by the odd descheduled sample.
//! A benchmark with an elements throughput is reported in events per second
//! (elements per iteration / median time), any other in microseconds per operation.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use serde_json::Value;

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

/// `cargo xtask bench [--report] [ARGS..]`.
pub fn run(args: &[String]) -> Result<()> {
    let (report_only, cargo_args) = match args.split_first() {
        Some((first, rest)) if first == "--report" => (true, rest),
        _ => (false, args),
    };
    if report_only && !cargo_args.is_empty() {
        bail!("`cargo xtask bench --report` takes no other arguments, got {cargo_args:?}");
    }
    let started = SystemTime::now();
    if !report_only {
        let mut command = vec!["bench".to_string(), "-p".to_string(), "allsource-benches".to_string()];
        command.extend(cargo_args.iter().cloned());
        run_cargo(command)?;
    }
    let directory = criterion_directory()?;
    let results = read_results(&directory)?;
    if results.is_empty() {
        bail!("no criterion results under {}; run `cargo xtask bench` first", directory.display());
    }
    println!();
    println!("Results from {} (median time per iteration):", directory.display());
    println!();
    print!("{}", table(&results, (!report_only).then_some(started)));
    Ok(())
}

/// Criterion's output folder: `$CRITERION_HOME`, else `<target dir>/criterion`.
fn criterion_directory() -> Result<PathBuf> {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return Ok(PathBuf::from(home));
    }
    Ok(target_directory(&cargo_metadata()?)?.join("criterion"))
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

    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell}{}", " ".repeat(width - cell.chars().count())))
            .collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(&header.map(String::from));
    line(&widths.map(|w| "-".repeat(w)));
    for row in &rows {
        line(row);
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "{n_met} of {n_targets} targets met.");
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
    if microseconds >= 100.0 {
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
