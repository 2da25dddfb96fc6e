//! The router: every route of the contract, the fallbacks that give unknown routes and
//! wrong methods our JSON error, and the one layer around it all (the request guard:
//! request id and span, API keys, request limits on the ordinary routes, panic
//! catcher, metrics; and the body limit).

use std::sync::Arc;

use allsource_core::limits::REQUEST_BYTES_MAX;
use allsource_core::EventStore;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::routing::{get, post};
use axum::Router;
use tower::ServiceBuilder;

use crate::error::AppError;
use crate::guard::GuardLayer;
use crate::limits::Limits;
use crate::options::AppOptions;
use crate::{export, handlers, metrics, openapi, stream};

/// The whole HTTP API over `store` with the default [`AppOptions`], ready to serve or
/// to drive in tests with `tower::ServiceExt::oneshot`.
pub fn app(store: Arc<EventStore>) -> Router {
    app_with(store, AppOptions::default())
}

/// The routes outside the request limits: the liveness probe, which must answer when
/// the server is busy, the metrics and the API description, and subscriptions, which
/// are long-lived and have limits of their own. Every other route shares the request
/// slots and the time limit (`limits`); so do none of the unknown ones.
const UNLIMITED_ROUTES: &[&str] = &["/health", "/metrics", "/openapi.json", stream::STREAM_PATH];

/// The whole HTTP API over `store`, set up as `options` says.
pub fn app_with(store: Arc<EventStore>, options: AppOptions) -> Router {
    let guard = GuardLayer::new(
        options.metrics.clone(),
        options.api_keys.clone(),
        Limits::new(options.concurrent_requests_max, options.request_timeout),
        UNLIMITED_ROUTES,
    );
    Router::new()
        .route("/health", get(handlers::health))
        .route("/metrics", metrics::scrape_route(options.metrics.clone(), options.subscriptions.clone()))
        .route("/openapi.json", get(openapi::openapi_json))
        .route(stream::STREAM_PATH, stream::route(store.clone(), options.subscriptions.clone()))
        .route("/api/v1/events", post(handlers::append_event))
        .route("/api/v1/events/batch", post(handlers::append_batch))
        .route("/api/v1/events/query", get(handlers::query_events))
        .route("/api/v1/events/{id}", get(handlers::get_event))
        .route("/api/v1/entities/{entity_id}/state", get(handlers::entity_state))
        .route("/api/v1/entities/{entity_id}/snapshot", get(handlers::entity_snapshot))
        .route("/api/v1/stats", get(handlers::stats))
        .route("/api/v1/projections", get(handlers::projections))
        .route("/api/v1/projections/{name}/{key}", get(handlers::projection_state))
        .route("/api/v1/export/parquet", get(export::export_parquet))
        .route("/api/v1/export/arrow", get(export::export_arrow))
        // Must come after the routes: it is installed on each route present.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(store)
        // One layer, so that each request pays for one: the guard (request id and
        // span, API keys, request limits, panics, metrics; see `guard`), then the body
        // limit, which our body extractors enforce themselves but which covers any
        // axum extractor a future route might use.
        .layer(ServiceBuilder::new().layer(guard).layer(DefaultBodyLimit::max(REQUEST_BYTES_MAX)))
}

async fn not_found(method: Method, uri: Uri) -> AppError {
    AppError::NotFound(format!("no route for {method} {}", uri.path()))
}

/// axum adds the `Allow` header to this response itself.
async fn method_not_allowed(method: Method, uri: Uri) -> AppError {
    AppError::MethodNotAllowed(format!("method {method} is not allowed on {}", uri.path()))
}
