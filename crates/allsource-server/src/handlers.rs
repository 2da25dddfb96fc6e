//! The handlers: extract, call the engine, map the result to a response.
//!
//! No rule of the event model lives here; the engine checks everything. Appends use the
//! engine's async entry points, which wait for the commit (a disk sync with a durable
//! log) without holding a runtime thread, so concurrent requests share one sync.

use std::sync::Arc;

use allsource_core::projection::EntitySnapshots;
use allsource_core::{
    EntityId, Error, Event, EventStore, LogInfo, Position, Stats, Timestamp, Uuid, Version,
};
use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, VARY};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};

use crate::error::AppError;
use crate::extract::{
    AsOfQuery, BatchBody, EventBody, EventIdParam, EventsQuery, NoQuery, PathParams, QueryFormat,
    ARROW_STREAM,
};

/// The store, shared by every handler.
pub(crate) type Store = State<Arc<EventStore>>;

/// `GET /health`
pub(crate) async fn health() -> Json<Value> {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

/// `POST /api/v1/events`: `201` with the stored event, `200` for an idempotent retry.
pub(crate) async fn append_event(
    State(store): Store,
    EventBody(event): EventBody,
) -> Result<Response, AppError> {
    let appended = store.append_async(event).await?;
    Ok((created_or_ok(appended.created), Json(appended.event)).into_response())
}

/// `POST /api/v1/events/batch`: `201` with one summary per event, `200` when every
/// item was an idempotent retry (nothing appended).
pub(crate) async fn append_batch(
    State(store): Store,
    BatchBody(events): BatchBody,
) -> Result<Response, AppError> {
    let appended = store.append_batch_async(events).await?;
    let body = BatchResponse {
        count: appended.events.len(),
        events: appended.events.iter().map(|event| EventSummary::of(event)).collect(),
    };
    Ok((created_or_ok(appended.created > 0), Json(body)).into_response())
}

/// `GET /api/v1/events/{id}`
pub(crate) async fn get_event(
    State(store): Store,
    EventIdParam(id): EventIdParam,
    NoQuery: NoQuery,
) -> Result<Json<Arc<Event>>, AppError> {
    Ok(Json(store.get_event(id)?))
}

/// `GET /api/v1/events/query`: JSON, or with `Accept: application/vnd.apache.arrow.stream`
/// the same page as an Arrow IPC stream, its count and cursor in `X-Count` and
/// `X-Next-After` (absent on the last page). Errors are JSON either way.
pub(crate) async fn query_events(
    State(store): Store,
    format: QueryFormat,
    EventsQuery(request): EventsQuery,
) -> Result<Response, AppError> {
    let mut response = match format {
        QueryFormat::Json => {
            let page = store.query(request)?;
            Json(QueryResponse { count: page.events.len(), events: page.events, next_after: page.next_after })
                .into_response()
        }
        QueryFormat::Arrow => {
            let (stream, count, next_after) = store.query_arrow_ipc(request)?;
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(ARROW_STREAM));
            headers.insert(X_COUNT, HeaderValue::from(count));
            if let Some(next_after) = next_after {
                headers.insert(X_NEXT_AFTER, HeaderValue::from(next_after));
            }
            (headers, stream).into_response()
        }
    };
    // The answer depends on `Accept`: caches must not serve one for the other.
    response.headers_mut().insert(VARY, HeaderValue::from_static("accept"));
    Ok(response)
}

/// The number of events in an Arrow query response.
const X_COUNT: HeaderName = HeaderName::from_static("x-count");
/// The paging cursor of an Arrow query response (absent on the last page).
const X_NEXT_AFTER: HeaderName = HeaderName::from_static("x-next-after");

/// `GET /api/v1/entities/{entity_id}/state`
pub(crate) async fn entity_state(
    State(store): Store,
    PathParams(entity_id): PathParams<String>,
    AsOfQuery(as_of): AsOfQuery,
) -> Result<Response, AppError> {
    Ok(Json(store.reconstruct_state(&entity_id, as_of)?).into_response())
}

/// `GET /api/v1/entities/{entity_id}/snapshot`
pub(crate) async fn entity_snapshot(
    State(store): Store,
    PathParams(entity_id): PathParams<String>,
    NoQuery: NoQuery,
) -> Result<Response, AppError> {
    Ok(Json(store.snapshot(&entity_id)?).into_response())
}

/// `GET /api/v1/stats`
pub(crate) async fn stats(State(store): Store, NoQuery: NoQuery) -> Json<StatsResponse> {
    let stats = store.stats();
    Json(StatsResponse { committed_position: store.committed_position(), storage: stats.log.clone(), stats })
}

/// `GET /api/v1/projections`
pub(crate) async fn projections(State(store): Store, NoQuery: NoQuery) -> Json<Value> {
    let projections: Vec<Value> =
        store.projection_names().into_iter().map(|name| json!({ "name": name })).collect();
    Json(json!({ "projections": projections }))
}

/// `GET /api/v1/projections/{name}/{key}`
pub(crate) async fn projection_state(
    State(store): Store,
    PathParams((name, key)): PathParams<(String, String)>,
    NoQuery: NoQuery,
) -> Result<Json<Value>, AppError> {
    let projection =
        store.projection(&name).ok_or_else(|| AppError::NotFound(format!("no projection named '{name}'")))?;
    let state = projection.get_state(&key).ok_or_else(|| missing_projection_key(&name, &key))?;
    Ok(Json(json!({ "name": name, "key": key, "state": state })))
}

/// A key without state: for the entity snapshots the key is an entity, so the answer
/// is the same as the entity endpoints give; for any other projection, `NotFound`.
fn missing_projection_key(name: &str, key: &str) -> AppError {
    if name == EntitySnapshots::NAME {
        Error::EntityNotFound(key.to_string()).into()
    } else {
        AppError::NotFound(format!("projection '{name}' has no state for key '{key}'"))
    }
}

fn created_or_ok(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

/// The body of a successful batch append.
#[derive(Debug, Serialize)]
pub(crate) struct BatchResponse<'a> {
    count: usize,
    events: Vec<EventSummary<'a>>,
}

/// What a batch append says about each of its events.
#[derive(Debug, Serialize)]
struct EventSummary<'a> {
    id: Uuid,
    entity_id: &'a EntityId,
    version: Version,
    position: Position,
    timestamp: Timestamp,
}

impl EventSummary<'_> {
    fn of(event: &Event) -> EventSummary<'_> {
        EventSummary {
            id: event.id,
            entity_id: &event.entity_id,
            version: event.version,
            position: event.position,
            timestamp: event.timestamp,
        }
    }
}

/// The body of `GET /api/v1/events/query`.
#[derive(Debug, Serialize)]
pub(crate) struct QueryResponse {
    events: Vec<Arc<Event>>,
    count: usize,
    next_after: Option<Position>,
}

/// The body of `GET /api/v1/stats`: the engine's counters, plus what backs the store.
#[derive(Debug, Serialize)]
pub(crate) struct StatsResponse {
    #[serde(flatten)]
    stats: Stats,
    committed_position: Position,
    storage: LogInfo,
}
