//! The HTTP/JSON server of AllSource: the axum API over an [`EventStore`], its
//! configuration, and (in `main.rs`) the `allsource` binary.
//!
//! [`app`] builds the whole API as a [`Router`](axum::Router); tests drive it without
//! a socket:
//!
//! ```
//! use std::sync::Arc;
//!
//! use allsource_core::EventStore;
//! use axum::body::Body;
//! use axum::http::{Request, StatusCode};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let app = allsource_server::app(Arc::new(EventStore::new()));
//! let request = Request::post("/api/v1/events")
//!     .header("content-type", "application/json")
//!     .body(Body::from(r#"{"event_type": "user.created", "entity_id": "user-1", "payload": {}}"#))
//!     .unwrap();
//! let response = app.oneshot(request).await.unwrap();
//! assert_eq!(response.status(), StatusCode::CREATED);
//! # }
//! ```
//!
//! The modules: [`config`] (flags and environment), [`error`] (every failure as the
//! contract's JSON error), `extract` (bodies, paths and query strings into the
//! engine's types), `handlers` (thin: extract, call the engine, map the result),
//! `export` (Parquet and Arrow exports, streamed from a blocking thread), `routes`
//! (the router), `guard` (the one middleware around every route: request id and
//! span, key check, request limits, panic catcher, metrics), [`auth`] (API keys),
//! [`limits`] (request slots and time limits), [`tls`] (serving over TLS with
//! rustls), [`write_timeout`] (closing connections whose client stopped reading),
//! `stream` (subscriptions: catch-up, then live events, as NDJSON or Server-Sent
//! Events) and [`metrics`] (`GET /metrics` for Prometheus, and the request id and route
//! kinds the guard's span and figures use).

pub mod auth;
pub mod config;
pub mod error;
mod export;
mod extract;
mod guard;
mod handlers;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod options;
pub mod parse_errors;
mod routes;
mod stream;
pub mod tls;
pub mod write_timeout;

pub use allsource_core::EventStore;
pub use auth::{ApiKey, ApiKeys, Role};
pub use config::{Config, Sync};
pub use error::AppError;
pub use metrics::Metrics;
pub use options::AppOptions;
pub use routes::{app, app_with};
pub use stream::{SubscriptionSettings, Subscriptions};
