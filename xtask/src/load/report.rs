//! What a load run found: one row per scenario, the targets checked against
//! them, printed as tables and saved as JSON.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::args::Options;
use super::client::Summary;
use super::server_view::ServerView;
use crate::text::{format_rate, render};

/// The rows' names, as the table and the JSON file show them.
pub const BASELINE: &str = "baseline/append";
/// Single-event appends.
pub const APPEND: &str = "append";
/// 100-event batch appends.
pub const BATCH: &str = "batch_100";
/// Entity queries.
pub const ENTITY_QUERY: &str = "entity_query";
/// State reads.
pub const STATE: &str = "state";
/// Snapshot reads.
pub const SNAPSHOT: &str = "snapshot";
/// Type query, `limit=10`, on the rare type.
pub const TYPE_QUERY_RARE: &str = "type_query/rare";
/// Type query, `limit=10`, on the common type.
pub const TYPE_QUERY_COMMON: &str = "type_query/common";
/// A subscriber's append-to-delivery delay with nothing else going on.
pub const SUBSCRIBE_IDLE: &str = "subscribe/idle";
/// The same while other connections append.
pub const SUBSCRIBE_LOADED: &str = "subscribe/under_appends";

/// Durable single appends must reach this share of the baseline's requests/s.
pub const APPEND_SHARE_OF_BASELINE_MIN: f64 = 0.5;
/// Batch ingestion over HTTP, events per second.
pub const BATCH_EVENTS_PER_SECOND_MIN: f64 = 300_000.0;
/// Entity queries, state and snapshot reads, requests per second, on 1M events.
pub const READS_PER_SECOND_MIN: f64 = 50_000.0;
/// The store size the read target is stated for.
pub const READS_TARGET_EVENTS: u64 = 1_000_000;
/// "Independent of the type's size": the two type queries' requests/s within this factor.
pub const TYPE_QUERY_RATIO_MAX: f64 = 1.5;

/// What one scenario measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// Successful requests (or delivered probes) in the measured window.
    pub calls: u64,
    /// The window's length.
    pub seconds: f64,
    /// Events per request, for appends.
    pub events_per_call: Option<u64>,
    /// Non-2xx responses.
    pub errors: u64,
    /// The first of them.
    pub first_error: Option<String>,
    /// Latency (for subscriptions: append → delivered).
    pub latency: Summary,
    /// What else to know about the figure.
    pub note: String,
    /// CPU time the server and the load client used over the scenario (warm-up
    /// included), in cores: 1.0 is one core busy the whole time.
    pub cpu: Option<CpuShare>,
    /// What the server's own metrics say of the same window (append scenarios).
    pub server: Option<ServerView>,
}

/// CPU used by each side of a scenario, in cores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuShare {
    /// The server process.
    pub server_cores: f64,
    /// This process (the load client).
    pub client_cores: f64,
    /// Every other process on the machine: what the two did not get.
    pub other_cores: f64,
}

impl Measured {
    /// Requests per second.
    pub fn calls_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.calls as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// Events per second, for appends.
    pub fn events_per_second(&self) -> Option<f64> {
        self.events_per_call.map(|n| self.calls_per_second() * n as f64)
    }
}

/// How a scenario ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// It ran and measured.
    Measured(Measured),
    /// It did not run, for the reason given (e.g. the endpoint is missing).
    Skipped(String),
    /// It could not complete.
    Failed(String),
}

/// One scenario's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// One of the names above.
    pub name: String,
    /// What happened.
    pub outcome: Outcome,
}

impl Row {
    fn measured(&self) -> Option<&Measured> {
        match &self.outcome {
            Outcome::Measured(measured) if measured.calls > 0 => Some(measured),
            _ => None,
        }
    }
}

/// How the store was filled before the read scenarios.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preload {
    /// Events appended.
    pub n_events: u64,
    /// How long it took.
    pub seconds: f64,
    /// Over how many connections.
    pub connections: usize,
    /// Events per batch.
    pub batch_events: u64,
}

/// A target checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// The target, as a sentence.
    pub target: String,
    /// The figure it is checked on.
    pub measured: String,
    /// Met, missed, or not measured (`None`).
    pub met: Option<bool>,
    /// Context.
    pub note: String,
}

/// The targets, checked against `rows`; `preload` tells the store's size. A
/// target whose scenarios were not run is left out; one whose scenario failed or was
/// skipped shows as "no result".
pub fn checks(rows: &[Row], preload: Option<&Preload>) -> Vec<Check> {
    let ran = |name: &str| rows.iter().any(|r| r.name == name);
    all_checks(rows, preload)
        .into_iter()
        .filter(|(_, inputs)| inputs.iter().any(|name| ran(name)))
        .map(|(check, _)| check)
        .collect()
}

/// Every target with the rows it reads.
fn all_checks(rows: &[Row], preload: Option<&Preload>) -> Vec<(Check, Vec<&'static str>)> {
    let find = |name: &str| rows.iter().find(|r| r.name == name).and_then(Row::measured);
    let no_result = |target: String, note: &str| Check {
        target,
        measured: "no result".to_string(),
        met: None,
        note: note.to_string(),
    };
    let mut checks = Vec::new();

    let target =
        format!("{APPEND} req/s >= {:.0}% of {BASELINE} req/s", APPEND_SHARE_OF_BASELINE_MIN * 100.0);
    checks.push((
        match (find(APPEND), find(BASELINE)) {
            (Some(append), Some(baseline)) => {
                let share = append.calls_per_second() / baseline.calls_per_second();
                Check {
                    target,
                    measured: format!("{:.1}%", share * 100.0),
                    met: Some(share >= APPEND_SHARE_OF_BASELINE_MIN),
                    note: format!(
                        "{} vs {} req/s",
                        format_rate(append.calls_per_second()),
                        format_rate(baseline.calls_per_second())
                    ),
                }
            }
            (Some(_), None) => no_result(target, "no baseline in this run: add --baseline"),
            _ => no_result(target, ""),
        },
        vec![APPEND],
    ));

    let target = format!("{BATCH} >= {} events/s", format_rate(BATCH_EVENTS_PER_SECOND_MIN));
    checks.push((
        match find(BATCH).and_then(|b| b.events_per_second()) {
            Some(rate) => Check {
                target,
                measured: format!("{} events/s", format_rate(rate)),
                met: Some(rate >= BATCH_EVENTS_PER_SECOND_MIN),
                note: String::new(),
            },
            None => no_result(target, ""),
        },
        vec![BATCH],
    ));

    let store_note = match preload {
        Some(p) if p.n_events < READS_TARGET_EVENTS => {
            format!(
                "on {} events; the target is for {}",
                format_count(p.n_events),
                format_count(READS_TARGET_EVENTS)
            )
        }
        Some(p) => format!("on {} events", format_count(p.n_events)),
        None => String::new(),
    };
    for name in [ENTITY_QUERY, STATE, SNAPSHOT] {
        let target = format!("{name} >= {} req/s", format_rate(READS_PER_SECOND_MIN));
        checks.push((
            match find(name) {
                Some(read) => Check {
                    target,
                    measured: format!("{} req/s", format_rate(read.calls_per_second())),
                    met: Some(read.calls_per_second() >= READS_PER_SECOND_MIN),
                    note: store_note.clone(),
                },
                None => no_result(target, ""),
            },
            vec![name],
        ));
    }

    let target = format!("{TYPE_QUERY_COMMON} req/s within {TYPE_QUERY_RATIO_MAX}x of {TYPE_QUERY_RARE}");
    checks.push((
        match (find(TYPE_QUERY_COMMON), find(TYPE_QUERY_RARE)) {
            (Some(common), Some(rare)) => {
                let ratio = common.calls_per_second() / rare.calls_per_second();
                Check {
                    target,
                    measured: format!("{ratio:.2}x"),
                    met: Some((1.0 / TYPE_QUERY_RATIO_MAX..=TYPE_QUERY_RATIO_MAX).contains(&ratio)),
                    note: format!(
                        "p50 {} vs {}",
                        format_microseconds(common.latency.p50_us),
                        format_microseconds(rare.latency.p50_us)
                    ),
                }
            }
            _ => no_result(target, ""),
        },
        vec![TYPE_QUERY_COMMON, TYPE_QUERY_RARE],
    ));
    checks
}

/// The tables: every scenario, then the targets.
pub fn render_report(rows: &[Row], preload: Option<&Preload>, options: &Options, n_cores: usize) -> String {
    let mut out = String::new();
    if let Some(p) = preload {
        let _ = writeln!(
            out,
            "Pre-loaded {} events in {:.1} s ({} events/s; {}-event batches over {} connections).",
            format_count(p.n_events),
            p.seconds,
            format_rate(p.n_events as f64 / p.seconds.max(1e-9)),
            p.batch_events,
            p.connections
        );
        let _ = writeln!(out);
    }
    let dash = || "-".to_string();
    let header =
        ["scenario", "req/s", "events/s", "p50", "p99", "p999", "errors", "cpu srv/cli/other", "note"];
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|row| match &row.outcome {
            Outcome::Measured(m) => {
                let mut notes = Vec::new();
                if !m.note.is_empty() {
                    notes.push(m.note.clone());
                }
                if let Some(error) = &m.first_error {
                    notes.push(format!("first error: {}", truncate(error, 120)));
                }
                vec![
                    row.name.clone(),
                    format_rate(m.calls_per_second()),
                    m.events_per_second().map_or_else(dash, format_rate),
                    format_microseconds(m.latency.p50_us),
                    format_microseconds(m.latency.p99_us),
                    format_microseconds(m.latency.p999_us),
                    m.errors.to_string(),
                    m.cpu.map_or_else(dash, |c| {
                        format!("{:.2}/{:.2}/{:.2}", c.server_cores, c.client_cores, c.other_cores)
                    }),
                    notes.join("; "),
                ]
            }
            Outcome::Skipped(reason) => {
                let mut cells = vec![row.name.clone()];
                cells.extend(std::iter::repeat_with(dash).take(7));
                cells.push(format!("skipped: {reason}"));
                cells
            }
            Outcome::Failed(reason) => {
                let mut cells = vec![row.name.clone()];
                cells.extend(std::iter::repeat_with(dash).take(7));
                cells.push(format!("FAILED: {}", truncate(reason, 200)));
                cells
            }
        })
        .collect();
    out.push_str(&render(&header, &table));
    let _ = writeln!(out);

    let views: Vec<Vec<String>> = rows
        .iter()
        .filter_map(|row| Some((row, row.measured()?.server?)))
        .map(|(row, view)| {
            vec![
                row.name.clone(),
                format_rate(view.syncs_per_second),
                format_microseconds(view.sync_mean_us),
                format!("{:.1}", view.events_per_sync),
                format_microseconds(view.append_mean_us),
            ]
        })
        .collect();
    if !views.is_empty() {
        let header = ["in the server", "syncs/s", "sync mean", "events/sync", "append mean"];
        out.push_str(&render(&header, &views));
        let _ = writeln!(
            out,
            "From the server's /metrics over the same window: the WAL's fdatasync calls, and an append's\n\
             time from the server's request guard to its response. The rest of the client's latency is\n\
             spent outside the server: in the client, the sockets and waiting for a core."
        );
        let _ = writeln!(out);
    }

    let checks = checks(rows, preload);
    let n_checked = checks.iter().filter(|c| c.met.is_some()).count();
    let n_met = checks.iter().filter(|c| c.met == Some(true)).count();
    let table: Vec<Vec<String>> = checks
        .iter()
        .map(|c| {
            let verdict = match c.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "",
            };
            vec![c.target.clone(), c.measured.clone(), verdict.to_string(), c.note.clone()]
        })
        .collect();
    out.push_str(&render(&["target (issue 5)", "measured", "verdict", "note"], &table));
    let _ = writeln!(out);
    let _ = writeln!(out, "{n_met} of {n_checked} targets met.");
    let _ = writeln!(
        out,
        "{} keep-alive connections per scenario, {:.1} s measured each; server --sync {}, {} server worker threads,",
        options.connections,
        options.duration.as_secs_f64(),
        options.sync.name(),
        options.server_threads
    );
    let _ = writeln!(
        out,
        "{} client worker threads. The load client and the server share this machine's {n_cores} cores,",
        options.client_threads
    );
    let _ = writeln!(
        out,
        "so every figure is what both together reach, not the server alone. `cpu srv/cli/other`: the cores\n\
         the server, the client and every other process used during the scenario (other > 0: a busy machine)."
    );
    out
}

/// The run as JSON, for `target/load/results.json`.
pub fn to_json(
    rows: &[Row],
    preload: Option<&Preload>,
    options: &Options,
    n_cores: usize,
    finished_unix_ms: u128,
) -> Value {
    let scenarios: Vec<Value> = rows
        .iter()
        .map(|row| match &row.outcome {
            Outcome::Measured(m) => json!({
                "name": row.name, "status": "measured", "calls": m.calls, "seconds": m.seconds,
                "calls_per_second": m.calls_per_second(), "events_per_call": m.events_per_call,
                "events_per_second": m.events_per_second(), "errors": m.errors,
                "first_error": m.first_error, "note": m.note,
                "cpu_cores": m.cpu.map(|c| json!({
                    "server": c.server_cores, "client": c.client_cores, "other": c.other_cores,
                })),
                "server": m.server.map(|v| json!({
                    "syncs_per_second": v.syncs_per_second, "sync_mean_us": v.sync_mean_us,
                    "events_per_sync": v.events_per_sync, "append_mean_us": v.append_mean_us,
                })),
                "latency_us": {
                    "p50": m.latency.p50_us, "p99": m.latency.p99_us, "p999": m.latency.p999_us,
                    "max": m.latency.max_us, "mean": m.latency.mean_us,
                },
            }),
            Outcome::Skipped(reason) => json!({"name": row.name, "status": "skipped", "reason": reason}),
            Outcome::Failed(reason) => json!({"name": row.name, "status": "failed", "reason": reason}),
        })
        .collect();
    let checks: Vec<Value> = checks(rows, preload)
        .into_iter()
        .map(|c| json!({"target": c.target, "measured": c.measured, "met": c.met, "note": c.note}))
        .collect();
    json!({
        "format": 1,
        "finished_unix_ms": finished_unix_ms as u64,
        "cores": n_cores,
        "connections": options.connections,
        "duration_seconds": options.duration.as_secs_f64(),
        "server_threads": options.server_threads,
        "client_threads": options.client_threads,
        "sync": options.sync.name(),
        "preload": preload.map(|p| json!({
            "events": p.n_events, "seconds": p.seconds, "connections": p.connections,
            "batch_events": p.batch_events, "events_per_second": p.n_events as f64 / p.seconds.max(1e-9),
        })),
        "scenarios": scenarios,
        "checks": checks,
    })
}

/// `1M`, `100K`, `1,500`: a count, compact.
fn format_count(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(100_000) {
        format!("{}M", n as f64 / 1e6)
    } else if n >= 1_000 && n.is_multiple_of(1_000) {
        format!("{}K", n / 1_000)
    } else {
        n.to_string()
    }
}

fn format_microseconds(microseconds: f64) -> String {
    if microseconds >= 1_000.0 {
        format!("{:.2} ms", microseconds / 1_000.0)
    } else if microseconds >= 100.0 {
        format!("{microseconds:.0} µs")
    } else {
        format!("{microseconds:.1} µs")
    }
}

fn truncate(text: &str, chars_max: usize) -> String {
    if text.chars().count() <= chars_max {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(chars_max).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::args::{Scenario, SyncMode};
    use super::*;

    fn measured(name: &str, calls: u64, events_per_call: Option<u64>, p50_us: f64) -> Row {
        let latency =
            Summary { p50_us, p99_us: p50_us * 2.0, p999_us: p50_us * 3.0, max_us: 1e4, mean_us: p50_us };
        Row {
            name: name.to_string(),
            outcome: Outcome::Measured(Measured {
                calls,
                seconds: 10.0,
                events_per_call,
                errors: 0,
                first_error: None,
                latency,
                note: String::new(),
                cpu: Some(CpuShare { server_cores: 1.25, client_cores: 0.5, other_cores: 0.0 }),
                server: (name == APPEND).then_some(ServerView {
                    syncs_per_second: 2_500.0,
                    sync_mean_us: 280.0,
                    events_per_sync: 16.0,
                    append_mean_us: 900.0,
                }),
            }),
        }
    }

    fn options() -> Options {
        Options {
            connections: 64,
            duration: Duration::from_secs(10),
            n_events: 100_000,
            scenarios: vec![Scenario::Append],
            server_threads: 2,
            client_threads: 2,
            sync: SyncMode::Always,
            build: true,
            binary: None,
        }
    }

    #[test]
    fn targets_met_missed_and_missing() {
        let preload = Preload { n_events: 100_000, seconds: 0.5, connections: 64, batch_events: 1_000 };
        let rows = vec![
            measured(BASELINE, 800_000, None, 700.0),
            // 40K req/s is exactly 50% of 80K.
            measured(APPEND, 400_000, None, 1_500.0),
            // 2,990 × 100 events / 10 s = 29.9K events/s: missed.
            measured(BATCH, 2_990, Some(100), 20_000.0),
            measured(ENTITY_QUERY, 500_000, None, 1_000.0),
            measured(STATE, 499_999, None, 1_000.0),
            Row { name: SNAPSHOT.to_string(), outcome: Outcome::Failed("the server died".to_string()) },
            measured(TYPE_QUERY_RARE, 600_000, None, 1_000.0),
            measured(TYPE_QUERY_COMMON, 390_000, None, 1_600.0),
            Row {
                name: SUBSCRIBE_IDLE.to_string(),
                outcome: Outcome::Skipped("endpoint missing (404)".into()),
            },
        ];
        let checks = checks(&rows, Some(&preload));
        let verdicts: Vec<Option<bool>> = checks.iter().map(|c| c.met).collect();
        assert_eq!(
            verdicts,
            [Some(true), Some(false), Some(true), Some(false), None, Some(false)],
            "{checks:?}"
        );
        assert_eq!(checks[0].measured, "50.0%");
        assert_eq!(checks[1].measured, "30K events/s");
        assert!(checks[2].note.contains("on 100K events; the target is for 1M"), "{checks:?}");
        assert_eq!(checks[5].measured, "0.65x");

        // A target whose scenario did not run is left out.
        let only_reads: Vec<Row> =
            rows.iter().filter(|r| r.name.starts_with("type_query")).cloned().collect();
        let checks_of_reads = super::checks(&only_reads, Some(&preload));
        assert_eq!(checks_of_reads.len(), 1, "{checks_of_reads:?}");
        assert_eq!(checks_of_reads[0].met, Some(false));

        // Without a baseline the share cannot be computed, and the table says how to get it.
        let checks = super::checks(&rows[1..], Some(&preload));
        assert_eq!(checks[0].met, None);
        assert!(checks[0].note.contains("--baseline"), "{checks:?}");

        let text = render_report(&rows, Some(&preload), &options(), 2);
        assert!(text.contains("Pre-loaded 100K events in 0.5 s (200K events/s"), "{text}");
        assert!(text.contains("skipped: endpoint missing (404)"), "{text}");
        assert!(text.contains("FAILED: the server died"), "{text}");
        assert!(text.contains("2 of 5 targets met."), "{text}");
        assert!(text.contains("share this machine's 2 cores"), "{text}");
        assert!(text.contains("1.25/0.50/0.00"), "{text}");
        let server_line = text.lines().find(|line| line.starts_with("append ") && line.contains("280 µs"));
        assert!(server_line.is_some_and(|line| line.contains("2.5K") && line.contains("16.0")), "{text}");
        assert!(text.contains("900 µs"), "{text}");

        let saved = to_json(&rows, Some(&preload), &options(), 2, 1_000);
        assert_eq!(saved["scenarios"][1]["calls_per_second"], 40_000.0);
        assert_eq!(saved["scenarios"][2]["events_per_second"], 29_900.0);
        assert_eq!(saved["scenarios"][5]["status"], "failed");
        assert_eq!(saved["scenarios"][0]["cpu_cores"]["server"], 1.25);
        assert_eq!(saved["scenarios"][1]["server"]["events_per_sync"], 16.0);
        assert_eq!(saved["scenarios"][0]["server"], Value::Null);
        assert_eq!(saved["preload"]["events_per_second"], 200_000.0);
        assert_eq!(saved["checks"].as_array().unwrap().len(), 6);
    }

    #[test]
    fn compact_figures() {
        assert_eq!(format_count(1_000_000), "1M");
        assert_eq!(format_count(2_500_000), "2.5M");
        assert_eq!(format_count(100_000), "100K");
        assert_eq!(format_count(1_234), "1234");
        assert_eq!(format_microseconds(1_500.0), "1.50 ms");
        assert_eq!(format_microseconds(150.0), "150 µs");
        assert_eq!(format_microseconds(15.25), "15.2 µs");
        assert_eq!(truncate("abcdef", 3), "abc…");
    }
}
