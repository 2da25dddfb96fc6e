//! The handlers: extract, call the engine, map the result to a response.
//!
//! No rule of the event model lives here; the engine checks everything. Appends use the
//! engine's async entry points, which wait for the commit (a disk sync with a durable
//! log) without holding a runtime thread, so concurrent requests share one sync.

use std::sync::Arc;

use allsource_core::projection::EntitySnapshots;
use allsource_core::{
    write_event_json, write_json_array, write_json_string, write_u64, EntityId, Error, Event, EventStore,
    LogInfo, Position, Stats, Timestamp, Uuid, Version, ViewPage,
};
use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, VARY};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};

use crate::error::{AppError, ErrorBody};
use crate::extract::{
    AsOfQuery, BatchBody, EventBody, EventIdParam, EventsQuery, NoQuery, PathParams, QueryFormat,
    ARROW_STREAM,
};
use crate::openapi as doc;

/// The store, shared by every handler.
pub(crate) type Store = State<Arc<EventStore>>;

/// `GET /health`
#[utoipa::path(
    get,
    path = "/health",
    tag = "meta",
    summary = "Liveness: the server answers",
    description = "Open even when the server has API keys, and outside the request limits.",
    responses((status = 200, description = "The server is up.", body = doc::Health)),
)]
pub(crate) async fn health() -> Json<Value> {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

/// `POST /api/v1/events`: `201` with the stored event, `200` for an idempotent retry.
#[utoipa::path(
    post,
    path = "/api/v1/events",
    tag = "events",
    summary = "Append one event",
    description = "Answers once the event is durable. An `id` already stored with the same \
        `event_type`, `entity_id`, `payload` and `metadata` is an idempotent retry: `200` with the \
        stored event, nothing appended.",
    request_body(content = doc::NewEvent, content_type = "application/json"),
    responses(
        (status = 201, description = "Appended: the stored event.", body = doc::Event),
        (status = 200, description = "An idempotent retry: the event as stored before.", body = doc::Event),
        (status = 400, description = "`InvalidEvent` (not JSON, not an event, an unknown field) or \
            `ValidationError` (an empty, too long or control-character id or type, an `id` that is not a UUID).",
            body = ErrorBody),
        (status = 409, description = "`ConcurrencyConflict` (`expected_version` does not match; the error \
            has `expected_version` and `current_version`) or `DuplicateEventId` (the `id` is stored with other \
            content; the error has `id`).", body = ErrorBody),
        (status = 413, description = "`PayloadTooLarge`: the body over 16 MiB, `payload` over 1 MiB or \
            `metadata` over 64 KiB as compact JSON.", body = ErrorBody),
        (status = 415, description = "`UnsupportedMediaType`: no `application/json` body.", body = ErrorBody),
    ),
)]
pub(crate) async fn append_event(
    State(store): Store,
    EventBody(event): EventBody,
) -> Result<Response, AppError> {
    let appended = store.append_async(event).await?;
    let mut body = Vec::new();
    write_event_json(&appended.event, &mut body);
    Ok(json_response(created_or_ok(appended.created), body))
}

/// `POST /api/v1/events/batch`: `201` with one summary per event, `200` when every
/// item was an idempotent retry (nothing appended).
#[utoipa::path(
    post,
    path = "/api/v1/events/batch",
    tag = "events",
    summary = "Append 1..=10,000 events atomically",
    description = "All events are appended with consecutive positions, or none are: any invalid item, \
        conflict or duplicate id fails the whole batch, and the error message names the item's index \
        (`batch item 3: ...`). `expected_version` counts the batch's earlier items. The body is \
        `{\"events\": [...]}` as JSON, or one event per line as `application/x-ndjson` (also \
        `application/ndjson`).",
    request_body(content(
        (doc::BatchRequest = "application/json"),
        (doc::NdjsonBatch = "application/x-ndjson"),
    )),
    responses(
        (status = 201, description = "Appended: one summary per item, in the batch's order.", body = BatchResponse),
        (status = 200, description = "Every item was an idempotent retry; nothing was appended.",
            body = BatchResponse),
        (status = 400, description = "`InvalidEvent` or `ValidationError` for an item (the message names \
            it), no `events` array, or 0 or more than 10,000 events.", body = ErrorBody),
        (status = 409, description = "`ConcurrencyConflict` or `DuplicateEventId` for an item.",
            body = ErrorBody),
        (status = 413, description = "`PayloadTooLarge`: the body, or an item's `payload` or `metadata`.",
            body = ErrorBody),
        (status = 415, description = "`UnsupportedMediaType`: neither JSON nor NDJSON.", body = ErrorBody),
    ),
)]
pub(crate) async fn append_batch(
    State(store): Store,
    BatchBody(events): BatchBody,
) -> Result<Response, AppError> {
    let appended = store.append_batch_async(events).await?;
    Ok(json_response(created_or_ok(appended.created > 0), render_batch_response(&appended.events)))
}

/// `GET /api/v1/events/{id}`
#[utoipa::path(
    get,
    path = "/api/v1/events/{id}",
    tag = "events",
    summary = "One event by id",
    params(("id" = String, Path, format = "uuid", description = "The event's id, in any case, hyphens optional.")),
    responses(
        (status = 200, description = "The event.", body = doc::Event),
        (status = 400, description = "`ValidationError`: the id is not a UUID, or a query parameter was given.",
            body = ErrorBody),
        (status = 404, description = "`EventNotFound`.", body = ErrorBody),
    ),
)]
pub(crate) async fn get_event(
    State(store): Store,
    EventIdParam(id): EventIdParam,
    NoQuery: NoQuery,
) -> Result<Response, AppError> {
    let mut body = Vec::with_capacity(512);
    store.get_event_view(id)?.write_json(&mut body);
    Ok(json_response(StatusCode::OK, body))
}

/// A JSON body rendered by hand.
fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

/// The body of a batch append, as `serde_json` writes a [`BatchResponse`].
fn render_batch_response(events: &[Arc<Event>]) -> Vec<u8> {
    use std::io::Write;
    let mut body = Vec::with_capacity(32 + events.len() * (128 + 24));
    // Writing to a Vec cannot fail.
    let _ = write!(body, "{{\"count\":{},\"events\":[", events.len());
    for (index, event) in events.iter().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"{\"id\":\"");
        let mut id = Uuid::encode_buffer();
        body.extend_from_slice(event.id.hyphenated().encode_lower(&mut id).as_bytes());
        body.extend_from_slice(b"\",\"entity_id\":");
        write_json_string(&mut body, event.entity_id.as_str());
        // Not through `write!`, whose formatter costs more than the rest of the event.
        body.extend_from_slice(b",\"version\":");
        write_u64(&mut body, event.version);
        body.extend_from_slice(b",\"position\":");
        write_u64(&mut body, event.position);
        body.extend_from_slice(b",\"timestamp\":\"");
        event.timestamp.push_rfc3339(&mut body);
        body.extend_from_slice(b"\"}");
    }
    body.extend_from_slice(b"]}");
    body
}

/// The body of a JSON query page, as `serde_json` writes a [`QueryResponse`]; written
/// from the events' views, so that the payload and metadata texts of sealed events are
/// copied from their columns, never parsed or made into event objects.
fn render_query_page(page: &ViewPage) -> Vec<u8> {
    use std::io::Write;
    let mut body = Vec::with_capacity(64);
    body.extend_from_slice(b"{\"events\":");
    write_json_array(&page.events, &mut body);
    // Writing to a Vec cannot fail.
    let _ = match page.next_after {
        Some(after) => write!(body, ",\"count\":{},\"next_after\":{after}}}", page.events.len()),
        None => write!(body, ",\"count\":{},\"next_after\":null}}", page.events.len()),
    };
    body
}

/// `GET /api/v1/events/query`: JSON, or with `Accept: application/vnd.apache.arrow.stream`
/// the same page as an Arrow IPC stream, its count and cursor in `X-Count` and
/// `X-Next-After` (absent on the last page). Errors are JSON either way.
#[utoipa::path(
    get,
    path = "/api/v1/events/query",
    tag = "events",
    summary = "Query events, one page at a time",
    description = "Events matching every given filter, in ascending position, at most `limit`. Follow \
        `next_after` (as `after`) to page through every match exactly once.\n\n\
        With `Accept: application/vnd.apache.arrow.stream` (preferred over JSON) the same page comes as \
        an Arrow IPC stream of one record batch, its count in `X-Count` and its cursor in \
        `X-Next-After` (absent on the last page). Any other `Accept` gets JSON. Errors are JSON.",
    params(doc::EventFilters, doc::QueryLimit),
    responses(
        (status = 200, description = "One page of events (empty when nothing matches).",
            headers(
                ("Vary" = String, description = "`accept`: the representation depends on `Accept`."),
                ("X-Count" = u64, description = "Arrow only: the number of events in the page."),
                ("X-Next-After" = u64, description = "Arrow only: the cursor of the next page; \
                    absent on the last page."),
            ),
            content(
                (QueryResponse = "application/json"),
                (doc::schema::Binary = "application/vnd.apache.arrow.stream"),
            )),
        (status = 400, description = "`ValidationError`: a bad, unknown or repeated parameter (bad \
            timestamp, `limit` outside 1..=10,000, `after` not an integer >= 0).", body = ErrorBody),
    ),
)]
pub(crate) async fn query_events(
    State(store): Store,
    format: QueryFormat,
    EventsQuery(request): EventsQuery,
) -> Result<Response, AppError> {
    let mut response = match format {
        QueryFormat::Json => json_response(StatusCode::OK, render_query_page(&store.query_views(request)?)),
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
#[utoipa::path(
    get,
    path = "/api/v1/entities/{entity_id}/state",
    tag = "entities",
    summary = "An entity's state, rebuilt by replay",
    description = "Replays the entity's events (those with `timestamp <= as_of`) in version order, \
        each `payload` applied as a JSON Merge Patch (RFC 7386).",
    params(
        ("entity_id" = String, Path, description = "The entity, percent-decoded (`order%2F7` is `order/7`)."),
        doc::AsOf,
    ),
    responses(
        (status = 200, description = "The entity's state.", body = doc::EntityState),
        (status = 400, description = "`ValidationError`: a bad `as_of`, or an unknown parameter.",
            body = ErrorBody),
        (status = 404, description = "`EntityNotFound`: no event qualifies.", body = ErrorBody),
    ),
)]
pub(crate) async fn entity_state(
    State(store): Store,
    PathParams(entity_id): PathParams<String>,
    AsOfQuery(as_of): AsOfQuery,
) -> Result<Response, AppError> {
    let Some((at, text)) = as_of else {
        return Ok(Json(store.reconstruct_state(&entity_id, None)?).into_response());
    };
    let state = store.reconstruct_state(&entity_id, Some(at))?;
    // `as_of` echoes the parameter as given, not the time it was read as.
    #[derive(Serialize)]
    struct StateAsOf<'a> {
        entity_id: &'a str,
        state: &'a Value,
        version: Version,
        last_event_at: Timestamp,
        as_of: &'a str,
    }
    let body = StateAsOf {
        entity_id: &state.entity_id,
        state: &state.state,
        version: state.version,
        last_event_at: state.last_event_at,
        as_of: &text,
    };
    Ok(Json(body).into_response())
}

/// `GET /api/v1/entities/{entity_id}/snapshot`
#[utoipa::path(
    get,
    path = "/api/v1/entities/{entity_id}/snapshot",
    tag = "entities",
    summary = "An entity's state, from its snapshot",
    description = "The same body as the state without `as_of` (`\"as_of\": null`), served from the \
        entity-snapshot projection that every append keeps current: no replay. Takes no parameters.",
    params(("entity_id" = String, Path, description = "The entity, percent-decoded.")),
    responses(
        (status = 200, description = "The entity's state.", body = doc::EntityState),
        (status = 400, description = "`ValidationError`: a query parameter was given.", body = ErrorBody),
        (status = 404, description = "`EntityNotFound`: the entity has no events.", body = ErrorBody),
    ),
)]
pub(crate) async fn entity_snapshot(
    State(store): Store,
    PathParams(entity_id): PathParams<String>,
    NoQuery: NoQuery,
) -> Result<Response, AppError> {
    Ok(Json(store.snapshot(&entity_id)?).into_response())
}

/// `GET /api/v1/stats`
#[utoipa::path(
    get,
    path = "/api/v1/stats",
    tag = "meta",
    summary = "The store's counters",
    responses(
        (status = 200, description = "Counters, and what backs the store.", body = StatsResponse),
        (status = 400, description = "`ValidationError`: a query parameter was given.", body = ErrorBody),
    ),
)]
pub(crate) async fn stats(State(store): Store, NoQuery: NoQuery) -> Json<StatsResponse> {
    let stats = store.stats();
    Json(StatsResponse { committed_position: store.committed_position(), storage: stats.log.clone(), stats })
}

/// `GET /api/v1/projections`
#[utoipa::path(
    get,
    path = "/api/v1/projections",
    tag = "projections",
    summary = "The registered projections",
    responses(
        (status = 200, description = "Their names.", body = doc::ProjectionList),
        (status = 400, description = "`ValidationError`: a query parameter was given.", body = ErrorBody),
    ),
)]
pub(crate) async fn projections(State(store): Store, NoQuery: NoQuery) -> Json<Value> {
    let projections: Vec<Value> =
        store.projection_names().into_iter().map(|name| json!({ "name": name })).collect();
    Json(json!({ "projections": projections }))
}

/// `GET /api/v1/projections/{name}/{key}`
#[utoipa::path(
    get,
    path = "/api/v1/projections/{name}/{key}",
    tag = "projections",
    summary = "One projection's state for one key",
    params(
        ("name" = String, Path, description = "The projection, e.g. `event_counters`."),
        ("key" = String, Path, description = "An event type for `event_counters`, an entity id for \
            `entity_snapshots` (percent-decoded)."),
    ),
    responses(
        (status = 200, description = "The state.", body = doc::ProjectionState),
        (status = 400, description = "`ValidationError`: a query parameter was given.", body = ErrorBody),
        (status = 404, description = "`NotFound` (no such projection, or no state for the key) or \
            `EntityNotFound` (`entity_snapshots` and an entity without events).", body = ErrorBody),
    ),
)]
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

/// The body of a successful batch append: its shape for the OpenAPI document and the
/// tests; the handler writes it with [`render_batch_response`].
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) struct BatchResponse<'a> {
    /// The number of items, appended or retried.
    #[schema(minimum = 1)]
    count: usize,
    /// One summary per item, in the batch's order.
    events: Vec<EventSummary<'a>>,
}

/// What a batch append says about each of its events.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[cfg_attr(not(test), allow(dead_code))]
struct EventSummary<'a> {
    /// The event's id.
    #[schema(value_type = String, format = "uuid")]
    id: Uuid,
    /// Its entity.
    #[schema(value_type = String)]
    entity_id: &'a EntityId,
    /// Its version within the entity.
    #[schema(value_type = u64, minimum = 1)]
    version: Version,
    /// Its position in the log.
    #[schema(value_type = u64, minimum = 1)]
    position: Position,
    /// When it was appended.
    #[schema(value_type = String, format = DateTime)]
    timestamp: Timestamp,
}

#[cfg_attr(not(test), allow(dead_code))]
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

/// The body of `GET /api/v1/events/query`: its shape for the OpenAPI document and the
/// tests; the handler writes it with [`render_query_page`].
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) struct QueryResponse {
    /// The page's events, in ascending position.
    #[schema(value_type = Vec<doc::Event>)]
    events: Vec<Arc<Event>>,
    /// The number of events in the page.
    #[schema(minimum = 0)]
    count: usize,
    /// The last returned position when more events match (pass it as `after`), else
    /// `null`.
    #[schema(value_type = Option<u64>, minimum = 1, required = true)]
    next_after: Option<Position>,
}

/// The body of `GET /api/v1/stats`: the engine's counters, plus what backs the store.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct StatsResponse {
    #[serde(flatten)]
    #[schema(value_type = doc::Stats)]
    stats: Stats,
    /// The last position visible to readers.
    #[schema(value_type = u64, minimum = 0)]
    committed_position: Position,
    /// What backs the store.
    #[schema(value_type = doc::LogInfo)]
    storage: LogInfo,
}

#[cfg(test)]
mod render_tests {
    use allsource_core::QueryEventsRequest;
    use serde_json::json;

    use super::*;

    #[test]
    fn a_rendered_query_page_is_what_serde_writes() {
        let store = EventStore::new();
        for i in 0..5 {
            let mut event = Event::new(
                ["a\"b", "t"][i % 2].to_string(),
                format!("e\\{}\u{e9}", i % 2),
                json!({"i": i, "s": "\n\u{0}", "f": 0.1}),
            );
            event.metadata = Some(json!({"m": i}));
            store.append(event).unwrap();
        }
        for (after, limit) in [(0, 10), (0, 2), (4, 10), (5, 10)] {
            let request = QueryEventsRequest { after: Some(after), limit: Some(limit), ..Default::default() };
            let page = store.query(request.clone()).unwrap();
            let expected = serde_json::to_string(&QueryResponse {
                count: page.events.len(),
                events: page.events,
                next_after: page.next_after,
            })
            .unwrap();
            let rendered = render_query_page(&store.query_views(request).unwrap());
            assert_eq!(String::from_utf8(rendered).unwrap(), expected, "after {after}, limit {limit}");
        }
    }

    #[test]
    fn rendered_append_answers_are_what_serde_writes() {
        let store = EventStore::new();
        let events = || {
            (0..4).map(|i| {
                let mut event = Event::new(
                    ["a\"b", "t"][i % 2].to_string(),
                    format!("e\\{}\u{e9}\"/{}", i % 2, "x".repeat(i * 10)),
                    json!({"i": i, "s": "\n\u{0}", "f": 0.1}),
                );
                event.metadata = (i > 1).then(|| json!({"m": i}));
                event
            })
        };
        let mut stored = Vec::new();
        for event in events() {
            let appended = store.append(event).unwrap().event;
            let mut rendered = Vec::new();
            write_event_json(&appended, &mut rendered);
            assert_eq!(String::from_utf8(rendered).unwrap(), serde_json::to_string(&appended).unwrap());
            stored.push(appended);
        }
        let batch = store.append_batch(events().collect()).unwrap().events;
        stored.extend(batch);
        for n in [1, 2, stored.len()] {
            let expected = serde_json::to_string(&BatchResponse {
                count: n,
                events: stored[..n].iter().map(|event| EventSummary::of(event)).collect(),
            })
            .unwrap();
            let rendered = String::from_utf8(render_batch_response(&stored[..n])).unwrap();
            assert_eq!(rendered, expected, "{n} events");
        }
    }
}
