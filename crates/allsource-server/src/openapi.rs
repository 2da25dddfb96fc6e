//! The OpenAPI 3.1 description of the HTTP API, generated from the code with utoipa and
//! served at `GET /openapi.json`.
//!
//! Each handler carries a `#[utoipa::path]` attribute beside its code (path, method,
//! parameters, body, responses), and the server's own response types (`QueryResponse`,
//! `BatchResponse`, `StatsResponse`, `ErrorBody`, ...) derive `ToSchema`. This module
//! adds what the handlers share:
//!
//! - schemas for the engine's types (`Event`, `EntityState`, `Stats`, `LogInfo`) and
//!   for the bodies the handlers build with `json!`. These are written here, as
//!   documentation types that are never built, rather than derived in the engine's
//!   crates: those crates stay free of HTTP concerns, and their JSON comes from
//!   hand-written `Serialize` impls (`Timestamp`, `Json`) that a derive could not see.
//!   The server's tests compare real responses with these schemas, field by field, so
//!   they cannot drift apart unnoticed;
//! - the descriptions of the two routes whose handlers are closures built elsewhere
//!   (`GET /api/v1/events/stream`, `GET /metrics`), as attributes on empty functions;
//! - the query-string and header parameters shared by several endpoints;
//! - `SharedResponses`, a [`Modify`] that gives every operation the responses that any
//!   request may get: `500` everywhere, `503`/`504` under the request limits, and on
//!   every route the API keys guard the optional bearer security with its `401` (and
//!   `403` for writes).
//!
//! `tests/openapi.rs` fails when a route is served but not documented (or the reverse).

use axum::Json;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Components, Content, Header, Object, Ref, RefOr, Response, ResponseBuilder, Type};
use utoipa::{IntoParams, Modify, OpenApi};

use crate::auth::OPEN_PATHS;
use crate::{export, handlers};

/// The OpenAPI document of the whole API, as `GET /openapi.json` serves it.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// `GET /openapi.json`
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    summary = "This OpenAPI 3.1 document",
    responses((status = 200, description = "The OpenAPI document of this server.", body = Object)),
)]
pub(crate) async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(document())
}

/// `GET /api/v1/events/stream`, described here: its handler is built by
/// `stream::route`. Never called.
#[utoipa::path(
    get,
    path = "/api/v1/events/stream",
    tag = "events",
    summary = "Subscribe: every stored event after a cursor, then new events as they commit",
    description = "One connection: first every stored event matching the filters after `after` (or \
        `Last-Event-ID`), in position order, then a `caught_up` marker, then each new matching event \
        once it is committed (durable) - never a gap, never a duplicate. Heartbeats when nothing else \
        was sent for a while (15 s by default). The response never ends on its own; a subscriber too \
        slow to keep up gets an `error` line and the end of the stream.\n\n\
        Encodings, chosen with `Accept`: NDJSON (`application/x-ndjson`, the default), one `StreamLine` \
        object a line; or Server-Sent Events (`text/event-stream`, when preferred), where an event is \
        `id: <position>` and `data: <event>` (so a browser's `EventSource` resumes with \
        `Last-Event-ID`) and a marker is `event: caught_up|heartbeat|error` with its `StreamLine` as \
        `data:`.",
    params(StreamFilters, LastEventId),
    responses(
        (status = 200, description = "The stream (`Cache-Control: no-cache`, `Vary: accept`).",
            content(
                (schema::StreamLine = "application/x-ndjson"),
                (String = "text/event-stream"),
            )),
        (status = 400, description = "`ValidationError`: a bad, unknown or repeated parameter, or a \
            `Last-Event-ID` that is not a position.", body = crate::error::ErrorBody),
        (status = 429, description = "`TooManySubscribers`: every subscriber slot is taken.",
            body = crate::error::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again."))),
    ),
)]
#[allow(dead_code)]
fn stream_events() {}

/// `GET /metrics`, described here: its handler is built by `metrics::scrape_route`.
/// Never called.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "meta",
    summary = "Prometheus metrics",
    description = "The Prometheus text exposition format (0.0.4): appends by outcome, append and \
        query latency, fsync latency and events per sync, responses by status class, subscribers, \
        events and bytes stored, recovery time.",
    responses((status = 200, description = "The metrics.", body = String,
        content_type = "text/plain; version=0.0.4")),
)]
#[allow(dead_code)]
fn metrics() {}

/// The name of the bearer security scheme in the document.
pub const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "AllSource",
        description = "The HTTP/JSON API of AllSource, an event store: append events (one, or a batch \
            atomically, as JSON or NDJSON), read them back by id, query and page through them (as JSON \
            or as Arrow IPC), rebuild an entity's state, export to Parquet or Arrow, and read \
            projections and counters.\n\nEvery error, including an unknown route (`404 NotFound`) and a \
            wrong method (`405 MethodNotAllowed`, with an `Allow` header), is a JSON body \
            `{\"error\": {\"code\": \"...\", \"message\": \"...\"}}` (schema `ErrorBody`). Routes under \
            `/api/` need `Authorization: Bearer <key>` when the server has API keys.",
    ),
    paths(
        handlers::health,
        openapi_json,
        handlers::append_event,
        handlers::append_batch,
        handlers::query_events,
        handlers::get_event,
        handlers::entity_state,
        handlers::entity_snapshot,
        handlers::stats,
        handlers::projections,
        handlers::projection_state,
        export::export_parquet,
        export::export_arrow,
        stream_events,
        metrics,
    ),
    components(responses(NotFound, MethodNotAllowed)),
    modifiers(&SharedResponses),
    tags(
        (name = "events", description = "Append, read and query events."),
        (name = "entities", description = "An entity's state, by replay or from its snapshot."),
        (name = "projections", description = "Registered projections and their state."),
        (name = "export", description = "Every matching event as one Parquet file or Arrow stream."),
        (name = "meta", description = "Health, counters and this document."),
    ),
)]
struct ApiDoc;

/// The routes (besides `/health`, `/metrics` and `/openapi.json`, outside `/api/`) that
/// sit outside the request limits, so never answer `503 Overloaded` or `504 Timeout`.
const UNLIMITED_PATHS: &[&str] = &[crate::stream::STREAM_PATH];

/// Adds the responses and security that every operation shares, so that the
/// handlers' attributes list only what is particular to them: `500` on every
/// operation; the optional bearer security, `401` and (for writes) `403` on every
/// route the API keys guard (all but [`OPEN_PATHS`]); `503` and `504` on the routes
/// under the request limits.
struct SharedResponses;

impl Modify for SharedResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Components::new);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key given to the server with `--api-key KEY:ROLE`, `--api-keys-file` or \
                         `ALLSOURCE_API_KEYS`. Only needed when the server has keys; a `read` key may \
                         not append.",
                    ))
                    .build(),
            ),
        );
        let shared = [
            ("InternalError", internal_error()),
            ("Unavailable", unavailable()),
            ("Unauthorized", error_response("`Unauthorized`: the server has API keys and the request has no valid `Authorization: Bearer <key>`.")),
            ("Forbidden", error_response("`Forbidden`: the key is a `read` key and the request writes.")),
            ("Timeout", error_response(
                "`Timeout`: the request did not finish within the server's time limit. What it did so far \
                 stands (an append may be committed): retry an append with the same `id`.",
            )),
        ];
        for (name, response) in shared {
            components.responses.insert(name.to_string(), RefOr::T(response));
        }

        for (path, item) in openapi.paths.paths.iter_mut() {
            let guarded = !OPEN_PATHS.contains(&path.as_str());
            let limited = path.starts_with("/api/") && !UNLIMITED_PATHS.contains(&path.as_str());
            for (method, operation) in operations(item) {
                add_response(operation, "500", "InternalError");
                if limited {
                    add_response(operation, "503", "Unavailable");
                    add_response(operation, "504", "Timeout");
                }
                if guarded {
                    // Optional: a server without keys takes requests without one.
                    operation.security =
                        Some(vec![SecurityRequirement::default(), SecurityRequirement::new(BEARER, [""; 0])]);
                    add_response(operation, "401", "Unauthorized");
                    if !matches!(method, "get" | "head" | "options") {
                        add_response(operation, "403", "Forbidden");
                    }
                }
            }
        }
    }
}

/// The operations of a path item, with their methods (lower case).
fn operations(item: &mut PathItem) -> Vec<(&'static str, &mut Operation)> {
    [
        ("get", item.get.as_mut()),
        ("post", item.post.as_mut()),
        ("put", item.put.as_mut()),
        ("delete", item.delete.as_mut()),
        ("patch", item.patch.as_mut()),
        ("head", item.head.as_mut()),
        ("options", item.options.as_mut()),
        ("trace", item.trace.as_mut()),
    ]
    .into_iter()
    .filter_map(|(method, operation)| operation.map(|operation| (method, operation)))
    .collect()
}

/// Adds a reference to the shared response `name` for `status`, unless the operation
/// describes that status itself.
fn add_response(operation: &mut Operation, status: &str, name: &str) {
    operation
        .responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
}

/// A response with the contract's JSON error body.
fn error_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", Content::new(Some(Ref::from_schema_name("ErrorBody"))))
        .build()
}

fn internal_error() -> Response {
    error_response(
        "`InternalError`: a bug (the message is generic; the detail is in the server's log), or \
         `StorageError` with `read_only: false`: a write could not be made durable and nothing was \
         acknowledged.",
    )
}

fn unavailable() -> Response {
    let mut response = error_response(
        "The server cannot take the request now: `StorageError` with `read_only: true` (after a \
         storage failure the store refuses writes until it is restarted; reads go on), or \
         `Overloaded`: every request slot is taken and nothing was done (with `Retry-After`).",
    );
    let retry_after = Header::builder()
        .schema(Some(Object::with_type(Type::Integer)))
        .description(Some("With `Overloaded`: seconds to wait before trying again."))
        .build();
    response.headers.insert("Retry-After".to_string(), RefOr::T(retry_after));
    response
}

/// `404 NotFound`: no route for the request's path.
#[derive(utoipa::ToResponse)]
#[response(description = "`NotFound`: no such route (or projection).")]
#[allow(dead_code)]
pub(crate) struct NotFound(crate::error::ErrorBody);

/// `405 MethodNotAllowed`: the path exists, but not with this method; the `Allow`
/// header lists the methods that are.
#[derive(utoipa::ToResponse)]
#[response(
    description = "`MethodNotAllowed`: the path exists, but not with this method; the `Allow` header lists \
                   the methods that are.",
    headers(("Allow" = String, description = "The methods this path serves."))
)]
#[allow(dead_code)]
pub(crate) struct MethodNotAllowed(crate::error::ErrorBody);

pub(crate) use schema::{
    BatchRequest, EntityState, Event, Health, LogInfo, NdjsonBatch, NewEvent, ProjectionList,
    ProjectionState, Stats,
};

/// Schemas of the engine's types and of the bodies that handlers build with `json!`.
/// These types are never built: they exist to be described.
#[allow(dead_code)]
pub(crate) mod schema {
    use utoipa::ToSchema;

    /// A stored event.
    #[derive(ToSchema)]
    #[schema(example = json!({
        "id": "0190f0c4-6a1e-7c3a-9d4e-1b2c3d4e5f60", "event_type": "user.created",
        "entity_id": "user-123", "payload": {"name": "Alice"}, "metadata": {},
        "timestamp": "2026-11-27T10:00:00.123456Z", "version": 1, "position": 42}))]
    pub(crate) struct Event {
        /// The event's id: a UUID, lower-case and hyphenated.
        #[schema(format = "uuid")]
        pub id: String,
        /// What happened, e.g. `user.created`: 1..=256 bytes, no control characters.
        #[schema(min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")]
        pub event_type: String,
        /// The entity the event belongs to: 1..=256 bytes, no control characters.
        #[schema(min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")]
        pub entity_id: String,
        /// Any JSON value, exactly as it was written.
        #[schema(value_type = Value)]
        pub payload: (),
        /// A JSON object, exactly as it was written (`{}` when none was given).
        #[schema(value_type = Object)]
        pub metadata: (),
        /// When the store appended it (RFC 3339, UTC, microseconds); non-decreasing in
        /// position order.
        #[schema(format = DateTime)]
        pub timestamp: String,
        /// The event's number within its entity, from 1, gapless.
        #[schema(minimum = 1)]
        pub version: u64,
        /// The event's number in the whole log, from 1, gapless, never reused.
        #[schema(minimum = 1)]
        pub position: u64,
    }

    /// An event to append. Unknown fields are rejected (`400 InvalidEvent`). At most
    /// 1 MiB of `payload` and 64 KiB of `metadata` as compact JSON (`413
    /// PayloadTooLarge`).
    #[derive(ToSchema)]
    #[serde(deny_unknown_fields)]
    #[schema(example = json!({
        "event_type": "user.created", "entity_id": "user-123", "payload": {"name": "Alice"},
        "metadata": {"source": "signup"}, "expected_version": 0}))]
    pub(crate) struct NewEvent {
        /// What happened: 1..=256 bytes, no control characters.
        #[schema(min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")]
        pub event_type: String,
        /// The entity it belongs to: 1..=256 bytes, no control characters.
        #[schema(min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")]
        pub entity_id: String,
        /// Any JSON value; applied to the entity's state as a JSON Merge Patch (RFC 7386).
        #[schema(value_type = Value)]
        pub payload: (),
        /// A JSON object; absent or `null` means `{}`.
        #[schema(value_type = Option<Object>)]
        pub metadata: Option<()>,
        /// A UUID (any case, hyphens optional) for idempotent retries; absent or `null`:
        /// the server makes a UUIDv7.
        #[schema(format = "uuid")]
        pub id: Option<String>,
        /// The entity's version the append requires (0: the entity has no events yet);
        /// absent or `null`: any. A mismatch is `409 ConcurrencyConflict`.
        #[schema(minimum = 0, format = "uint64")]
        pub expected_version: Option<u64>,
    }

    /// A batch to append atomically, as `application/json`. Other top-level fields are
    /// rejected (`400 InvalidEvent`).
    #[derive(ToSchema)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct BatchRequest {
        /// 1..=10,000 events, appended with consecutive positions, or none.
        #[schema(min_items = 1, max_items = 10000)]
        pub events: Vec<NewEvent>,
    }

    /// A batch as `application/x-ndjson` (or `application/ndjson`): one event object per
    /// line (`\n` or `\r\n`); lines holding only whitespace are skipped. Described here
    /// as the array of its lines' objects.
    #[derive(ToSchema)]
    #[schema(min_items = 1, max_items = 10000)]
    pub(crate) struct NdjsonBatch(pub Vec<NewEvent>);

    /// An entity's state: its events' payloads merged in version order.
    #[derive(ToSchema)]
    pub(crate) struct EntityState {
        /// The entity.
        pub entity_id: String,
        /// The merged payloads (RFC 7386 JSON Merge Patch).
        #[schema(value_type = Value)]
        pub state: (),
        /// The version of the last event applied.
        #[schema(minimum = 1)]
        pub version: u64,
        /// The timestamp of the last event applied.
        #[schema(format = DateTime)]
        pub last_event_at: String,
        /// The `as_of` parameter as it was given; `null` without one.
        #[schema(format = DateTime, required = true)]
        pub as_of: Option<String>,
    }

    /// `GET /health`
    #[derive(ToSchema)]
    pub(crate) struct Health {
        /// Always `ok`.
        #[schema(example = "ok")]
        pub status: String,
        /// The server's version.
        #[schema(example = "0.1.0")]
        pub version: String,
    }

    /// The counters of the store.
    #[derive(ToSchema)]
    pub(crate) struct Stats {
        /// Events in the store, recovered ones included.
        #[schema(minimum = 0)]
        pub total_events: u64,
        /// Entities with at least one event.
        #[schema(minimum = 0)]
        pub total_entities: u64,
        /// Distinct event types.
        #[schema(minimum = 0)]
        pub total_event_types: u64,
        /// Events appended by this process since it started.
        #[schema(minimum = 0)]
        pub total_ingested: u64,
        /// Whether the store refuses writes after a storage failure.
        pub read_only: bool,
        /// Events held in memory as Arrow columns (sealed chunks) rather than as event
        /// objects.
        #[schema(minimum = 0)]
        pub columnar_events: u64,
        /// The bytes of those columns.
        #[schema(minimum = 0)]
        pub columnar_bytes: u64,
    }

    /// What backs the store, as its log describes itself.
    #[derive(ToSchema)]
    pub(crate) struct LogInfo {
        /// `memory`, `wal` or `wal+parquet`.
        pub kind: String,
        /// Whether an acknowledged event survives the process.
        pub durable: bool,
        /// The last position kept (0 when empty).
        #[schema(minimum = 0)]
        pub last_position: u64,
        /// The data directory, for a durable log.
        #[schema(required = true)]
        pub data_dir: Option<String>,
        /// When an append is acknowledged: `always` (after fdatasync), `none` or `memory`.
        pub sync: String,
        /// Bytes in WAL segments.
        #[schema(minimum = 0)]
        pub wal_bytes: u64,
        /// WAL segment files.
        #[schema(minimum = 0)]
        pub segments: u64,
        /// fdatasync calls made for records since start-up.
        #[schema(minimum = 0)]
        pub syncs: u64,
        /// Events covered by those syncs.
        #[schema(minimum = 0)]
        pub synced_events: u64,
        /// How long the last record's fdatasync took, in microseconds.
        #[schema(minimum = 0)]
        pub last_sync_micros: u64,
        /// The last position sealed into a Parquet chunk (0: none).
        #[schema(minimum = 0)]
        pub sealed_position: u64,
        /// Sealed chunks (Parquet files).
        #[schema(minimum = 0)]
        pub chunks: u64,
        /// Bytes in sealed chunks.
        #[schema(minimum = 0)]
        pub chunk_bytes: u64,
    }

    /// `GET /api/v1/projections`
    #[derive(ToSchema)]
    pub(crate) struct ProjectionList {
        /// Every registered projection; at least `entity_snapshots` and `event_counters`.
        pub projections: Vec<ProjectionName>,
    }

    /// A registered projection.
    #[derive(ToSchema)]
    pub(crate) struct ProjectionName {
        /// Its name, for `GET /api/v1/projections/{name}/{key}`.
        #[schema(example = "event_counters")]
        pub name: String,
    }

    /// One projection's state for one key.
    #[derive(ToSchema)]
    #[schema(example = json!({"name": "event_counters", "key": "order.placed", "state": {"count": 1}}))]
    pub(crate) struct ProjectionState {
        /// The projection.
        pub name: String,
        /// The key: an event type for `event_counters`, an entity id for `entity_snapshots`.
        pub key: String,
        /// Its state: `{"count": N}` for `event_counters`, `{"entity_id", "state",
        /// "version", "last_event_at"}` for `entity_snapshots`.
        #[schema(value_type = Value)]
        pub state: (),
    }

    /// One line of a subscription's NDJSON stream (the `data:` of an SSE marker).
    #[derive(ToSchema)]
    #[serde(tag = "type", rename_all = "snake_case")]
    pub(crate) enum StreamLine {
        /// A stored event (in SSE: the `data:` is the event itself).
        Event {
            /// The event.
            event: Event,
        },
        /// The catch-up is over: every matching event up to `position` was sent.
        CaughtUp {
            /// The position the catch-up reached.
            #[schema(minimum = 0)]
            position: u64,
        },
        /// Nothing else was sent for a while; every matching event up to `position` was.
        Heartbeat {
            /// The position the stream has covered.
            #[schema(minimum = 0)]
            position: u64,
        },
        /// The stream ends (e.g. `SubscriberTooSlow`).
        Error {
            /// What went wrong.
            error: StreamError,
        },
    }

    /// The error of a stream's last line.
    #[derive(ToSchema)]
    pub(crate) struct StreamError {
        /// E.g. `SubscriberTooSlow`.
        pub code: String,
        /// What went wrong, for people.
        pub message: String,
    }

    /// A binary body (Arrow IPC stream, Parquet file).
    #[derive(ToSchema)]
    #[schema(value_type = String, format = Binary)]
    pub(crate) struct Binary(pub Vec<u8>);
}

/// The filters of a query and of an export, combined with AND.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct EventFilters {
    /// Only this entity's events.
    #[param(required = false, min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")]
    entity_id: String,
    /// Only this type.
    #[param(required = false, min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")]
    event_type: String,
    /// `timestamp >= since` (RFC 3339).
    #[param(required = false, format = DateTime)]
    since: String,
    /// `timestamp <= until` (RFC 3339).
    #[param(required = false, format = DateTime)]
    until: String,
    /// The log as it was at that time: `timestamp <= as_of` (with `until` too, the
    /// earlier bound wins).
    #[param(required = false, format = DateTime)]
    as_of: String,
    /// `position > after`: the paging cursor.
    #[param(required = false, minimum = 0, format = "uint64")]
    after: u64,
}

/// The filters of a subscription.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct StreamFilters {
    /// Only this entity's events.
    #[param(required = false, min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")]
    entity_id: String,
    /// Only this type.
    #[param(required = false, min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")]
    event_type: String,
    /// Start after this position (default 0: from the first event).
    #[param(required = false, minimum = 0, format = "uint64")]
    after: u64,
}

/// The cursor a browser's `EventSource` sends when it reconnects.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub(crate) struct LastEventId {
    /// The last position received (the `id:` of the last event); wins over `after`.
    #[param(rename = "Last-Event-ID", required = false, minimum = 0, format = "uint64")]
    last_event_id: u64,
}

/// The page size of a query.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct QueryLimit {
    /// At most this many events (1..=10,000, default 1,000).
    #[param(required = false, minimum = 1, maximum = 10000, default = 1000)]
    limit: u64,
}

/// `as_of` of `GET /api/v1/entities/{entity_id}/state`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct AsOf {
    /// Replay only the events with `timestamp <= as_of` (RFC 3339).
    #[param(required = false, format = DateTime)]
    as_of: String,
}
