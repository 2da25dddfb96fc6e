//! The baseline server: the least an axum server can do for an append, so that the load
//! run can say how close the real server gets to what the HTTP stack allows.
//!
//! `POST /api/v1/events` parses the JSON body into a `serde_json::Value` (axum's `Json`
//! extractor, content type checked as the real server does) and answers `201` with a
//! small JSON object; `GET /health` answers `200`. It runs in a process of its own
//! (`xtask __load-baseline --addr A --threads N`, started by `cargo xtask load
//! --baseline`) on a tokio runtime with as many worker threads as the real server is
//! given, and exits when its standard input closes, so it cannot outlive the run.

use std::io::Read as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// The hidden subcommand that runs the baseline server.
pub const SUBCOMMAND: &str = "__load-baseline";

/// The baseline's router; `appended` counts the appends it has answered.
pub fn router() -> Router {
    let appended = Arc::new(AtomicU64::new(0));
    Router::new().route("/health", get(|| async { Json(json!({"status": "ok"})) })).route(
        "/api/v1/events",
        post(move |Json(event): Json<Value>| {
            let appended = appended.clone();
            async move {
                let position = appended.fetch_add(1, Ordering::Relaxed) + 1;
                let entity_id = event.get("entity_id").cloned().unwrap_or(Value::Null);
                (StatusCode::CREATED, Json(json!({"entity_id": entity_id, "position": position})))
            }
        }),
    )
}

/// `xtask __load-baseline --addr HOST:PORT --threads N`: serves [`router`] until
/// standard input closes.
pub fn serve(args: &[String]) -> Result<()> {
    let (mut addr, mut threads) = (None, None);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = args.next().cloned(),
            "--threads" => threads = args.next().and_then(|t| t.parse::<usize>().ok()),
            other => bail!("{SUBCOMMAND}: unexpected argument `{other}`"),
        }
    }
    let addr = addr.context("--addr HOST:PORT is required")?;
    let threads = threads.filter(|&t| t > 0).context("--threads N (N > 0) is required")?;

    // The parent holds our standard input; when it exits or closes it, so do we.
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("could not start the baseline's runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("could not listen on {addr}"))?;
        axum::serve(listener, router()).await.context("the baseline server failed")
    })
}
