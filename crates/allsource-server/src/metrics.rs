//! Observability: the Prometheus metrics of `GET /metrics`, and what the request
//! guard (`guard`) needs for the request span: the request id header and the route kinds.
//!
//! [`Metrics`] is the registry (the `prometheus-client` crate writes the text
//! exposition format) with the HTTP figures, which the request guard (`guard`)
//! records on every response: responses by status class, append requests by outcome,
//! and the latency of appends and of queries by route template (never the raw path,
//! whose ids would make a series per entity). The store's figures (events and bytes
//! stored, the WAL's fsync latency and events per sync, ...) are read from the store
//! at each scrape, so that nothing on the write path works for metrics beyond the
//! WAL's few atomic adds.
//!
//! The same guard gives every request an `x-request-id` (a UUID unless the client
//! sent one), echoed on the response, and runs it in a span (`request_id`, `method`,
//! `route`, then `status`).

use std::borrow::Cow;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use allsource_core::{EventStore, HistogramSnapshot, Stats};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::error::AppError;
use crate::stream::{Subscriptions, STREAM_PATH};

/// The prefix of every metric name.
const PREFIX: &str = "allsource";

/// The routes of the appends, as their templates.
const APPEND_ROUTE: &str = "/api/v1/events";
const APPEND_BATCH_ROUTE: &str = "/api/v1/events/batch";

/// The latency buckets of the HTTP histograms, in seconds: 50 µs to 10 s.
const LATENCY_BUCKETS_SECONDS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The longest client-given `x-request-id` written to the log as it is; a longer one,
/// or one with bytes other than visible ASCII, is logged as `<invalid>` (it is still
/// echoed to the client).
pub const REQUEST_ID_LOGGED_BYTES_MAX: usize = 128;

/// The metrics registry of one server. Cloning shares it; `Default` makes a fresh one,
/// so that each test's server counts only its own requests.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    responses: Family<StatusClassLabels, Counter>,
    append_requests: Family<AppendLabels, Counter>,
    append_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    query_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    recovery_seconds: Gauge<f64, AtomicU64>,
    recovered_events: Gauge,
    started: Instant,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusClassLabels {
    class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppendLabels {
    route: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    /// The route's template: borrowed for the appends' routes, which are known, so that
    /// recording an append allocates nothing.
    route: Cow<'static, str>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS_SECONDS)
}

impl Metrics {
    /// A fresh registry with every metric of the server at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix(PREFIX);
        let responses = Family::<StatusClassLabels, Counter>::default();
        registry.register("http_responses", "HTTP responses by status class (1xx to 5xx)", responses.clone());
        let append_requests = Family::<AppendLabels, Counter>::default();
        registry.register(
            "append_requests",
            "Append requests by route and outcome: created, idempotent, or the error code",
            append_requests.clone(),
        );
        let append_seconds: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "append_duration_seconds",
            "Time from an append request to its response head (the commit included), by route",
            append_seconds.clone(),
        );
        let query_seconds: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "query_duration_seconds",
            "Time from a read request to its response head, by route template",
            query_seconds.clone(),
        );
        let recovery_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "recovery_seconds",
            "How long opening the data directory took at start-up (loading chunks, replaying the WAL)",
            recovery_seconds.clone(),
        );
        let recovered_events = Gauge::default();
        registry.register("recovered_events", "Events recovered at start-up", recovered_events.clone());
        registry.register(
            "build",
            "The server's version",
            Info::new(vec![("version".to_string(), env!("CARGO_PKG_VERSION").to_string())]),
        );
        let inner = Inner {
            registry,
            responses,
            append_requests,
            append_seconds,
            query_seconds,
            recovery_seconds,
            recovered_events,
            started: Instant::now(),
        };
        Metrics { inner: Arc::new(inner) }
    }

    /// Records the start-up's recovery: how long it took and how many events it found.
    pub fn set_recovery(&self, elapsed: Duration, events: u64) {
        self.inner.recovery_seconds.set(elapsed.as_secs_f64());
        self.inner.recovered_events.set(i64::try_from(events).unwrap_or(i64::MAX));
    }

    /// Every metric in the Prometheus text exposition format (version 0.0.4): the
    /// HTTP figures, then those of `store` and `subscriptions`, read now.
    pub fn render(
        &self,
        store: &EventStore,
        subscriptions: &Subscriptions,
    ) -> Result<String, std::fmt::Error> {
        let mut text = String::with_capacity(8 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.inner.registry)?;
        let mut scrape = Registry::with_prefix(PREFIX);
        scrape.register_collector(Box::new(StoreFigures {
            stats: store.stats(),
            subscribers: subscriptions.active(),
            uptime_seconds: self.inner.started.elapsed().as_secs_f64(),
        }));
        prometheus_client::encoding::prometheus_text::encode(&mut text, &scrape)?;
        Ok(text)
    }

    /// Records an answer to a request that never reached the router: hyper's own to a
    /// request it could not read (see [`parse_errors`](crate::parse_errors)).
    pub(crate) fn record_unread(&self, status: StatusCode) {
        let class = status_class(status);
        self.inner.responses.get_or_create(&StatusClassLabels { class }).inc();
    }

    /// Records one response: its status class, and for an append or a query its
    /// latency, and for an append its outcome.
    pub(crate) fn record(
        &self,
        route: RouteKind,
        status: StatusCode,
        error_code: Option<&str>,
        elapsed: Duration,
    ) {
        let class = status_class(status);
        self.inner.responses.get_or_create(&StatusClassLabels { class }).inc();
        match route {
            RouteKind::Append(route) => {
                let outcome = append_outcome(status, error_code);
                self.inner.append_requests.get_or_create(&AppendLabels { route, outcome }).inc();
                self.inner
                    .append_seconds
                    .get_or_create(&RouteLabels { route: Cow::Borrowed(route) })
                    .observe(elapsed.as_secs_f64());
            }
            RouteKind::Query(route) => {
                self.inner
                    .query_seconds
                    .get_or_create(&RouteLabels { route: Cow::Owned(route) })
                    .observe(elapsed.as_secs_f64());
            }
            RouteKind::Other => {}
        }
    }
}

/// `GET /metrics`: the route, over the store of the router's state.
pub(crate) fn scrape_route(metrics: Metrics, subscriptions: Subscriptions) -> MethodRouter<Arc<EventStore>> {
    get(move |State(store): State<Arc<EventStore>>| async move { scrape(&metrics, &store, &subscriptions) })
}

fn scrape(metrics: &Metrics, store: &EventStore, subscriptions: &Subscriptions) -> Response {
    match metrics.render(store, subscriptions) {
        Ok(text) => {
            let content_type =
                HeaderValue::from_static(prometheus_client::encoding::prometheus_text::CONTENT_TYPE);
            ([(CONTENT_TYPE, content_type)], text).into_response()
        }
        Err(_) => AppError::from(allsource_core::Error::Internal("could not encode the metrics".to_string()))
            .into_response(),
    }
}

/// The request id header, set on every request and echoed on every response.
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The contract's error code of an error response, left in the response's extensions
/// by [`AppError`] for the metrics.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ErrorCode(pub(crate) &'static str);

/// What a matched route is, for the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RouteKind {
    /// A single or batch append, by its template.
    Append(&'static str),
    /// A read under `/api/` (a query, a get, a state, an export, ...), by its template.
    Query(String),
    /// Anything else: `/health`, `/metrics`, subscriptions, unknown routes, reads of
    /// the append routes (405).
    Other,
}

impl RouteKind {
    /// `template` is the route's template (`/api/v1/events/{id}`), never the raw path.
    pub(crate) fn of(method: &Method, template: &str) -> RouteKind {
        match (method, template) {
            (&Method::POST, APPEND_ROUTE) => RouteKind::Append(APPEND_ROUTE),
            (&Method::POST, APPEND_BATCH_ROUTE) => RouteKind::Append(APPEND_BATCH_ROUTE),
            // The append routes answer a read with 405: not a query.
            (&Method::GET | &Method::HEAD, _)
                if template.starts_with("/api/")
                    && ![STREAM_PATH, APPEND_ROUTE, APPEND_BATCH_ROUTE].contains(&template) =>
            {
                RouteKind::Query(template.to_string())
            }
            _ => RouteKind::Other,
        }
    }
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// `created` (201), `idempotent` (200: nothing appended), else the error code, or
/// the status class when the response carries no code.
fn append_outcome(status: StatusCode, error_code: Option<&str>) -> &'static str {
    match (status, error_code) {
        (StatusCode::CREATED, _) => "created",
        (StatusCode::OK, _) => "idempotent",
        (_, Some(code)) => known_code(code).unwrap_or("other_error"),
        (status, None) if status.is_client_error() => "4xx",
        (status, None) if status.is_server_error() => "5xx",
        _ => "other",
    }
}

/// The error code as a `'static` label value; only the codes the server answers with,
/// so that the label's values stay few.
fn known_code(code: &str) -> Option<&'static str> {
    const CODES: [&str; 16] = [
        "InvalidEvent",
        "ValidationError",
        "ConcurrencyConflict",
        "DuplicateEventId",
        "PayloadTooLarge",
        "UnsupportedMediaType",
        "NotFound",
        "MethodNotAllowed",
        "EventNotFound",
        "EntityNotFound",
        "Unauthorized",
        "Forbidden",
        "Overloaded",
        "Timeout",
        "StorageError",
        "InternalError",
    ];
    CODES.into_iter().find(|known| *known == code)
}

/// A client's request id as it may go into the log: visible ASCII of a bounded
/// length, else `<invalid>`.
pub(crate) fn loggable_request_id(value: &HeaderValue) -> &str {
    match value.to_str() {
        Ok(text)
            if !text.is_empty()
                && text.len() <= REQUEST_ID_LOGGED_BYTES_MAX
                && text.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            text
        }
        _ => "<invalid>",
    }
}

/// The store's figures, read at one scrape.
#[derive(Debug)]
struct StoreFigures {
    stats: Stats,
    subscribers: usize,
    uptime_seconds: f64,
}

impl Collector for StoreFigures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = &self.stats;
        let log = &stats.log;
        let gauges: [(&str, &str, i64); 5] = [
            ("events_stored", "Events in the store, recovered ones included.", count(stats.total_events)),
            ("entities", "Entities with at least one event.", count(stats.total_entities)),
            ("event_types", "Distinct event types.", count(stats.total_event_types)),
            (
                "read_only",
                "1 while the store refuses writes after a storage failure.",
                i64::from(stats.read_only),
            ),
            ("subscribers", "Subscriptions (event streams) open now.", count(self.subscribers as u64)),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let appended = ConstCounter::new(stats.total_ingested);
        appended.encode(encoder.encode_descriptor(
            "events_appended",
            "Events appended (committed) by this process since it started.",
            None,
            appended.metric_type(),
        )?)?;
        let uptime = ConstGauge::new(self.uptime_seconds);
        uptime.encode(encoder.encode_descriptor(
            "uptime_seconds",
            "Seconds since the server started.",
            None,
            uptime.metric_type(),
        )?)?;
        if !log.durable {
            return Ok(());
        }
        let mut bytes = encoder.encode_descriptor(
            "storage_bytes",
            "Bytes on disk: the WAL's segments and the sealed Parquet chunks.",
            None,
            MetricType::Gauge,
        )?;
        for (kind, value) in [("wal", log.wal_bytes), ("chunks", log.chunk_bytes)] {
            bytes.encode_family(&[("kind", kind)])?.encode_gauge(&count(value))?;
        }
        let files: [(&str, &str, u64); 2] = [
            ("wal_segments", "WAL segment files.", log.segments),
            ("chunks", "Sealed Parquet chunks.", log.chunks),
        ];
        for (name, help, value) in files {
            let gauge = ConstGauge::new(count(value));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        encode_histogram(
            &mut encoder,
            "wal_fsync_duration_seconds",
            "How long each WAL record's fdatasync took (with --sync always).",
            &log.sync_micros,
            1e6,
        )?;
        encode_histogram(
            &mut encoder,
            "wal_events_per_sync",
            "How many events each WAL fdatasync covered: the group commit's group size.",
            &log.events_per_sync,
            1.0,
        )
    }
}

/// Writes a snapshot of the storage's histograms, its values divided by `unit`
/// (microseconds to seconds: 1e6; a division, so that 100 µs is exactly `0.0001`).
fn encode_histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    snapshot: &HistogramSnapshot,
    unit: f64,
) -> Result<(), std::fmt::Error> {
    let buckets = histogram_buckets(snapshot, unit);
    let count = snapshot.count();
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
        snapshot.sum as f64 / unit,
        count,
        &buckets,
        None,
    )
}

/// The buckets of `snapshot` as the encoder takes them: upper bound (in `unit`) and the
/// bucket's own count, the last bound infinite.
fn histogram_buckets(snapshot: &HistogramSnapshot, unit: f64) -> Vec<(f64, u64)> {
    let bounds = snapshot.bounds.iter().map(|&bound| bound as f64 / unit).chain([f64::INFINITY]);
    bounds.zip(snapshot.counts.iter().copied()).collect()
}

fn count(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_classified_by_template() {
        let check = |method: Method, template: &str, want: RouteKind| {
            assert_eq!(RouteKind::of(&method, template), want, "{method} {template}");
        };
        check(Method::POST, "/api/v1/events", RouteKind::Append(APPEND_ROUTE));
        check(Method::POST, "/api/v1/events/batch", RouteKind::Append(APPEND_BATCH_ROUTE));
        check(Method::GET, "/api/v1/events/query", RouteKind::Query("/api/v1/events/query".into()));
        check(Method::GET, "/api/v1/events/{id}", RouteKind::Query("/api/v1/events/{id}".into()));
        check(Method::HEAD, "/api/v1/stats", RouteKind::Query("/api/v1/stats".into()));
        check(Method::GET, "/api/v1/events/stream", RouteKind::Other);
        check(Method::GET, "/health", RouteKind::Other);
        check(Method::GET, "/metrics", RouteKind::Other);
        check(Method::PUT, "/api/v1/events", RouteKind::Other);
        check(Method::GET, "/api/v1/events", RouteKind::Other);
        check(Method::HEAD, "/api/v1/events/batch", RouteKind::Other);
    }

    #[test]
    fn statuses_and_outcomes() {
        let check = |status: u16, code: Option<&str>, class: &str, outcome: &str| {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(status_class(status), class, "{status}");
            assert_eq!(append_outcome(status, code), outcome, "{status} {code:?}");
        };
        check(201, None, "2xx", "created");
        check(200, None, "2xx", "idempotent");
        check(400, Some("InvalidEvent"), "4xx", "InvalidEvent");
        check(409, Some("DuplicateEventId"), "4xx", "DuplicateEventId");
        check(409, Some("SomethingNew"), "4xx", "other_error");
        check(413, None, "4xx", "4xx");
        check(503, Some("StorageError"), "5xx", "StorageError");
        check(500, None, "5xx", "5xx");
        check(101, None, "1xx", "other");
        check(304, None, "3xx", "other");
    }

    #[test]
    fn request_ids_are_logged_only_when_plain() {
        let check = |value: &[u8], want: &str| {
            let value = HeaderValue::from_bytes(value).unwrap();
            assert_eq!(loggable_request_id(&value), want, "{value:?}");
        };
        check(b"abc-123", "abc-123");
        check(b"", "<invalid>");
        check(b"has space", "<invalid>");
        check("caf\u{e9}".as_bytes(), "<invalid>");
        check(&[b'a'; REQUEST_ID_LOGGED_BYTES_MAX], &"a".repeat(REQUEST_ID_LOGGED_BYTES_MAX));
        check(&[b'a'; REQUEST_ID_LOGGED_BYTES_MAX + 1], "<invalid>");
    }

    #[test]
    fn storage_histograms_scale_and_end_at_infinity() {
        static BOUNDS: [u64; 2] = [100, 1_000];
        let snapshot = HistogramSnapshot { bounds: &BOUNDS, counts: vec![3, 0, 2], sum: 7_000 };
        assert_eq!(histogram_buckets(&snapshot, 1e6), [(1e-4, 3), (1e-3, 0), (f64::INFINITY, 2)]);
        assert_eq!(histogram_buckets(&HistogramSnapshot::default(), 1.0), []);
    }

    #[test]
    fn rendered_text_has_every_family() {
        let metrics = Metrics::new();
        let store = EventStore::new();
        metrics.record(RouteKind::Append(APPEND_ROUTE), StatusCode::CREATED, None, Duration::from_millis(2));
        metrics.record(
            RouteKind::Query("/api/v1/events/{id}".into()),
            StatusCode::NOT_FOUND,
            Some("EventNotFound"),
            Duration::from_micros(70),
        );
        metrics.set_recovery(Duration::from_millis(1_500), 42);
        let text = metrics.render(&store, &Subscriptions::default()).unwrap();
        for line in [
            "allsource_http_responses_total{class=\"2xx\"} 1",
            "allsource_http_responses_total{class=\"4xx\"} 1",
            "allsource_append_requests_total{route=\"/api/v1/events\",outcome=\"created\"} 1",
            "allsource_append_duration_seconds_bucket{route=\"/api/v1/events\",le=\"0.0025\"} 1",
            "allsource_query_duration_seconds_bucket{route=\"/api/v1/events/{id}\",le=\"0.0001\"} 1",
            "allsource_query_duration_seconds_bucket{route=\"/api/v1/events/{id}\",le=\"5e-05\"} 0",
            "allsource_subscribers 0",
            "allsource_recovery_seconds 1.5",
            "allsource_recovered_events 42",
            &format!("allsource_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION")),
            "allsource_events_stored 0",
            "allsource_events_appended_total 0",
            "allsource_read_only 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in:\n{text}");
        }
        // An in-memory store has no WAL: no storage figures.
        assert!(!text.contains("allsource_wal_"), "{text}");
    }
}
