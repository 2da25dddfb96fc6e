//! The `allsource` binary: parse the configuration, open the store, serve the API
//! until SIGTERM or SIGINT, then finish the requests in flight and exit 0.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use allsource_server::{app, Config, EventStore};
use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// How long requests in flight may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    // Durable storage comes with the storage engine; until then every mode keeps the
    // events in memory, and says so loudly.
    if config.in_memory {
        tracing::warn!("--in-memory: events are kept in memory only and are lost when the process exits");
    } else {
        tracing::warn!(
            data_dir = %config.data_dir.display(),
            "durable storage is not implemented yet: events are kept in memory only and are lost when \
             the process exits; the data directory {} will be used once it is",
            config.data_dir.display()
        );
    }
    let store = Arc::new(EventStore::new());
    let mut signals = ShutdownSignals::install()?;

    let listener = TcpListener::bind(&config.addr)
        .await
        .with_context(|| format!("could not listen on {}", config.addr))?;
    let local_addr = listener.local_addr().context("could not read the bound address")?;
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "listening on {local_addr}");

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, app(store.clone())).with_graceful_shutdown(async {
        // A dropped sender (which cannot happen before a signal) also stops the server.
        let _ = stop_rx.await;
    });
    let mut server = tokio::spawn(async move { server.await });

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
    let _ = stop_tx.send(());
    match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
        Ok(result) => result.context("the server task failed")?.context("the server failed")?,
        Err(_) => tracing::warn!(
            "requests in flight did not finish within {}s; exiting anyway",
            SHUTDOWN_GRACE.as_secs()
        ),
    }
    // The server's handle on the store is gone with the server; dropping ours commits
    // whatever is still queued (nothing, while the store is in memory only).
    drop(store);
    tracing::info!("stopped");
    Ok(())
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
