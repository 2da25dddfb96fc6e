//! The router: every route of the contract, the fallbacks that give unknown routes and
//! wrong methods our JSON error, and the layers around it all (request limits on the
//! ordinary routes; body limit, API keys, panic catcher, request tracing on all).

use std::any::Any;
use std::sync::Arc;

use allsource_core::limits::REQUEST_BYTES_MAX;
use allsource_core::{Error, EventStore};
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;

use crate::error::AppError;
use crate::limits::{self, Limits};
use crate::options::AppOptions;
use crate::{auth, export, handlers, metrics, openapi, stream};

/// The whole HTTP API over `store` with the default [`AppOptions`], ready to serve or
/// to drive in tests with `tower::ServiceExt::oneshot`.
pub fn app(store: Arc<EventStore>) -> Router {
    app_with(store, AppOptions::default())
}

/// The whole HTTP API over `store`, set up as `options` says.
pub fn app_with(store: Arc<EventStore>, options: AppOptions) -> Router {
    // The ordinary routes: each request is short, so they share the request slots
    // and the time limit (`limits`).
    let limited = Router::new()
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
        .layer(from_fn_with_state(
            Limits::new(options.concurrent_requests_max, options.request_timeout),
            limits::limit,
        ));
    // Routes outside the request limits: the liveness probe, which must answer when
    // the server is busy, and long-lived responses (subscriptions), which have limits
    // of their own.
    let router = Router::new()
        .route("/health", get(handlers::health))
        .route("/metrics", metrics::scrape_route(options.metrics.clone(), options.subscriptions.clone()))
        .route("/openapi.json", get(openapi::openapi_json))
        .route(stream::STREAM_PATH, stream::route(store.clone(), options.subscriptions.clone()))
        .merge(limited)
        // Must come after the routes: it is installed on each route present.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(store)
        // Our body extractors enforce the limit themselves; this covers any axum
        // extractor a future route might use.
        .layer(DefaultBodyLimit::max(REQUEST_BYTES_MAX));
    // Keys are checked before anything else runs, unknown routes included, so a client
    // without a key learns nothing about the API (and takes no request slot).
    let router = if options.api_keys.is_empty() {
        router
    } else {
        router.layer(from_fn_with_state(options.api_keys.clone(), auth::require_key))
    };
    // Outermost: request ids, the request span and the metrics, which so count every
    // response, refusals by the layers above included.
    metrics::observe(router.layer(CatchPanicLayer::custom(panic_response)), &options.metrics)
}

async fn not_found(method: Method, uri: Uri) -> AppError {
    AppError::NotFound(format!("no route for {method} {}", uri.path()))
}

/// axum adds the `Allow` header to this response itself.
async fn method_not_allowed(method: Method, uri: Uri) -> AppError {
    AppError::MethodNotAllowed(format!("method {method} is not allowed on {}", uri.path()))
}

/// A handler panicked: a bug. The server lives on; the client gets a `500
/// InternalError` and the log gets the panic's message.
fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_string()
    };
    AppError::from(Error::Internal(format!("a handler panicked: {detail}"))).into_response()
}
