//! The router: every route of the contract, the fallbacks that give unknown routes and
//! wrong methods our JSON error, and the layers around it all (body limit, panic
//! catcher, request tracing).

use std::any::Any;
use std::sync::Arc;

use allsource_core::limits::REQUEST_BYTES_MAX;
use allsource_core::{Error, EventStore};
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::error::AppError;
use crate::options::AppOptions;
use crate::{export, handlers, openapi, stream};

/// The whole HTTP API over `store` with the default [`AppOptions`], ready to serve or
/// to drive in tests with `tower::ServiceExt::oneshot`.
pub fn app(store: Arc<EventStore>) -> Router {
    app_with(store, AppOptions::default())
}

/// The whole HTTP API over `store`, set up as `options` says.
pub fn app_with(store: Arc<EventStore>, options: AppOptions) -> Router {
    Router::new()
        .route("/health", get(handlers::health))
        .route("/openapi.json", get(openapi::openapi_json))
        // Subscriptions: long-lived responses with limits of their own.
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
        // Our body extractors enforce the limit themselves; this covers any axum
        // extractor a future route might use.
        .layer(DefaultBodyLimit::max(REQUEST_BYTES_MAX))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(TraceLayer::new_for_http())
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
