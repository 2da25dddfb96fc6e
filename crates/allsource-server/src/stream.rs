//! Subscriptions: `GET /api/v1/events/stream` sends every stored event after a cursor,
//! then each new event as it is committed, on one connection, as NDJSON or as
//! Server-Sent Events.
//!
//! A pull model. Each subscriber has a producer task that pages through the store's
//! query (after its cursor, with its filters) until it has sent every visible event,
//! sends one `caught_up` line, then waits for the committed position to advance and
//! pages again. It reads only through the query, so it never sees an event that is not
//! committed (durable); its cursor is the last position it sent, so it never skips or
//! repeats one.
//!
//! Appends never wait for subscribers. The engine's [`EventStore::on_commit`] hook runs
//! on the committing thread (for an in-memory store, under the sequencer's lock), so it
//! does no more than set a flag and wake one relay task when the flag was clear; the
//! relay, on the runtime, wakes every waiting producer through a `watch` channel. A
//! burst of commits costs one wake-up of the relay, whatever the number of subscribers.
//!
//! Bounded: at most [`SubscriptionSettings::subscribers_max`] streams are open at once
//! (`429 TooManySubscribers` past it; a stream holds its slot until its connection
//! closes). What waits for one subscriber's client is at most
//! [`SubscriptionSettings::buffer_bytes`] plus one line: the producer takes permits of
//! a semaphore for the bytes it queues, and the response body gives them back as the
//! HTTP layer takes the bytes. A producer that waits longer than
//! [`SubscriptionSettings::stall_grace`] for room gives up: the client gets what was
//! queued, then an error line, then the end of the response.
//!
//! The route is built here ([`route`]) and sits outside the request limits of the
//! ordinary routes (a per-request timeout would cut every stream).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use allsource_core::{Error, EventStore, EventView, Position, Query, QueryEventsRequest};
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, State};
use axum::http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, VARY};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Json;
use futures_core::Stream;
use serde::Serialize;
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::Instrument;

use crate::error::AppError;
use crate::extract::{parse_qvalue, StreamQuery};

/// The route of the stream.
pub const STREAM_PATH: &str = "/api/v1/events/stream";

/// How many events the producer reads from the store at a time.
pub const PAGE_EVENTS: usize = 256;

/// The most bytes of lines the producer queues as one piece (a single longer line is
/// one piece of its own).
pub const PIECE_BYTES_MAX: usize = 64 * 1024;

/// The media type of Server-Sent Events.
pub const EVENT_STREAM: &str = "text/event-stream";

/// The media type of newline-delimited JSON.
pub const NDJSON: &str = "application/x-ndjson";

/// The error code of a `429`: every subscriber slot is taken.
pub const TOO_MANY_SUBSCRIBERS: &str = "TooManySubscribers";

/// The seconds a client is asked to wait (`Retry-After`) after a `429`.
pub const TOO_MANY_SUBSCRIBERS_RETRY_AFTER_SECONDS: u64 = 1;

/// How subscriptions behave; see the server's `--heartbeat-secs`,
/// `--max-subscribers`, `--subscriber-buffer-bytes` and `--subscriber-stall-secs`.
///
/// ```
/// use std::time::Duration;
/// use allsource_server::SubscriptionSettings;
///
/// let settings = SubscriptionSettings::default()
///     .with_heartbeat(Duration::from_millis(100))
///     .with_subscribers_max(8);
/// assert_eq!(settings.subscribers_max, 8);
/// assert_eq!(settings.buffer_bytes, 1024 * 1024);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriptionSettings {
    /// A heartbeat line goes out after this long without any other line (default 15 s).
    pub heartbeat: Duration,
    /// The most streams open at once; one more gets `429` (default 1,024).
    pub subscribers_max: usize,
    /// The most bytes queued for one client, plus one line (default 1 MiB).
    pub buffer_bytes: usize,
    /// How long a producer waits for room in a full buffer before it closes the stream
    /// as too slow (default 30 s).
    pub stall_grace: Duration,
}

impl Default for SubscriptionSettings {
    fn default() -> Self {
        SubscriptionSettings {
            heartbeat: Duration::from_secs(15),
            subscribers_max: 1024,
            buffer_bytes: 1024 * 1024,
            stall_grace: Duration::from_secs(30),
        }
    }
}

impl SubscriptionSettings {
    /// With this heartbeat interval.
    pub fn with_heartbeat(mut self, heartbeat: Duration) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    /// With at most this many streams open at once.
    pub fn with_subscribers_max(mut self, subscribers_max: usize) -> Self {
        self.subscribers_max = subscribers_max;
        self
    }

    /// With this many bytes buffered per client.
    pub fn with_buffer_bytes(mut self, buffer_bytes: usize) -> Self {
        self.buffer_bytes = buffer_bytes;
        self
    }

    /// With this grace for a client whose buffer is full.
    pub fn with_stall_grace(mut self, stall_grace: Duration) -> Self {
        self.stall_grace = stall_grace;
        self
    }
}

/// The subscriptions of one server: their settings, the count of open streams, and
/// the switch that ends them all at shutdown. Clones share all of it. Streams are
/// served on one Tokio runtime: the task that wakes them starts with the first one.
#[derive(Clone)]
pub struct Subscriptions {
    shared: Arc<Shared>,
}

struct Shared {
    settings: SubscriptionSettings,
    active: AtomicUsize,
    /// Bumped by the relay after commits: producers wait for it to change (they read
    /// the position from their store).
    commits: watch::Sender<u64>,
    /// Raised by the commit hook, taken by the relay.
    commit_signal: Arc<CommitSignal>,
    /// Starts the relay with the first stream (the router may be built outside a
    /// runtime).
    relay: std::sync::Once,
    /// `true` once the server shuts down.
    closing: watch::Sender<bool>,
}

impl Default for Subscriptions {
    fn default() -> Self {
        Subscriptions::new(SubscriptionSettings::default())
    }
}

impl std::fmt::Debug for Subscriptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriptions")
            .field("settings", &self.shared.settings)
            .field("active", &self.active())
            .finish()
    }
}

impl Subscriptions {
    /// Subscriptions with these settings (a buffer of at least 1 byte and at most
    /// `u32::MAX`, a heartbeat of at least 1 ms).
    pub fn new(mut settings: SubscriptionSettings) -> Subscriptions {
        settings.buffer_bytes = settings.buffer_bytes.clamp(1, u32::MAX as usize);
        settings.heartbeat = settings.heartbeat.max(Duration::from_millis(1));
        let shared = Shared {
            settings,
            active: AtomicUsize::new(0),
            commits: watch::Sender::new(0),
            commit_signal: Arc::new(CommitSignal::default()),
            relay: std::sync::Once::new(),
            closing: watch::Sender::new(false),
        };
        Subscriptions { shared: Arc::new(shared) }
    }

    /// The settings in force.
    pub fn settings(&self) -> &SubscriptionSettings {
        &self.shared.settings
    }

    /// The number of streams open now (for metrics): each counts from its `200` until
    /// its connection closes.
    pub fn active(&self) -> usize {
        self.shared.active.load(Ordering::Relaxed)
    }

    /// Ends every stream, now and from now on, with an error line `ShuttingDown`:
    /// the server stops. Streams end cleanly, so clients can reconnect elsewhere.
    pub fn close(&self) {
        self.shared.closing.send_replace(true);
    }

    /// Wakes the producers whenever `store` commits.
    fn attach(&self, store: &EventStore) {
        let signal = self.shared.commit_signal.clone();
        store.on_commit(move |_position| signal.raise());
    }

    /// Starts the relay from commit hooks to producers, once; must run on the runtime.
    fn start_relay(&self) {
        self.shared.relay.call_once(|| {
            let (signal, shared) = (self.shared.commit_signal.clone(), Arc::downgrade(&self.shared));
            tokio::spawn(async move {
                loop {
                    signal.notify.notified().await;
                    // A swap, not a store: it reads (and so synchronizes with) the last
                    // raise, whose commit the woken producers must see.
                    signal.pending.swap(false, Ordering::AcqRel);
                    let Some(shared) = shared.upgrade() else { return };
                    shared.commits.send_modify(|n| *n = n.wrapping_add(1));
                }
            });
        });
    }

    /// A slot for one more stream, if any is free.
    fn try_slot(&self) -> Option<Slot> {
        let max = self.shared.settings.subscribers_max;
        self.shared
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| Slot(self.shared.clone()))
    }
}

/// What a commit hook does: raise the flag, and wake the relay if it was down.
#[derive(Default)]
struct CommitSignal {
    pending: AtomicBool,
    notify: Notify,
}

impl CommitSignal {
    fn raise(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            self.notify.notify_one();
        }
    }
}

/// One open stream's place in the count; given back when dropped.
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The stream's route ([`STREAM_PATH`]) over `store`, with its own state, for any
/// router.
pub(crate) fn route<S: Clone + Send + Sync + 'static>(
    store: Arc<EventStore>,
    subscriptions: Subscriptions,
) -> MethodRouter<S> {
    subscriptions.attach(&store);
    get(stream).with_state(StreamState { store, subscriptions })
}

#[derive(Clone)]
struct StreamState {
    store: Arc<EventStore>,
    subscriptions: Subscriptions,
}

/// `GET /api/v1/events/stream`
async fn stream(
    State(state): State<StreamState>,
    format: StreamFormat,
    StreamQuery(filters): StreamQuery,
) -> Result<Response, AppError> {
    // Bad filters: a JSON 400 before anything starts.
    Query::try_from(filters.clone())?;
    let Some(slot) = state.subscriptions.try_slot() else {
        return Ok(too_many_subscribers(state.subscriptions.settings().subscribers_max));
    };
    state.subscriptions.start_relay();
    let settings = state.subscriptions.settings().clone();
    let semaphore = Arc::new(Semaphore::new(settings.buffer_bytes));
    let (tx, rx) = mpsc::unbounded_channel();
    let cursor = filters.after.unwrap_or(0);
    tracing::info!(
        entity_id = filters.entity_id.as_deref(),
        event_type = filters.event_type.as_deref(),
        after = cursor,
        ?format,
        "subscriber connected"
    );
    let producer = Producer {
        store: state.store,
        filters,
        cursor,
        covered: 0,
        format,
        commits: state.subscriptions.shared.commits.subscribe(),
        closing: state.subscriptions.shared.closing.subscribe(),
        settings,
        tx,
        semaphore: semaphore.clone(),
        last_sent: Instant::now(),
        events_sent: 0,
    };
    tokio::spawn(producer.run().instrument(tracing::Span::current()));

    let content_type = match format {
        StreamFormat::Ndjson => NDJSON,
        StreamFormat::Sse => EVENT_STREAM,
    };
    let headers = [
        (CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (VARY, HeaderValue::from_static("accept")),
        // Tells nginx not to buffer the stream.
        (HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no")),
    ];
    let body = Body::from_stream(SubscriberBody { rx, semaphore, _slot: slot, ended: false });
    Ok((headers, body).into_response())
}

/// `429` with the contract's error shape and a `Retry-After`.
fn too_many_subscribers(max: usize) -> Response {
    let body = serde_json::json!({ "error": {
        "code": TOO_MANY_SUBSCRIBERS,
        "message": format!("all {max} subscriber slots are taken; retry later"),
    }});
    let retry_after = HeaderValue::from(TOO_MANY_SUBSCRIBERS_RETRY_AFTER_SECONDS);
    (StatusCode::TOO_MANY_REQUESTS, [(RETRY_AFTER, retry_after)], Json(body)).into_response()
}

/// The encoding of a stream, from the `Accept` header.
///
/// Server-Sent Events when `Accept` names `text/event-stream` with `q > 0` and names no
/// NDJSON type (`application/x-ndjson`, `application/ndjson`) with a `q` as high;
/// NDJSON otherwise: no `Accept`, `*/*`, NDJSON named, or neither named (lenient, as
/// queries are). A range with a malformed `q` is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamFormat {
    /// `application/x-ndjson`: one JSON object a line. The default.
    Ndjson,
    /// `text/event-stream`.
    Sse,
}

impl StreamFormat {
    fn negotiate(headers: &HeaderMap) -> StreamFormat {
        let mut sse_q: Option<u16> = None;
        let mut ndjson_q: Option<u16> = None;
        for value in headers.get_all(ACCEPT) {
            let Ok(text) = value.to_str() else { continue };
            for range in text.split(',') {
                let mut parts = range.split(';');
                let media_type = parts.next().unwrap_or_default().trim();
                let q = parts
                    .filter_map(|param| param.split_once('='))
                    .find(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
                    .map_or(Some(1000), |(_, value)| parse_qvalue(value.trim()));
                let Some(q) = q else { continue };
                if media_type.eq_ignore_ascii_case(EVENT_STREAM) {
                    sse_q = sse_q.max(Some(q));
                } else if media_type.eq_ignore_ascii_case(NDJSON)
                    || media_type.eq_ignore_ascii_case("application/ndjson")
                {
                    ndjson_q = ndjson_q.max(Some(q));
                }
            }
        }
        match sse_q {
            Some(q) if q > 0 && ndjson_q.is_none_or(|n| q > n) => StreamFormat::Sse,
            _ => StreamFormat::Ndjson,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for StreamFormat {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(StreamFormat::negotiate(&parts.headers))
    }
}

/// What the producer hands the response body.
enum Out {
    /// Lines, with the buffer permits they hold until the HTTP layer takes them.
    Data(Bytes, OwnedSemaphorePermit),
    /// The last line: the body ends after it.
    End(Bytes),
}

/// Why a producer stopped.
#[derive(Debug)]
enum Stop {
    /// The response body is gone: the client closed the connection.
    ClientGone,
    /// The buffer stayed full for longer than the grace.
    TooSlow,
    /// The server shuts down.
    ShuttingDown,
    /// A read failed (a bug: the filters were checked before the stream started).
    Failed(Error),
}

/// One subscriber's producer task.
struct Producer {
    store: Arc<EventStore>,
    /// The filters; `after` and `limit` are set per page.
    filters: QueryEventsRequest,
    /// The last position sent, or passed over as not matching.
    cursor: Position,
    /// Every matching event at or below this position has been sent.
    covered: Position,
    format: StreamFormat,
    settings: SubscriptionSettings,
    commits: watch::Receiver<u64>,
    closing: watch::Receiver<bool>,
    tx: mpsc::UnboundedSender<Out>,
    semaphore: Arc<Semaphore>,
    /// When the last line was queued: a heartbeat follows `heartbeat` after it.
    last_sent: Instant,
    events_sent: u64,
}

impl Producer {
    /// Produces until the stream stops, then sends its last line and logs why.
    async fn run(mut self) {
        let started = Instant::now();
        let Err(stop) = self.produce().await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let (events, cursor) = (self.events_sent, self.cursor);
        let last_line = match &stop {
            Stop::ClientGone => {
                tracing::info!(events, cursor, elapsed_ms, "subscriber disconnected");
                None
            }
            Stop::TooSlow => {
                tracing::warn!(
                    events,
                    cursor,
                    elapsed_ms,
                    stall_grace_ms = self.settings.stall_grace.as_millis() as u64,
                    "subscriber too slow: its buffer stayed full; closing its stream"
                );
                let message = format!(
                    "the client did not read for {:?} with its buffer full; resume after position {}",
                    self.settings.stall_grace, self.covered
                );
                Some(("SubscriberTooSlow", message))
            }
            Stop::ShuttingDown => {
                tracing::info!(events, cursor, elapsed_ms, "subscriber stream closed: shutting down");
                Some((
                    "ShuttingDown",
                    format!("the server is shutting down; resume after position {}", self.covered),
                ))
            }
            Stop::Failed(error) => {
                tracing::error!(%error, events, cursor, elapsed_ms, "subscriber stream failed");
                let message = match error {
                    Error::Internal(_) => {
                        "internal server error; the details are in the server's log".to_string()
                    }
                    other => other.to_string(),
                };
                Some((error.code(), message))
            }
        };
        if let Some((code, message)) = last_line {
            let mut line = Vec::new();
            encode_marker(
                self.format,
                &Line::Error { error: ErrorLine { code, message: &message } },
                &mut line,
            );
            // The body may be gone already; then nobody is left to tell.
            let _ = self.tx.send(Out::End(Bytes::from(line)));
        }
    }

    /// Catch-up, `caught_up`, then live: returns only when the stream stops.
    async fn produce(&mut self) -> Result<std::convert::Infallible, Stop> {
        self.send_visible().await?;
        let caught_up = Line::CaughtUp { position: self.covered };
        self.send_marker(&caught_up).await?;
        loop {
            tokio::select! {
                biased;
                _ = closed(&mut self.closing) => return Err(Stop::ShuttingDown),
                _ = self.tx.closed() => return Err(Stop::ClientGone),
                changed = self.commits.changed() => {
                    changed.map_err(|_| Stop::ShuttingDown)?;
                    self.send_visible().await?;
                }
                _ = tokio::time::sleep_until(self.last_sent + self.settings.heartbeat) => {
                    self.send_marker(&Line::Heartbeat { position: self.covered }).await?;
                }
            }
        }
    }

    /// Sends every matching event after the cursor that is visible now, page by page.
    async fn send_visible(&mut self) -> Result<(), Stop> {
        // Marked seen before reading: a commit from here on wakes the next round.
        self.commits.borrow_and_update();
        loop {
            // Read before the query: the query sees at least this far.
            let ceiling = self.store.committed_position();
            let request = QueryEventsRequest {
                after: Some(self.cursor),
                limit: Some(PAGE_EVENTS),
                ..self.filters.clone()
            };
            let page = self.store.query_views(request).map_err(Stop::Failed)?;
            let piece_bytes = self.settings.buffer_bytes.min(PIECE_BYTES_MAX);
            let mut piece = Vec::new();
            for event in &page.events {
                encode_event(self.format, event, &mut piece);
                self.cursor = event.position();
                self.events_sent += 1;
                if piece.len() >= piece_bytes {
                    self.send(std::mem::take(&mut piece)).await?;
                    // Queued: the client gets every matching event up to here, even
                    // if the stream is cut off before this round ends.
                    self.covered = self.cursor;
                }
            }
            if !piece.is_empty() {
                self.send(piece).await?;
                self.covered = self.cursor;
            }
            if page.next_after.is_none() {
                // Nothing else matches up to `ceiling`: later pages start there.
                self.cursor = self.cursor.max(ceiling);
                self.covered = self.cursor;
                return Ok(());
            }
            // A long catch-up shares the runtime's threads.
            tokio::task::yield_now().await;
        }
    }

    async fn send_marker(&mut self, line: &Line<'_>) -> Result<(), Stop> {
        let mut bytes = Vec::new();
        encode_marker(self.format, line, &mut bytes);
        self.send(bytes).await
    }

    /// Queues `bytes` once the buffer has room for them (or, for more than the whole
    /// buffer, once it is empty).
    async fn send(&mut self, bytes: Vec<u8>) -> Result<(), Stop> {
        let permits = bytes.len().min(self.settings.buffer_bytes) as u32;
        let acquire = self.semaphore.clone().acquire_many_owned(permits);
        let permit = tokio::select! {
            biased;
            _ = closed(&mut self.closing) => return Err(Stop::ShuttingDown),
            acquired = tokio::time::timeout(self.settings.stall_grace, acquire) => match acquired {
                Ok(Ok(permit)) => permit,
                // The body closed the semaphore: it is gone.
                Ok(Err(_)) => return Err(Stop::ClientGone),
                Err(_) => return Err(Stop::TooSlow),
            },
        };
        self.tx.send(Out::Data(Bytes::from(bytes), permit)).map_err(|_| Stop::ClientGone)?;
        self.last_sent = Instant::now();
        Ok(())
    }
}

/// Resolves once the server shuts down.
async fn closed(closing: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens when everything stops.
    let _ = closing.wait_for(|closing| *closing).await.map(|_| ());
}

/// A line other than an event, as NDJSON writes it and SSE puts in `data:`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line<'a> {
    /// The catch-up is over: every matching event up to `position` was sent.
    CaughtUp { position: Position },
    /// Nothing else was sent for a while; every matching event up to `position` was.
    Heartbeat { position: Position },
    /// The stream ends.
    Error { error: ErrorLine<'a> },
}

#[derive(Debug, Serialize)]
struct ErrorLine<'a> {
    code: &'a str,
    message: &'a str,
}

/// `{"type":"event","event":{...}}` as NDJSON, or `id:` and `data:` lines as SSE; the
/// event's JSON is written from its view (sealed events' texts copied from their
/// columns).
fn encode_event(format: StreamFormat, event: &EventView, out: &mut Vec<u8>) {
    match format {
        StreamFormat::Ndjson => {
            out.extend_from_slice(b"{\"type\":\"event\",\"event\":");
            event.write_json(out);
            out.extend_from_slice(b"}\n");
        }
        StreamFormat::Sse => {
            // Compact JSON has no raw line breaks, so it is one `data:` line.
            out.extend_from_slice(format!("id: {}\ndata: ", event.position()).as_bytes());
            event.write_json(out);
            out.extend_from_slice(b"\n\n");
        }
    }
}

fn encode_marker(format: StreamFormat, line: &Line<'_>, out: &mut Vec<u8>) {
    if format == StreamFormat::Sse {
        let name = match line {
            Line::CaughtUp { .. } => "caught_up",
            Line::Heartbeat { .. } => "heartbeat",
            Line::Error { .. } => "error",
        };
        out.extend_from_slice(format!("event: {name}\ndata: ").as_bytes());
    }
    // A plain enum of numbers and strings: serializing it cannot fail.
    let _ = serde_json::to_writer(&mut *out, line);
    out.push(b'\n');
    if format == StreamFormat::Sse {
        out.push(b'\n');
    }
}

/// The response body: what the producer queues, until its last line. A queue that
/// closes without one (the producer panicked) ends the body with an error, so the
/// client sees a cut transfer, not a clean end.
struct SubscriberBody {
    rx: mpsc::UnboundedReceiver<Out>,
    semaphore: Arc<Semaphore>,
    _slot: Slot,
    ended: bool,
}

impl Stream for SubscriberBody {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match ready!(self.rx.poll_recv(cx)) {
            // The permit goes back as the bytes leave the buffer.
            Some(Out::Data(bytes, _permit)) => Poll::Ready(Some(Ok(bytes))),
            Some(Out::End(bytes)) => {
                self.ended = true;
                Poll::Ready(Some(Ok(bytes)))
            }
            None => {
                self.ended = true;
                Poll::Ready(Some(Err(io::Error::other("the subscription stopped without its last line"))))
            }
        }
    }
}

impl Drop for SubscriberBody {
    fn drop(&mut self) {
        // Wakes a producer waiting for room: nobody will read any more.
        self.semaphore.close();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use allsource_core::{Event, NewEvent};
    use serde_json::{json, Value};

    use super::*;

    fn negotiate(accept: &[&str]) -> StreamFormat {
        let mut headers = HeaderMap::new();
        for value in accept {
            headers.append(ACCEPT, HeaderValue::from_str(value).unwrap());
        }
        StreamFormat::negotiate(&headers)
    }

    #[test]
    fn accept_picks_the_encoding() {
        use StreamFormat::{Ndjson, Sse};
        for (accept, want) in [
            (&[][..], Ndjson),
            (&["*/*"], Ndjson),
            (&["application/json"], Ndjson),
            (&["application/x-ndjson"], Ndjson),
            (&["text/event-stream"], Sse),
            (&["TEXT/Event-Stream; charset=utf-8"], Sse),
            (&["text/html", "text/event-stream"], Sse),
            (&["text/event-stream;q=0"], Ndjson),
            (&["text/event-stream;q=bad"], Ndjson),
            (&["text/event-stream, application/x-ndjson"], Ndjson),
            (&["text/event-stream, application/ndjson;q=0.5"], Sse),
            (&["text/event-stream;q=0.4, application/x-ndjson;q=0.5"], Ndjson),
        ] {
            assert_eq!(negotiate(accept), want, "{accept:?}");
        }
    }

    /// A stored event, and its view as the producer reads it.
    fn stored_event() -> (Arc<Event>, EventView) {
        let store = EventStore::new();
        let new = NewEvent {
            metadata: Some(json!({"m": "line\nbreak"})),
            ..Event::new("t".into(), "e".into(), json!({"text": "a\nb"}))
        };
        let event = store.append(new).unwrap().event;
        let view = store.get_event_view(event.id).unwrap();
        (event, view)
    }

    #[test]
    fn ndjson_lines() {
        let (event, view) = stored_event();
        let mut out = Vec::new();
        encode_event(StreamFormat::Ndjson, &view, &mut out);
        encode_marker(StreamFormat::Ndjson, &Line::CaughtUp { position: 7 }, &mut out);
        encode_marker(StreamFormat::Ndjson, &Line::Heartbeat { position: 8 }, &mut out);
        let error = Line::Error { error: ErrorLine { code: "SubscriberTooSlow", message: "m" } };
        encode_marker(StreamFormat::Ndjson, &error, &mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(lines[0]["type"], "event");
        assert_eq!(lines[0]["event"], serde_json::to_value(&*event).unwrap());
        assert_eq!(lines[1], json!({"type": "caught_up", "position": 7}));
        assert_eq!(lines[2], json!({"type": "heartbeat", "position": 8}));
        assert_eq!(
            lines[3],
            json!({"type": "error", "error": {"code": "SubscriberTooSlow", "message": "m"}})
        );
    }

    #[test]
    fn sse_messages() {
        let (event, view) = stored_event();
        let mut out = Vec::new();
        encode_event(StreamFormat::Sse, &view, &mut out);
        encode_marker(StreamFormat::Sse, &Line::CaughtUp { position: 1 }, &mut out);
        let text = String::from_utf8(out).unwrap();
        let messages: Vec<&str> = text.split_terminator("\n\n").collect();
        assert_eq!(messages.len(), 2, "{text:?}");
        let lines: Vec<&str> = messages[0].lines().collect();
        assert_eq!(lines[0], "id: 1");
        let data: Value = serde_json::from_str(lines[1].strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(data, serde_json::to_value(&*event).unwrap());
        assert_eq!(lines.len(), 2, "the event must be one data line: {text:?}");
        assert_eq!(messages[1], "event: caught_up\ndata: {\"type\":\"caught_up\",\"position\":1}");
    }

    #[test]
    fn slots_are_bounded_and_given_back() {
        let subscriptions = Subscriptions::new(SubscriptionSettings::default().with_subscribers_max(2));
        let first = subscriptions.try_slot().unwrap();
        let second = subscriptions.try_slot().unwrap();
        assert!(subscriptions.try_slot().is_none());
        assert_eq!(subscriptions.active(), 2);
        drop(first);
        assert_eq!(subscriptions.active(), 1);
        let third = subscriptions.try_slot().unwrap();
        drop((second, third));
        assert_eq!(subscriptions.active(), 0);
    }
}
