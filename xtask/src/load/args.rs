//! `cargo xtask load`'s command line: which scenarios, how many connections, for how
//! long, on how many events; each value checked against a bound.

use std::time::Duration;

use anyhow::{bail, Context, Result};

/// What `cargo xtask load --help` prints.
pub const USAGE: &str = "\
usage: cargo xtask load [OPTIONS]

Starts the release binary (cargo build --release -p allsource-server) on a free
loopback port with a fresh data directory and measures it over HTTP.

options:
  --connections N     keep-alive connections, each a closed loop (default 64)
  --duration SECS     measured seconds per scenario, after a short warm-up (default 10)
  --events N          events pre-loaded before the read scenarios (default 1000000;
                      `100000`, `100K` and `1M` are accepted)
  --scenarios LIST    comma-separated, from: baseline, append, batch, entity_query, state,
                      snapshot, type_query, subscribe (default: all but baseline)
  --baseline          also run the same client against a trivial axum handler in a process
                      of its own, and report single appends as a share of its requests/s
  --threads N         the servers' tokio worker threads (default: the number of cores)
  --client-threads N  the load client's tokio worker threads (default: the number of cores)
  --sync MODE         the server's --sync: always (default, durable) or none
  --no-build          use the release binary already in target/ instead of building it
  --binary PATH       measure this server binary instead (no build): for A/B runs of two builds
";

/// The bounds on each option, so that a typo cannot start an hour-long run.
const CONNECTIONS_MAX: usize = 4_096;
const DURATION_SECONDS_MAX: f64 = 3_600.0;
const DURATION_SECONDS_MIN: f64 = 0.1;
const EVENTS_MAX: u64 = 100_000_000;
const THREADS_MAX: usize = 256;

/// One group of measurements, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    /// Single appends against the trivial axum handler.
    Baseline,
    /// The read scenarios on the pre-loaded store come first: they need it untouched.
    EntityQuery,
    /// `GET /api/v1/entities/{id}/state`.
    State,
    /// `GET /api/v1/entities/{id}/snapshot`.
    Snapshot,
    /// `GET /api/v1/events/query?event_type=..&limit=10` on a small and a large type.
    TypeQuery,
    /// `POST /api/v1/events`, one event each.
    Append,
    /// `POST /api/v1/events/batch`, 100 events each.
    Batch,
    /// A subscriber's delay from append to delivery, idle and under append load.
    Subscribe,
}

impl Scenario {
    /// Every scenario, in the order they run.
    pub const ALL: [Scenario; 8] = [
        Scenario::Baseline,
        Scenario::EntityQuery,
        Scenario::State,
        Scenario::Snapshot,
        Scenario::TypeQuery,
        Scenario::Append,
        Scenario::Batch,
        Scenario::Subscribe,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Baseline => "baseline",
            Scenario::EntityQuery => "entity_query",
            Scenario::State => "state",
            Scenario::Snapshot => "snapshot",
            Scenario::TypeQuery => "type_query",
            Scenario::Append => "append",
            Scenario::Batch => "batch",
            Scenario::Subscribe => "subscribe",
        }
    }

    /// Whether it reads the pre-loaded store.
    pub fn needs_preload(self) -> bool {
        matches!(self, Scenario::EntityQuery | Scenario::State | Scenario::Snapshot | Scenario::TypeQuery)
    }

    fn parse(name: &str) -> Result<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name).with_context(|| {
            let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
            format!("unknown scenario `{name}`; the scenarios are {}", names.join(", "))
        })
    }
}

/// The server's `--sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// fdatasync before the acknowledgement: the durable default.
    Always,
    /// Acknowledged once written to the OS.
    None,
}

impl SyncMode {
    /// The value of the server's `--sync` flag.
    pub fn name(self) -> &'static str {
        match self {
            SyncMode::Always => "always",
            SyncMode::None => "none",
        }
    }
}

/// A load run, as asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Connections per scenario.
    pub connections: usize,
    /// How long each scenario is measured (after its warm-up).
    pub duration: Duration,
    /// Events pre-loaded for the read scenarios.
    pub n_events: u64,
    /// The scenarios to run, in running order, without repeats.
    pub scenarios: Vec<Scenario>,
    /// Worker threads of the server under test and of the baseline server.
    pub server_threads: usize,
    /// Worker threads of the load client's runtime.
    pub client_threads: usize,
    /// The server's `--sync`.
    pub sync: SyncMode,
    /// Build the release binary first (not with `--no-build` or `--binary`).
    pub build: bool,
    /// The server binary to measure instead of the workspace's release build.
    pub binary: Option<std::path::PathBuf>,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Print [`USAGE`].
    Help,
    /// Run the load.
    Run(Options),
}

/// The number of cores this process may use (1 if unknown).
pub fn n_cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Parses `cargo xtask load`'s arguments; `--flag value` and `--flag=value` both work.
pub fn parse(args: &[String]) -> Result<Command> {
    let cores = n_cores();
    let mut options = Options {
        connections: 64,
        duration: Duration::from_secs(10),
        n_events: 1_000_000,
        scenarios: Scenario::ALL.into_iter().filter(|s| *s != Scenario::Baseline).collect(),
        server_threads: cores,
        client_threads: cores,
        sync: SyncMode::Always,
        build: true,
        binary: None,
    };
    let mut baseline = false;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if arg.starts_with("--") => (flag, Some(value.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || -> Result<String> {
            match &inline {
                Some(value) => Ok(value.clone()),
                None => args.next().cloned().with_context(|| format!("{flag} needs a value")),
            }
        };
        match flag {
            "-h" | "--help" => return Ok(Command::Help),
            "--baseline" | "--no-build" if inline.is_some() => bail!("{flag} takes no value"),
            "--baseline" => baseline = true,
            "--no-build" => options.build = false,
            "--binary" => {
                options.binary = Some(value()?.into());
                options.build = false;
            }
            "--connections" => options.connections = parse_size(flag, &value()?, CONNECTIONS_MAX)?,
            "--duration" => options.duration = parse_seconds(flag, &value()?)?,
            "--events" => options.n_events = parse_count(flag, &value()?, 0, EVENTS_MAX)?,
            "--threads" => options.server_threads = parse_size(flag, &value()?, THREADS_MAX)?,
            "--client-threads" => options.client_threads = parse_size(flag, &value()?, THREADS_MAX)?,
            "--sync" => {
                options.sync = match value()?.as_str() {
                    "always" => SyncMode::Always,
                    "none" => SyncMode::None,
                    other => bail!("--sync is `always` or `none`, not `{other}`"),
                }
            }
            "--scenarios" => {
                let list = value()?;
                let mut scenarios = Vec::new();
                for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    scenarios.push(Scenario::parse(name)?);
                }
                if scenarios.is_empty() {
                    bail!("--scenarios needs at least one scenario");
                }
                options.scenarios = scenarios;
            }
            other => bail!("unexpected argument `{other}`\n\n{USAGE}"),
        }
    }
    if baseline {
        options.scenarios.push(Scenario::Baseline);
    }
    options.scenarios.sort();
    options.scenarios.dedup();
    Ok(Command::Run(options))
}

/// A whole number within `min..=max`; `_` separators and a `K` or `M` suffix allowed.
fn parse_count(flag: &str, text: &str, min: u64, max: u64) -> Result<u64> {
    let cleaned = text.trim().replace('_', "");
    let (digits, multiplier) = match cleaned.strip_suffix(['K', 'k']) {
        Some(digits) => (digits, 1_000),
        None => match cleaned.strip_suffix('M') {
            Some(digits) => (digits, 1_000_000),
            None => (cleaned.as_str(), 1),
        },
    };
    let n = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .with_context(|| format!("{flag} takes a whole number, not `{text}`"))?;
    if !(min..=max).contains(&n) {
        bail!("{flag} must be within {min}..={max}, not {n}");
    }
    Ok(n)
}

/// A count within `1..=max`.
fn parse_size(flag: &str, text: &str, max: usize) -> Result<usize> {
    let n = parse_count(flag, text, 1, max as u64)?;
    usize::try_from(n).with_context(|| format!("{flag}: {n} does not fit this machine"))
}

/// Seconds, fractions allowed, within the bounds; an `s` suffix is accepted.
fn parse_seconds(flag: &str, text: &str) -> Result<Duration> {
    let digits = text.trim().strip_suffix('s').unwrap_or(text.trim());
    let seconds: f64 = digits.parse().with_context(|| format!("{flag} takes seconds, not `{text}`"))?;
    if !(DURATION_SECONDS_MIN..=DURATION_SECONDS_MAX).contains(&seconds) {
        bail!("{flag} must be within {DURATION_SECONDS_MIN}..={DURATION_SECONDS_MAX} seconds, not {text}");
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Options> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match parse(&args)? {
            Command::Run(options) => Ok(options),
            Command::Help => bail!("help"),
        }
    }

    #[test]
    fn defaults() {
        let options = run(&[]).unwrap();
        assert_eq!(options.connections, 64);
        assert_eq!(options.duration, Duration::from_secs(10));
        assert_eq!(options.n_events, 1_000_000);
        assert_eq!(options.sync, SyncMode::Always);
        assert!(options.build);
        assert_eq!(options.server_threads, n_cores());
        assert!(!options.scenarios.contains(&Scenario::Baseline));
        assert_eq!(options.scenarios.len(), Scenario::ALL.len() - 1);
        // Reads come before the writes that would change the store they read.
        assert_eq!(options.scenarios.first(), Some(&Scenario::EntityQuery));
        assert_eq!(options.scenarios.last(), Some(&Scenario::Subscribe));
    }

    #[test]
    fn flags() {
        let options = run(&[
            "--connections",
            "8",
            "--duration=2.5",
            "--events",
            "100K",
            "--threads",
            "3",
            "--client-threads=1",
            "--sync",
            "none",
            "--scenarios",
            "batch, append,batch",
            "--baseline",
            "--no-build",
        ])
        .unwrap();
        assert_eq!(options.connections, 8);
        assert_eq!(options.duration, Duration::from_millis(2_500));
        assert_eq!(options.n_events, 100_000);
        assert_eq!((options.server_threads, options.client_threads), (3, 1));
        assert_eq!(options.sync, SyncMode::None);
        assert!(!options.build);
        assert_eq!(options.scenarios, [Scenario::Baseline, Scenario::Append, Scenario::Batch]);
        assert_eq!(run(&["--events", "1M"]).unwrap().n_events, 1_000_000);
        assert_eq!(run(&["--events", "100_000"]).unwrap().n_events, 100_000);
        assert_eq!(run(&["--duration", "5s"]).unwrap().duration, Duration::from_secs(5));
        assert_eq!(run(&["--scenarios", "baseline"]).unwrap().scenarios, [Scenario::Baseline]);
        assert_eq!(parse(&["--help".to_string()]).unwrap(), Command::Help);
        let other = run(&["--binary", "/tmp/allsource.a"]).unwrap();
        assert_eq!(other.binary.as_deref(), Some(std::path::Path::new("/tmp/allsource.a")));
        assert!(!other.build);
    }

    #[test]
    fn bad_arguments_are_refused() {
        for args in [
            &["--connections", "0"][..],
            &["--connections", "5000"],
            &["--connections", "many"],
            &["--connections"],
            &["--duration", "0"],
            &["--duration", "1h"],
            &["--events", "1G"],
            &["--events", "-5"],
            &["--sync", "sometimes"],
            &["--scenarios", "append,nope"],
            &["--scenarios", ","],
            &["--baseline=yes"],
            &["--binary"],
            &["--bogus"],
        ] {
            assert!(run(args).is_err(), "{args:?} was accepted");
        }
        let error = run(&["--scenarios", "nope"]).unwrap_err().to_string();
        assert!(error.contains("entity_query"), "{error}");
    }
}
