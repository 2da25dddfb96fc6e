//! The `allsource` binary: parse the configuration, open the store, serve the API
//! until SIGTERM or SIGINT, then finish the requests in flight and exit 0.

use std::future::IntoFuture;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use allsource_core::WalConfig;
use allsource_server::config::LogFormat;
use allsource_server::parse_errors::ParseErrorListener;
use allsource_server::tls::TlsListener;
use allsource_server::write_timeout::WriteTimeoutListener;
use allsource_server::{app_with, Config, EventStore, Metrics, Sync};
use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// The allocator: the store frees each request's parsed payload as soon as its text is
/// stored, often on another thread than the one that parsed it, a pattern glibc's
/// malloc handles poorly (1M events of 244-byte payloads: 13.7 s with glibc, 7.5 s with
/// mimalloc).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long mimalloc keeps freed memory before it gives it back to the OS: 10 minutes
/// instead of its default 1 s. Under load the store frees memory all the time (each
/// chunk's event objects and Parquet buffers once it is sealed, request bodies) and
/// allocates as much again; what goes back to the OS is faulted in again, zeroed page
/// by page, and on this project's VMs a fresh page costs far more than a reused one.
/// mimalloc purges every free block at once when the delay since the first free one
/// ends, so a shorter delay throws the whole pool away that often. Batches after the
/// 1M-event pre-load (`cargo xtask load --scenarios state,append,batch`), pairs:
/// 251/253K events/s with 10 s, 306/291K with 10 minutes, 302/283K never purging;
/// 1 s (the default) measured lower than 10 s. An idle server still gives the memory
/// back, within 10 minutes. An operator's `MIMALLOC_PURGE_DELAY` wins.
const PURGE_DELAY_MILLIS: std::ffi::c_long = 600_000;

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_t` (the version libmimalloc-sys
/// builds); a test checks that this option has the purge delay's default.
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    #[cfg(test)]
    fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
}

/// Sets [`PURGE_DELAY_MILLIS`], unless the environment sets it.
#[allow(unsafe_code)]
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: mimalloc's own C function, declared with its C signature; it stores a
    // number in the option table, which mimalloc reads atomically whenever it purges.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MILLIS) }
}

/// How long requests in flight may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Runs the server; a failure (a data directory that is locked or damaged, a port in
/// use, a bad option value) is printed as one line with its causes, and the exit code
/// is 1. Not as `main`'s `Err`, which would add a backtrace when `RUST_BACKTRACE` is
/// set: a refused start is for the operator to fix, not a bug.
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn run() -> anyhow::Result<()> {
    tune_allocator();
    let config = Config::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().with_span_list(false).init(),
    }

    let options = config.app_options()?;
    // Streams never end on their own: the shutdown ends them.
    let subscriptions = options.subscriptions.clone();
    let tls_config = match config.tls_files() {
        Some((cert, key)) => Some(allsource_server::tls::server_config(cert, key)?),
        None => None,
    };
    let store = Arc::new(open_store(&config, &options.metrics)?);
    let mut signals = ShutdownSignals::install()?;

    let listener = TcpListener::bind(&config.addr)
        .await
        .with_context(|| format!("could not listen on {}", config.addr))?;
    let local_addr = listener.local_addr().context("could not read the bound address")?;
    if !options.api_keys.is_empty() {
        tracing::info!(
            "API keys: {} configured; every route but {} needs one",
            options.api_keys.len(),
            allsource_server::auth::OPEN_PATHS.join(" and ")
        );
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        tls = tls_config.is_some(),
        "listening on {local_addr}"
    );

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // A dropped sender (which cannot happen before a signal) also stops the server.
    let stopped = async {
        let _ = stop_rx.await;
    };
    let metrics = options.metrics.clone();
    let app = app_with(store.clone(), options);
    // A client that stops reading loses its connection, and what its response holds;
    // a request hyper cannot read gets its answer with the contract's JSON body.
    let write_timeout = config.write_timeout();
    let mut server = match tls_config {
        None => {
            let listener = WriteTimeoutListener::new(listener, write_timeout);
            let listener = ParseErrorListener::new(listener, metrics);
            tokio::spawn(axum::serve(listener, app).with_graceful_shutdown(stopped).into_future())
        }
        Some(tls_config) => {
            let listener = TlsListener::new(listener, tls_config).context("could not set up TLS")?;
            let listener = WriteTimeoutListener::new(listener, write_timeout);
            let listener = ParseErrorListener::new(listener, metrics);
            tokio::spawn(axum::serve(listener, app).with_graceful_shutdown(stopped).into_future())
        }
    };

    tokio::select! {
        result = &mut server => {
            result.context("the server task failed")?.context("the server failed")?;
            return Ok(());
        }
        signal = signals.recv() => {
            let signal = signal?;
            tracing::info!("{signal} received: shutting down, finishing requests in flight");
        }
    }
    subscriptions.close();
    let _ = stop_tx.send(());
    match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
        Ok(result) => result.context("the server task failed")?.context("the server failed")?,
        Err(_) => tracing::warn!(
            "requests in flight did not finish within {}s; exiting anyway",
            SHUTDOWN_GRACE.as_secs()
        ),
    }
    // The server's handle on the store is gone with the server; dropping ours commits
    // whatever is still queued and stops the commit writer.
    drop(store);
    tracing::info!("stopped");
    Ok(())
}

/// Opens the store the configuration asks for, recovering a data directory; the
/// recovery's time and events go to `metrics`.
fn open_store(config: &Config, metrics: &Metrics) -> anyhow::Result<EventStore> {
    if config.in_memory {
        tracing::warn!("--in-memory: events are kept in memory only and are lost when the process exits");
        return Ok(EventStore::new());
    }
    let started = Instant::now();
    let wal_config = WalConfig { sync: config.sync.into(), ..WalConfig::default() };
    let (store, report) = EventStore::open_dir(&config.data_dir, wal_config)
        .with_context(|| format!("could not open the data directory {}", config.data_dir.display()))?;
    metrics.set_recovery(started.elapsed(), report.events);
    tracing::info!(
        data_dir = %config.data_dir.display(),
        events = report.events,
        segments = report.segments,
        bytes_cut = report.bytes_cut,
        zeros_cut = report.zeros_cut,
        old_bytes_cut = report.old_bytes_cut,
        chunks = report.chunks,
        chunks_load_ms = report.chunks_load_time.as_millis() as u64,
        wal_read_ms = report.wal_read_time.as_millis() as u64,
        rebuild_ms = report.rebuild_time.as_millis() as u64,
        elapsed_ms = started.elapsed().as_millis() as u64,
        sync = ?config.sync,
        "recovered {} events in {:.1} ms",
        report.events,
        started.elapsed().as_secs_f64() * 1000.0
    );
    if config.sync == Sync::None {
        tracing::warn!(
            "--sync none: appends are acknowledged before they are synced; a power loss can lose them"
        );
    }
    Ok(store)
}

/// The signals that stop the server, listened for from start-up on: a signal that
/// arrives before the server waits for it is kept, not fatal.
struct ShutdownSignals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> anyhow::Result<ShutdownSignals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(ShutdownSignals {
                terminate: signal(SignalKind::terminate()).context("could not listen for SIGTERM")?,
                interrupt: signal(SignalKind::interrupt()).context("could not listen for SIGINT")?,
            })
        }
        #[cfg(not(unix))]
        Ok(ShutdownSignals {})
    }

    /// Waits for SIGTERM or SIGINT (Ctrl-C elsewhere); returns the signal's name.
    async fn recv(&mut self) -> anyhow::Result<&'static str> {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.terminate.recv() => Ok("SIGTERM"),
                _ = self.interrupt.recv() => Ok("SIGINT"),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await.context("could not listen for Ctrl-C")?;
            Ok("Ctrl-C")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(unsafe_code)]
    fn the_allocator_option_set_is_the_purge_delay() {
        // SAFETY: as in `tune_allocator`; `mi_option_get` only reads the option table.
        let get = || unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // mimalloc v3's default purge delay; no other option defaults to 1000.
            assert_eq!(get(), 1_000);
            tune_allocator();
            assert_eq!(get(), PURGE_DELAY_MILLIS);
        }
    }
}
