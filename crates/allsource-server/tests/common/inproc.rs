//! The in-process transport: the router driven with `tower::ServiceExt::oneshot`, no
//! socket.

use std::sync::Arc;

use allsource_server::{app, EventStore};
use axum::body::Body;
use axum::http::Request;
use axum::Router;
use tower::ServiceExt;

use super::{Client, Reply, Req};

/// The API over its own store, on its own runtime, so tests are plain `#[test]`s that
/// can also share it between threads.
pub struct InProcess {
    pub store: Arc<EventStore>,
    app: Router,
    runtime: tokio::runtime::Runtime,
}

impl InProcess {
    pub fn new() -> InProcess {
        InProcess::with_store(Arc::new(EventStore::new()))
    }

    pub fn with_store(store: Arc<EventStore>) -> InProcess {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        InProcess { app: app(store.clone()), store, runtime }
    }
}

impl InProcess {
    /// Sends a request exactly as built: no header added.
    pub fn send_http(&self, request: Request<Body>) -> Reply {
        self.runtime.block_on(async {
            let response = self.app.clone().oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap().to_vec();
            Reply { status, headers, body }
        })
    }
}

impl Client for InProcess {
    /// Adds a `Content-Length` (unless the request has one), as an HTTP client would.
    fn send(&self, req: Req) -> Reply {
        let mut builder = Request::builder().method(req.method.as_str()).uri(req.target.as_str());
        for (name, value) in &req.headers {
            builder = builder.header(name, value);
        }
        let has_length = req.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-length"));
        if !has_length && !req.body.is_empty() {
            builder = builder.header("content-length", req.body.len());
        }
        self.send_http(builder.body(Body::from(req.body)).unwrap())
    }
}
