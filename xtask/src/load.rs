//! `cargo xtask load`: an HTTP load generator that measures the release binary the way
//! its users reach it, over keep-alive connections on loopback.
//!
//! The run builds the release binary, starts it on a free `127.0.0.1` port with a fresh
//! data directory under `<target dir>/load/` (`--sync always` unless told otherwise),
//! waits for `/health`, pre-loads the store for the read scenarios, then runs each
//! scenario as `--connections` closed loops for a short warm-up and `--duration`
//! measured seconds. With `--baseline` it first measures the same client against a
//! trivial axum handler ([`baseline`]) in a process of its own, pinned to the same
//! number of worker threads, so that single appends can be reported as a share of what
//! the HTTP stack allows. The tables go to stdout and `<target dir>/load/results.json`.
//!
//! Scenarios (see [`bodies`] for the requests and the pre-loaded store's shape):
//! single appends, 100-event batch appends, entity queries, state and snapshot reads,
//! type queries with `limit=10` on a rare and a common type, and a subscriber's delay
//! from append to delivery over `GET /api/v1/events/stream` (NDJSON), idle and while
//! other connections append.

mod args;
pub mod baseline;
mod bodies;
mod client;
mod report;
mod server_view;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::sync::mpsc;

use self::args::{Options, Scenario};
use self::bodies::{StreamLine, BATCH_EVENTS, PRELOAD_BATCH_EVENTS};
use self::client::{closed_loop, Call, Connection, LoopPlan, MakeCall, Rng, Summary};
use self::report::{Measured, Outcome, Preload, Row};
use crate::{binary_names, cargo_metadata, run_cargo, target_directory};

/// How long a server may take to answer `/health` after it starts.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long pre-loading may take, at most.
const PRELOAD_TIMEOUT: Duration = Duration::from_secs(3_600);
/// How long a probe event may take to reach its subscriber.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest warm-up before a scenario's measured window.
const WARMUP_MAX: Duration = Duration::from_secs(1);

/// `cargo xtask load [OPTIONS]`.
pub fn run(args: &[String]) -> Result<()> {
    let options = match args::parse(args)? {
        args::Command::Help => {
            print!("{}", args::USAGE);
            return Ok(());
        }
        args::Command::Run(options) => options,
    };
    if cfg!(debug_assertions) {
        // `cargo xtask` builds xtask without optimizations: an unoptimized client (and
        // baseline server) would measure itself. Run the optimized build instead.
        let mut command = vec!["run", "--release", "--quiet", "-p", "xtask", "--", "load"];
        command.extend(args.iter().map(String::as_str));
        return run_cargo(command);
    }
    let metadata = cargo_metadata()?;
    let target_dir = target_directory(&metadata)?;
    let load_dir = target_dir.join("load");
    std::fs::create_dir_all(&load_dir).with_context(|| format!("could not create {}", load_dir.display()))?;

    let needs_server = options.scenarios.iter().any(|s| *s != Scenario::Baseline);
    let binary = if let (true, Some(path)) = (needs_server, &options.binary) {
        if !path.is_file() {
            bail!("no server binary at {}", path.display());
        }
        Some(path.clone())
    } else if needs_server {
        if options.build {
            run_cargo(["build", "--release", "-p", "allsource-server"])?;
        }
        let name = binary_names(&metadata, "allsource-server")
            .into_iter()
            .next()
            .context("allsource-server has no binary target")?;
        let path = target_dir.join("release").join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
        if !path.is_file() {
            bail!("no release binary at {}; run without --no-build", path.display());
        }
        Some(path)
    } else {
        None
    };

    let n_cores = args::n_cores();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.client_threads)
        .enable_all()
        .build()
        .context("could not start the load client's runtime")?;
    let (rows, preload) = runtime.block_on(run_scenarios(&options, binary.as_deref(), &load_dir))?;

    println!();
    print!("{}", report::render_report(&rows, preload.as_ref(), &options, n_cores));
    let finished_unix_ms =
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let saved = report::to_json(&rows, preload.as_ref(), &options, n_cores, finished_unix_ms);
    let results_path = load_dir.join("results.json");
    let text = serde_json::to_string_pretty(&saved).context("could not serialize the results")?;
    std::fs::write(&results_path, text + "\n")
        .with_context(|| format!("could not write {}", results_path.display()))?;
    println!("Saved to {}.", results_path.display());

    let failed: Vec<&str> =
        rows.iter().filter(|r| matches!(r.outcome, Outcome::Failed(_))).map(|r| r.name.as_str()).collect();
    if !failed.is_empty() {
        bail!("scenarios failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Runs the selected scenarios in order: the baseline on its own server, then the rest on
/// one server of the real binary.
async fn run_scenarios(
    options: &Options,
    binary: Option<&Path>,
    load_dir: &Path,
) -> Result<(Vec<Row>, Option<Preload>)> {
    let mut rows = Vec::new();
    if options.scenarios.contains(&Scenario::Baseline) {
        let server = ServerProcess::start_baseline(options.server_threads, load_dir).await?;
        eprintln!("load: {} against the baseline on {}", report::BASELINE, server.addr);
        let cpu = CpuMeter::start(&server);
        let outcome = run_loop(server.addr, options, None, String::new(), append_call()).await;
        rows.push(Row { name: report::BASELINE.to_string(), outcome: server.check(outcome, &cpu) });
    }
    let Some(binary) = binary else { return Ok((rows, None)) };

    let data_dir = tempfile::Builder::new()
        .prefix("data-")
        .tempdir_in(load_dir)
        .with_context(|| format!("could not create a data directory under {}", load_dir.display()))?;
    let server = ServerProcess::start_server(binary, data_dir.path(), options, load_dir).await?;
    let addr = server.addr;
    eprintln!(
        "load: allsource on {addr}, data in {}, --sync {}",
        data_dir.path().display(),
        options.sync.name()
    );

    let mut preload = None;
    if options.scenarios.iter().any(|s| s.needs_preload()) && options.n_events > 0 {
        eprintln!("load: pre-loading {} events", options.n_events);
        let loaded =
            tokio::time::timeout(PRELOAD_TIMEOUT, preload_store(addr, options.n_events, options.connections))
                .await
                .map_err(|_| anyhow!("pre-loading took over {PRELOAD_TIMEOUT:?}"))
                .and_then(|result| result);
        match loaded {
            Ok(loaded) => preload = Some(loaded),
            Err(error) => {
                bail!("pre-loading {} events failed: {error:#}{}", options.n_events, server.log_tail())
            }
        }
    }

    for &scenario in &options.scenarios {
        match scenario {
            Scenario::Baseline => {}
            _ if scenario.needs_preload() && preload.is_none() => {
                let reason = "no events pre-loaded (--events 0)".to_string();
                for name in row_names(scenario) {
                    rows.push(Row { name: name.to_string(), outcome: Outcome::Skipped(reason.clone()) });
                }
            }
            Scenario::EntityQuery | Scenario::State | Scenario::Snapshot => {
                let name = row_names(scenario)[0];
                eprintln!("load: {name}");
                let cpu = CpuMeter::start(&server);
                let outcome = read_scenario(addr, options, scenario).await;
                rows.push(Row { name: name.to_string(), outcome: server.check(outcome, &cpu) });
            }
            Scenario::TypeQuery => {
                eprintln!(
                    "load: {} and {}, taking turns",
                    report::TYPE_QUERY_RARE,
                    report::TYPE_QUERY_COMMON
                );
                let cpu = CpuMeter::start(&server);
                let [rare, common] = type_query_scenarios(addr, options).await;
                rows.push(Row {
                    name: report::TYPE_QUERY_RARE.to_string(),
                    outcome: server.check(rare, &cpu),
                });
                rows.push(Row {
                    name: report::TYPE_QUERY_COMMON.to_string(),
                    outcome: server.check(common, &cpu),
                });
            }
            Scenario::Append => {
                eprintln!("load: {}", report::APPEND);
                let cpu = CpuMeter::start(&server);
                let outcome = append_scenario(addr, options, None, append_call()).await;
                rows.push(Row { name: report::APPEND.to_string(), outcome: server.check(outcome, &cpu) });
            }
            Scenario::Batch => {
                eprintln!("load: {}", report::BATCH);
                let cpu = CpuMeter::start(&server);
                let outcome = append_scenario(addr, options, Some(BATCH_EVENTS), batch_call()).await;
                rows.push(Row { name: report::BATCH.to_string(), outcome: server.check(outcome, &cpu) });
            }
            Scenario::Subscribe => {
                for (name, loaded) in [(report::SUBSCRIBE_IDLE, false), (report::SUBSCRIBE_LOADED, true)] {
                    eprintln!("load: {name}");
                    let cpu = CpuMeter::start(&server);
                    let outcome = subscribe_scenario(addr, options, loaded).await;
                    rows.push(Row { name: name.to_string(), outcome: server.check(outcome, &cpu) });
                }
            }
        }
    }
    drop(server);
    Ok((rows, preload))
}

/// The rows a scenario produces.
fn row_names(scenario: Scenario) -> &'static [&'static str] {
    match scenario {
        Scenario::Baseline => &[report::BASELINE],
        Scenario::EntityQuery => &[report::ENTITY_QUERY],
        Scenario::State => &[report::STATE],
        Scenario::Snapshot => &[report::SNAPSHOT],
        Scenario::TypeQuery => &[report::TYPE_QUERY_RARE, report::TYPE_QUERY_COMMON],
        Scenario::Append => &[report::APPEND],
        Scenario::Batch => &[report::BATCH],
        Scenario::Subscribe => &[report::SUBSCRIBE_IDLE, report::SUBSCRIBE_LOADED],
    }
}

fn plan(options: &Options, connections: usize) -> LoopPlan {
    LoopPlan {
        connections,
        warmup: WARMUP_MAX.min(options.duration / 5),
        measure: options.duration,
        calls_per_connection_max: client::CALLS_PER_CONNECTION_MAX,
    }
}

/// A distinct number for connection `connection`'s request `seq`, so payloads differ.
fn unique(connection: usize, seq: u64) -> u64 {
    (connection as u64) << 40 | seq
}

fn append_call() -> Arc<MakeCall> {
    Arc::new(|connection, seq, rng: &mut Rng| {
        let entity = rng.below(bodies::APPEND_ENTITIES);
        Call::post_json(bodies::APPEND_PATH, bodies::single_append(entity, unique(connection, seq)))
    })
}

fn batch_call() -> Arc<MakeCall> {
    Arc::new(|connection, seq, rng: &mut Rng| {
        let first_entity = rng.below(bodies::APPEND_ENTITIES);
        Call::post_json(bodies::BATCH_PATH, bodies::batch_append(first_entity, unique(connection, seq)))
    })
}

/// An append scenario, with what the server's `/metrics` say of the same window
/// (warm-up included, as for the CPU figures). A failed reading leaves that view out,
/// not the scenario.
async fn append_scenario(
    addr: SocketAddr,
    options: &Options,
    events_per_call: Option<u64>,
    make_call: Arc<MakeCall>,
) -> Outcome {
    let note = format!("--sync {}", options.sync.name());
    let before = server_view::Counters::read(addr).await;
    let started = Instant::now();
    let outcome = run_loop(addr, options, events_per_call, note, make_call).await;
    let seconds = started.elapsed().as_secs_f64();
    let after = server_view::Counters::read(addr).await;
    match (outcome, before, after) {
        (Outcome::Measured(mut measured), Ok(before), Ok(after)) => {
            measured.server = server_view::ServerView::between(&before, &after, seconds);
            Outcome::Measured(measured)
        }
        (outcome, before, after) => {
            if let Some(error) = before.err().or(after.err()) {
                eprintln!("load: could not read the server's /metrics: {error:#}");
            }
            outcome
        }
    }
}

/// One closed-loop scenario over `options.connections` connections.
async fn run_loop(
    addr: SocketAddr,
    options: &Options,
    events_per_call: Option<u64>,
    note: String,
    make_call: Arc<MakeCall>,
) -> Outcome {
    match closed_loop(addr, plan(options, options.connections), make_call).await {
        Ok(stats) => Outcome::Measured(Measured {
            calls: stats.calls,
            seconds: stats.seconds,
            events_per_call,
            errors: stats.errors,
            first_error: stats.first_error,
            latency: Summary::of(&stats.latency),
            note,
            cpu: None,
            server: None,
        }),
        Err(error) => Outcome::Failed(format!("{error:#}")),
    }
}

/// Fills the store with `n_events` in batches, over `connections` connections, and
/// checks that the server counts them all.
async fn preload_store(addr: SocketAddr, n_events: u64, connections: usize) -> Result<Preload> {
    let started = Instant::now();
    let n_batches = n_events.div_ceil(PRELOAD_BATCH_EVENTS);
    let next_batch = Arc::new(AtomicU64::new(0));
    let n_loops = connections.min(usize::try_from(n_batches).unwrap_or(usize::MAX)).max(1);
    let mut loops = tokio::task::JoinSet::new();
    for _ in 0..n_loops {
        let next_batch = next_batch.clone();
        loops.spawn(async move {
            let mut connection = Connection::open(addr).await?;
            loop {
                let batch = next_batch.fetch_add(1, Ordering::Relaxed);
                if batch >= n_batches {
                    return Ok::<(), anyhow::Error>(());
                }
                let first = batch * PRELOAD_BATCH_EVENTS;
                let count = PRELOAD_BATCH_EVENTS.min(n_events - first);
                let call = Call::post_json(bodies::BATCH_PATH, bodies::preload_batch(first, count, n_events));
                let (status, body) = connection.send(&call).await?;
                if status.as_u16() != 201 {
                    bail!("a pre-load batch got {status}: {}", String::from_utf8_lossy(&body));
                }
            }
        });
    }
    while let Some(joined) = loops.join_next().await {
        joined.context("a pre-load loop panicked")??;
    }
    let seconds = started.elapsed().as_secs_f64();

    let mut connection = Connection::open(addr).await?;
    let stats = get_json(&mut connection, "/api/v1/stats".to_string()).await?;
    if stats["total_events"].as_u64() != Some(n_events) {
        bail!("after pre-loading {n_events} events the server reports {stats}");
    }
    Ok(Preload { n_events, seconds, connections: n_loops, batch_events: PRELOAD_BATCH_EVENTS })
}

/// `GET path`, which must answer 200 with JSON.
async fn get_json(connection: &mut Connection, path: String) -> Result<Value> {
    let (status, body) = connection.send(&Call::get(path.clone())).await?;
    if status.as_u16() != 200 {
        bail!("GET {path} answered {status}: {}", String::from_utf8_lossy(&body));
    }
    serde_json::from_slice(&body).with_context(|| format!("GET {path} answered something that is not JSON"))
}

/// Entity queries, state or snapshot reads of random pre-loaded entities.
async fn read_scenario(addr: SocketAddr, options: &Options, scenario: Scenario) -> Outcome {
    let n_entities = bodies::n_entities(options.n_events);
    let path: fn(&str) -> String = match scenario {
        Scenario::EntityQuery => bodies::entity_query_path,
        Scenario::State => bodies::state_path,
        _ => bodies::snapshot_path,
    };
    // One request first, to be sure the scenario reads what it means to.
    let checked = async {
        let mut connection = Connection::open(addr).await?;
        let entity = bodies::preload_entity(0, options.n_events);
        let answer = get_json(&mut connection, path(&entity)).await?;
        let fine = match scenario {
            Scenario::EntityQuery => answer["count"].as_u64().is_some_and(|n| n > 0),
            _ => answer["version"].as_u64().is_some_and(|v| v > 0),
        };
        if !fine {
            bail!("GET {} answered {answer}", path(&entity));
        }
        Ok(())
    };
    if let Err(error) = checked.await {
        return Outcome::Failed(format!("{error:#}"));
    }
    let make_call: Arc<MakeCall> =
        Arc::new(move |_, _, rng: &mut Rng| Call::get(path(&format!("entity-{}", rng.below(n_entities)))));
    let note = format!("{} entities of {} events", n_entities, options.n_events / n_entities);
    run_loop(addr, options, None, note, make_call).await
}

/// How many turns each type query takes: the two take turns, so that both meet the
/// same conditions on a shared machine and only the type's size differs.
const TYPE_QUERY_TURNS: u32 = 5;

/// Type queries, `limit=10`, after a random position, on the rare and on the common
/// type, in [`TYPE_QUERY_TURNS`] alternating turns that add up to `--duration` each.
async fn type_query_scenarios(addr: SocketAddr, options: &Options) -> [Outcome; 2] {
    let types = [bodies::SMALL_TYPE, bodies::LARGE_TYPE];
    match type_queries(addr, options, types).await {
        Ok(outcomes) => outcomes,
        Err(error) => [Outcome::Failed(format!("{error:#}")), Outcome::Failed(format!("{error:#}"))],
    }
}

async fn type_queries(addr: SocketAddr, options: &Options, types: [&'static str; 2]) -> Result<[Outcome; 2]> {
    let mut connection = Connection::open(addr).await?;
    for event_type in types {
        let expected = bodies::n_of_type(event_type, options.n_events).min(bodies::TYPE_QUERY_LIMIT);
        let answer = get_json(&mut connection, bodies::type_query_path(event_type, 0)).await?;
        if answer["count"].as_u64() != Some(expected) {
            bail!("a type query for {expected} events of {event_type} answered {answer}");
        }
    }
    drop(connection);
    // Cursors in the first 90% of the log, so that the rare type still has 10 events after them.
    let after_max = (options.n_events / 10 * 9).max(1);
    let turn = LoopPlan {
        connections: options.connections,
        warmup: Duration::from_millis(200).min(options.duration / 10),
        measure: options.duration / TYPE_QUERY_TURNS,
        calls_per_connection_max: client::CALLS_PER_CONNECTION_MAX,
    };
    let mut totals: [Option<client::LoopStats>; 2] = [None, None];
    for _ in 0..TYPE_QUERY_TURNS {
        for (total, event_type) in totals.iter_mut().zip(types) {
            let make_call: Arc<MakeCall> = Arc::new(move |_, _, rng: &mut Rng| {
                Call::get(bodies::type_query_path(event_type, rng.below(after_max)))
            });
            let stats = closed_loop(addr, turn, make_call).await?;
            match total {
                Some(total) => total.merge(stats)?,
                None => *total = Some(stats),
            }
        }
    }
    let outcome = |stats: Option<client::LoopStats>, event_type: &str| match stats {
        Some(stats) => Outcome::Measured(Measured {
            calls: stats.calls,
            seconds: stats.seconds,
            events_per_call: None,
            errors: stats.errors,
            first_error: stats.first_error,
            latency: Summary::of(&stats.latency),
            note: format!(
                "{} events of the type; random `after`; {TYPE_QUERY_TURNS} turns each",
                bodies::n_of_type(event_type, options.n_events)
            ),
            cpu: None,
            server: None,
        }),
        None => Outcome::Failed("no turn ran".to_string()),
    };
    let [rare, common] = totals;
    Ok([outcome(rare, types[0]), outcome(common, types[1])])
}

/// What the subscriber's reader hands to the prober.
enum Delivery {
    Probe(u64, Instant),
    CaughtUp,
    End(String),
}

/// A subscriber's delay from the start of an append to its delivery on an NDJSON
/// subscription: one prober appends probe events to an entity of its own, one at a
/// time, and waits for each to arrive. With `loaded`, the other connections append
/// meanwhile (as in the append scenario).
async fn subscribe_scenario(addr: SocketAddr, options: &Options, loaded: bool) -> Outcome {
    match subscribe(addr, options, loaded).await {
        Ok(outcome) => outcome,
        Err(error) => Outcome::Failed(format!("{error:#}")),
    }
}

async fn subscribe(addr: SocketAddr, options: &Options, loaded: bool) -> Result<Outcome> {
    let nonce = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let entity = format!("probe-{nonce}");
    let mut subscriber = Connection::open(addr).await?;
    let mut call = Call::get(bodies::stream_path(&entity));
    call.accept = Some("application/x-ndjson");
    let response = subscriber.start(&call).await?;
    let status = response.status();
    if !status.is_success() {
        let body = tokio::time::timeout(Duration::from_secs(5), response.into_body().collect())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|body| String::from_utf8_lossy(&body.to_bytes()).into_owned())
            .unwrap_or_default();
        return Ok(stream_refused(status.as_u16(), &call.path, &body));
    }

    let (deliveries, mut delivered) = mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        let on_line = |line: &[u8]| {
            let (delivery, more) = match bodies::parse_stream_line(line) {
                Ok(StreamLine::Event { probe: Some(probe) }) => {
                    (Delivery::Probe(probe, Instant::now()), true)
                }
                Ok(StreamLine::CaughtUp) => (Delivery::CaughtUp, true),
                Ok(StreamLine::Error(text)) => {
                    (Delivery::End(format!("the server closed the stream: {text}")), false)
                }
                Ok(_) => return true,
                Err(error) => (Delivery::End(format!("a bad stream line: {error}")), false),
            };
            deliveries.send(delivery).is_ok() && more
        };
        let ended = match client::for_each_line(response, on_line).await {
            Ok(()) => "the stream ended".to_string(),
            Err(error) => format!("{error:#}"),
        };
        let _ = deliveries.send(Delivery::End(ended));
    });
    let _reader = AbortOnDrop(reader);

    // The subscription is live once the (empty) catch-up has ended.
    let mut note = "NDJSON, append sent -> event read".to_string();
    match tokio::time::timeout(Duration::from_secs(5), delivered.recv()).await {
        Ok(Some(Delivery::CaughtUp)) => {}
        Ok(Some(Delivery::End(reason))) => return Ok(Outcome::Failed(reason)),
        Ok(Some(Delivery::Probe(probe, _))) => {
            return Ok(Outcome::Failed(format!("probe {probe} arrived before any was sent")))
        }
        Ok(None) => return Ok(Outcome::Failed("the stream's reader stopped".to_string())),
        Err(_) => note.push_str("; no caught_up line within 5 s"),
    }

    let background_connections = options.connections.saturating_sub(2).max(1);
    let background = loaded.then(|| {
        let plan = plan(options, background_connections);
        AbortOnDrop(tokio::spawn(closed_loop(addr, plan, append_call())))
    });

    let plan = plan(options, 1);
    let started = Instant::now();
    let (measure_from, deadline) = (started + plan.warmup, started + plan.warmup + plan.measure);
    let mut prober = Connection::open(addr).await?;
    let (mut delays, mut acks) = (client::new_histogram()?, client::new_histogram()?);
    let mut n_before_ack = 0u64;
    for seq in 0..client::CALLS_PER_CONNECTION_MAX {
        let sent = Instant::now();
        if sent >= deadline {
            break;
        }
        let (status, body) =
            prober.send(&Call::post_json(bodies::APPEND_PATH, bodies::probe(&entity, seq))).await?;
        let acked = Instant::now();
        if status.as_u16() != 201 {
            bail!("probe {seq} got {status}: {}", String::from_utf8_lossy(&body));
        }
        let arrived = loop {
            match tokio::time::timeout(DELIVERY_TIMEOUT, delivered.recv()).await {
                Err(_) => bail!("probe {seq} was not delivered within {DELIVERY_TIMEOUT:?}"),
                Ok(None) => bail!("the stream's reader stopped"),
                Ok(Some(Delivery::End(reason))) => bail!("before probe {seq} arrived: {reason}"),
                Ok(Some(Delivery::CaughtUp)) => continue,
                Ok(Some(Delivery::Probe(probe, at))) if probe == seq => break at,
                Ok(Some(Delivery::Probe(probe, _))) => {
                    bail!("probe {probe} arrived while waiting for probe {seq}: a gap or a duplicate")
                }
            }
        };
        if sent >= measure_from && acked.max(arrived) <= deadline {
            client::record(&mut delays, arrived.saturating_duration_since(sent));
            client::record(&mut acks, acked - sent);
            n_before_ack += u64::from(arrived < acked);
        }
    }

    let n_probes = delays.len();
    let acks = Summary::of(&acks);
    note.push_str(&format!(
        "; the append's 201 p50 {:.0} µs; {:.0}% delivered before it",
        acks.p50_us,
        100.0 * n_before_ack as f64 / n_probes.max(1) as f64
    ));
    if let Some(background) = background {
        let stats = background.join().await.context("the background appends panicked")??;
        note.push_str(&format!(
            "; {background_connections} connections appending {} req/s meanwhile",
            crate::text::format_rate(stats.calls_per_second()),
        ));
        if stats.errors > 0 {
            note.push_str(&format!(
                " ({} errors, first: {})",
                stats.errors,
                stats.first_error.unwrap_or_default()
            ));
        }
    }
    drop(subscriber);
    Ok(Outcome::Measured(Measured {
        calls: n_probes,
        seconds: plan.measure.as_secs_f64(),
        events_per_call: None,
        errors: 0,
        first_error: None,
        latency: Summary::of(&delays),
        note,
        cpu: None,
        server: None,
    }))
}

/// The outcome of a subscription the server refused with `status`. A server without the
/// stream route answers 404, or 400 where `/api/v1/events/{id}` takes `stream` for an
/// event id that is not a UUID: both mean the endpoint is missing, not that it failed.
fn stream_refused(status: u16, path: &str, body: &str) -> Outcome {
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|error| error["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_default();
    if status == 404 || (status == 400 && message.contains("\"stream\" is not a UUID")) {
        Outcome::Skipped(format!("endpoint missing ({status})"))
    } else {
        Outcome::Failed(format!("GET {path} answered {status}: {body}"))
    }
}

/// A task that is cancelled when this handle is dropped, so that no load outlives its
/// scenario, whichever way the scenario ends.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    async fn join(mut self) -> Result<T, tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A server process under test; killed (and waited for) when dropped.
struct ServerProcess {
    child: Child,
    /// Held so that the baseline server exits when we do: it reads its stdin to EOF.
    _stdin: Option<ChildStdin>,
    addr: SocketAddr,
    log_path: PathBuf,
}

impl ServerProcess {
    /// The real binary on a free loopback port, with `data_dir`, pinned to
    /// `options.server_threads` worker threads (tokio reads `TOKIO_WORKER_THREADS`).
    async fn start_server(
        binary: &Path,
        data_dir: &Path,
        options: &Options,
        load_dir: &Path,
    ) -> Result<ServerProcess> {
        let addr = free_port()?;
        let mut command = Command::new(binary);
        command
            .arg("--addr")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--sync")
            .arg(options.sync.name())
            .env("TOKIO_WORKER_THREADS", options.server_threads.to_string())
            .env("RUST_LOG", "warn");
        // Settings from our environment (keys, --in-memory, ...) must not change what is measured.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ALLSOURCE_") {
                command.env_remove(key);
            }
        }
        ServerProcess::spawn(command, addr, load_dir.join("server.log"), false).await
    }

    /// The baseline server: this program's hidden subcommand, in a process of its own.
    async fn start_baseline(threads: usize, load_dir: &Path) -> Result<ServerProcess> {
        let addr = free_port()?;
        let exe = std::env::current_exe().context("could not find the running xtask binary")?;
        let mut command = Command::new(exe);
        command
            .arg(baseline::SUBCOMMAND)
            .arg("--addr")
            .arg(addr.to_string())
            .arg("--threads")
            .arg(threads.to_string());
        ServerProcess::spawn(command, addr, load_dir.join("baseline.log"), true).await
    }

    async fn spawn(
        mut command: Command,
        addr: SocketAddr,
        log_path: PathBuf,
        pipe_stdin: bool,
    ) -> Result<ServerProcess> {
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("could not create {}", log_path.display()))?;
        let log_err = log.try_clone().context("could not share the log file")?;
        command.stdout(log).stderr(log_err).stdin(if pipe_stdin { Stdio::piped() } else { Stdio::null() });
        let mut child =
            command.spawn().with_context(|| format!("could not start {:?}", command.get_program()))?;
        let stdin = child.stdin.take();
        let mut server = ServerProcess { child, _stdin: stdin, addr, log_path };
        server.wait_healthy().await?;
        Ok(server)
    }

    /// Polls `/health` until it answers 200, the process exits, or [`STARTUP_TIMEOUT`].
    async fn wait_healthy(&mut self) -> Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().context("could not check the server process")? {
                bail!("the server exited at start-up ({status}){}", self.log_tail());
            }
            let answer = async {
                let mut connection = Connection::open(self.addr).await?;
                connection.send(&Call::get("/health".to_string())).await
            };
            if let Ok(Ok((status, _))) = tokio::time::timeout(Duration::from_secs(1), answer).await {
                if status.as_u16() == 200 {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!("the server did not answer /health within {STARTUP_TIMEOUT:?}{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `outcome` with the CPU both sides used since `cpu` started, or a failure with
    /// the end of the server's log.
    fn check(&self, outcome: Outcome, cpu: &CpuMeter) -> Outcome {
        match outcome {
            Outcome::Failed(reason) => Outcome::Failed(format!("{reason}{}", self.log_tail())),
            Outcome::Measured(mut measured) => {
                measured.cpu = cpu.finish(self);
                Outcome::Measured(measured)
            }
            other => other,
        }
    }

    /// The end of the server's log, as a suffix for an error message ("" when empty).
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(10)..].join("\n  ");
        if tail.is_empty() {
            String::new()
        } else {
            format!("\n  the end of {}:\n  {tail}", self.log_path.display())
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time of the server and of this process from a start, read from `/proc` (Linux;
/// elsewhere there is no reading).
struct CpuMeter {
    started: Instant,
    server_seconds: Option<f64>,
    client_seconds: Option<f64>,
    machine_seconds: Option<f64>,
}

impl CpuMeter {
    fn start(server: &ServerProcess) -> CpuMeter {
        CpuMeter {
            started: Instant::now(),
            server_seconds: cpu_seconds(&server.child.id().to_string()),
            client_seconds: cpu_seconds("self"),
            machine_seconds: machine_busy_seconds(),
        }
    }

    fn finish(&self, server: &ServerProcess) -> Option<report::CpuShare> {
        let wall = self.started.elapsed().as_secs_f64();
        let server_seconds = cpu_seconds(&server.child.id().to_string())? - self.server_seconds?;
        let client_seconds = cpu_seconds("self")? - self.client_seconds?;
        let machine_seconds = machine_busy_seconds()? - self.machine_seconds?;
        (wall > 0.0).then(|| report::CpuShare {
            server_cores: server_seconds / wall,
            client_cores: client_seconds / wall,
            other_cores: (machine_seconds - server_seconds - client_seconds).max(0.0) / wall,
        })
    }
}

/// Clock ticks per second of `/proc/*/stat` and `/proc/stat`: `USER_HZ`, 100 on every
/// Linux architecture Rust targets.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds every core of the machine has spent busy (not idle, not waiting for I/O)
/// since boot, from the first line of `/proc/stat`.
fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_machine_busy_ticks(stat.lines().next()?).map(|ticks| ticks as f64 / TICKS_PER_SECOND)
}

/// Busy ticks from `/proc/stat`'s `cpu` line: every field but idle (4th) and iowait
/// (5th); guest time is already inside user time, so fields 9 and 10 are left out.
fn parse_machine_busy_ticks(cpu_line: &str) -> Option<u64> {
    let mut fields = cpu_line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let ticks: Vec<u64> = fields.map(|f| f.parse().ok()).collect::<Option<Vec<u64>>>()?;
    if ticks.len() < 8 {
        return None;
    }
    Some(ticks[..8].iter().enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, t)| t).sum())
}

/// User plus system CPU seconds of process `pid` (a number or `self`), all threads.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = parse_cpu_ticks(&stat)?;
    Some(ticks as f64 / TICKS_PER_SECOND)
}

/// utime + stime from the text of `/proc/PID/stat`: fields 14 and 15, counted after
/// the command name in parentheses (which may itself hold spaces and parentheses).
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A loopback address with a port that was free a moment ago.
fn free_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("could not find a free loopback port")?;
    listener.local_addr().context("could not read the free port")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client and the baseline handler through a real socket: a handful of
    /// requests, a closed loop bounded by count, and the bodies the scenarios send.
    #[test]
    fn client_against_the_baseline_handler() {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server =
                AbortOnDrop(tokio::spawn(async move { axum::serve(listener, baseline::router()).await }));

            let mut connection = Connection::open(addr).await.unwrap();
            let (status, body) = connection
                .send(&Call::post_json(bodies::APPEND_PATH, bodies::single_append(7, 1)))
                .await
                .unwrap();
            assert_eq!(status.as_u16(), 201);
            let answer: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(answer["entity_id"], "customer-7");
            assert_eq!(answer["position"], 1);
            // A body that is not JSON is refused, as the real server would.
            let (status, _) =
                connection.send(&Call::post_json(bodies::APPEND_PATH, "{".into())).await.unwrap();
            assert_eq!(status.as_u16(), 400);
            let (status, _) = connection.send(&Call::get("/health".to_string())).await.unwrap();
            assert_eq!(status.as_u16(), 200);

            // Two connections, five calls each: counted by the loop, bounded by count
            // (the duration is far longer than the calls take).
            let plan = LoopPlan {
                connections: 2,
                warmup: Duration::ZERO,
                measure: Duration::from_secs(30),
                calls_per_connection_max: 5,
            };
            let stats = closed_loop(addr, plan, append_call()).await.unwrap();
            assert_eq!((stats.calls, stats.errors), (10, 0));
            assert_eq!(stats.latency.len(), 10);
            let (_, body) = connection
                .send(&Call::post_json(bodies::APPEND_PATH, bodies::single_append(1, 2)))
                .await
                .unwrap();
            let answer: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(answer["position"], 12);

            // Non-2xx answers are errors, not throughput.
            let not_found: Arc<MakeCall> = Arc::new(|_, _, _: &mut Rng| Call::get("/nowhere".to_string()));
            let plan = LoopPlan { connections: 1, calls_per_connection_max: 3, ..plan };
            let stats = closed_loop(addr, plan, not_found).await.unwrap();
            assert_eq!((stats.calls, stats.errors), (0, 3));
            assert!(stats.first_error.unwrap().contains("404"));

            // A subscription against a server without the endpoint is skipped, not failed.
            let options = Options {
                connections: 2,
                duration: Duration::from_millis(100),
                n_events: 0,
                scenarios: vec![Scenario::Subscribe],
                server_threads: 1,
                client_threads: 1,
                sync: args::SyncMode::Always,
                build: false,
                binary: None,
            };
            let outcome = subscribe_scenario(addr, &options, false).await;
            assert_eq!(outcome, Outcome::Skipped("endpoint missing (404)".to_string()));
            drop(server);
        });
    }

    #[test]
    fn cpu_ticks_from_proc_stat() {
        let stat = "8092 (my (odd) cmd) R 8090 8090 12128 0 -1 4194304 128 0 0 0 250 31 0 0 20 0 1 0";
        assert_eq!(parse_cpu_ticks(stat), Some(281));
        assert_eq!(parse_cpu_ticks("8092 (cat) R 1 2"), None);
        assert_eq!(parse_cpu_ticks("garbage"), None);
        let line = "cpu  100 5 20 1000 50 1 2 3 7 0";
        assert_eq!(parse_machine_busy_ticks(line), Some(100 + 5 + 20 + 1 + 2 + 3));
        assert_eq!(parse_machine_busy_ticks("cpu0 1 2 3 4 5 6 7 8"), None);
        assert_eq!(parse_machine_busy_ticks("cpu 1 2 3"), None);
        if cfg!(target_os = "linux") {
            assert!(cpu_seconds("self").is_some());
            assert!(machine_busy_seconds().is_some());
        }
    }

    #[test]
    fn a_refused_subscription() {
        let skipped = |status, body| matches!(stream_refused(status, "/s", body), Outcome::Skipped(_));
        assert!(skipped(404, r#"{"error":{"code":"NotFound","message":"no route"}}"#));
        assert!(skipped(
            400,
            r#"{"error":{"code":"ValidationError","message":"id \"stream\" is not a UUID: invalid character"}}"#
        ));
        assert!(!skipped(400, r#"{"error":{"code":"ValidationError","message":"bad after"}}"#));
        assert!(!skipped(429, r#"{"error":{"code":"TooManySubscribers","message":"full"}}"#));
        assert_eq!(
            stream_refused(500, "/s", "boom"),
            Outcome::Failed("GET /s answered 500: boom".to_string())
        );
    }

    #[test]
    fn connection_errors_fail_the_loop() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let addr = free_port().unwrap();
        let plan = LoopPlan {
            connections: 1,
            warmup: Duration::ZERO,
            measure: Duration::from_secs(1),
            calls_per_connection_max: 1,
        };
        let error = runtime.block_on(closed_loop(addr, plan, append_call())).unwrap_err();
        assert!(format!("{error:#}").contains("could not connect"), "{error:#}");
    }
}
