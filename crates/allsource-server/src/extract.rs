//! Extractors: turn the parts of a request into the engine's input types, and every
//! rejection into an [`AppError`] with the contract's JSON body.
//!
//! axum's own extractors answer a bad request with a plain-text body; these wrap them
//! (or replace them) so that a bad body, path or query string gets our error shape.
//! Only parsing happens here: the rules an event or a query must obey are checked by
//! the engine (`allsource-core-types`), once.

use std::cell::Cell;
use std::marker::PhantomData;
use std::pin::Pin;
use std::time::Duration;

use allsource_core::limits::REQUEST_BYTES_MAX;
use allsource_core::{Error, IntoProposal, ProposedEvent, QueryEventsRequest, RawNewEvent, Timestamp, Uuid};
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::{ACCEPT, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, EXPECT};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use percent_encoding::percent_decode_str;
use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::error::AppError;

/// The body of `POST /api/v1/events`: one event, as `application/json`, validated. Its
/// payload and metadata are kept as sent (without whitespace), never parsed into values.
#[derive(Debug, Clone, PartialEq)]
pub struct EventBody(pub ProposedEvent);

impl<S: Send + Sync> FromRequest<S> for EventBody {
    type Rejection = AppError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, AppError> {
        let format = body_format(req.headers(), false)?;
        debug_assert_eq!(format, BodyFormat::Json);
        let bytes = read_body(req).await?;
        let event = parse_event(&bytes)
            .map_err(|e| Error::InvalidEvent(format!("the body is not a valid event: {e}")))?;
        Ok(EventBody(event.into_proposal()?))
    }
}

/// The body of `POST /api/v1/events/batch`: `{"events": [...]}` as `application/json`,
/// or one event per line as `application/x-ndjson` (blank lines are skipped).
///
/// A malformed or invalid item fails the whole batch with a message that names the
/// item's index (counted from 0, blank lines not counted): every item is parsed, then
/// every item validated. The number of items is checked by the engine, not here.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchBody(pub Vec<ProposedEvent>);

impl<S: Send + Sync> FromRequest<S> for BatchBody {
    type Rejection = AppError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, AppError> {
        let format = body_format(req.headers(), true)?;
        let bytes = read_body(req).await?;
        let proposals = match format {
            BodyFormat::Json => parse_json_batch(&bytes)?
                .into_iter()
                .enumerate()
                .map(|(index, event)| event.into_proposal().map_err(|e| e.at_batch_item(index)))
                .collect::<Result<Vec<_>, Error>>()?,
            BodyFormat::Ndjson => parse_ndjson_batch(&bytes)?
                .into_iter()
                .enumerate()
                .map(|(index, (line, event))| {
                    event.into_proposal().map_err(|e| e.about(&format!("batch item {index} (line {line})")))
                })
                .collect::<Result<Vec<_>, Error>>()?,
        };
        Ok(BatchBody(proposals))
    }
}

/// Path parameters, percent-decoded (`order%2F7` is `order/7`), with our error shape
/// when they cannot be decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct PathParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParams<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(PathParams(value)),
            // A 5xx rejection means the route and the extractor disagree: our bug.
            Err(rejection) if rejection.status().is_server_error() => {
                Err(Error::Internal(format!("path extraction failed: {}", rejection.body_text())).into())
            }
            Err(rejection) => {
                Err(Error::Validation(format!("bad path parameter: {}", rejection.body_text())).into())
            }
        }
    }
}

/// The `{id}` of `GET /api/v1/events/{id}`: a UUID in any of its usual spellings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventIdParam(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for EventIdParam {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let PathParams(text) = PathParams::<String>::from_request_parts(parts, state).await?;
        Uuid::try_parse(&text)
            .map(EventIdParam)
            .map_err(|e| Error::Validation(format!("event id {text:?} is not a UUID: {e}")).into())
    }
}

/// The query string of `GET /api/v1/events/query`.
#[derive(Debug, Clone, PartialEq)]
pub struct EventsQuery(pub QueryEventsRequest);

impl<S: Send + Sync> FromRequestParts<S> for EventsQuery {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, AppError> {
        let mut params = QueryParams::of(parts)?;
        let mut request = filters(&mut params)?;
        request.limit = params
            .take("limit")?
            .map(|v| parse_number("limit", &v, "an integer in 1..=10000"))
            .transpose()?;
        params.finish()?;
        Ok(EventsQuery(request))
    }
}

/// The query string of `GET /api/v1/export/{parquet,arrow}`: the query's filters
/// without `limit` (an export is every match; a `limit` is rejected as an unknown
/// parameter rather than silently ignored). The returned request's `limit` is `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportQuery(pub QueryEventsRequest);

impl<S: Send + Sync> FromRequestParts<S> for ExportQuery {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, AppError> {
        let mut params = QueryParams::of(parts)?;
        let request = filters(&mut params)?;
        params.finish()?;
        Ok(ExportQuery(request))
    }
}

/// The query string and headers of `GET /api/v1/events/stream`: `entity_id`,
/// `event_type` and `after`, as a request whose `limit` is `None`. A `Last-Event-ID`
/// header (what a browser's `EventSource` sends when it reconnects) is the cursor
/// and wins over `after`; it must be a position too.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamQuery(pub QueryEventsRequest);

impl<S: Send + Sync> FromRequestParts<S> for StreamQuery {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, AppError> {
        let mut params = QueryParams::of(parts)?;
        let after = params
            .take("after")?
            .map(|v| parse_number("after", &v, "a position (an integer >= 0)"))
            .transpose()?;
        let request = QueryEventsRequest {
            entity_id: params.take("entity_id")?,
            event_type: params.take("event_type")?,
            after,
            ..QueryEventsRequest::default()
        };
        params.finish()?;
        let last_event_id = match parts.headers.get("last-event-id") {
            None => None,
            Some(value) => {
                Some(value.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()).ok_or_else(|| {
                    Error::Validation(format!(
                        "header Last-Event-ID must be a position (an integer >= 0), got {:?}",
                        String::from_utf8_lossy(value.as_bytes())
                    ))
                })?)
            }
        };
        Ok(StreamQuery(QueryEventsRequest { after: last_event_id.or(request.after), ..request }))
    }
}

/// The filters of a query (every parameter but `limit`), parsed; not yet validated
/// (that is the engine's `Query::try_from`).
fn filters(params: &mut QueryParams) -> Result<QueryEventsRequest, AppError> {
    Ok(QueryEventsRequest {
        entity_id: params.take("entity_id")?,
        event_type: params.take("event_type")?,
        since: params.take("since")?.map(|v| parse_timestamp("since", &v, Bound::Lower)).transpose()?,
        until: params.take("until")?.map(|v| parse_timestamp("until", &v, Bound::Upper)).transpose()?,
        as_of: params.take("as_of")?.map(|v| parse_timestamp("as_of", &v, Bound::Upper)).transpose()?,
        after: params
            .take("after")?
            .map(|v| parse_number("after", &v, "a position (an integer >= 0)"))
            .transpose()?,
        limit: None,
    })
}

/// The media type of an Arrow IPC stream.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// The representation of a query's answer the client asked for with `Accept`.
///
/// Arrow only when the `Accept` header names [`ARROW_STREAM`] exactly (any case,
/// parameters other than `q` ignored) with `q > 0`, and JSON is not preferred: a
/// higher `q` for JSON (named exactly or through `application/*` or `*/*`, the most
/// specific range deciding) wins, and so does JSON named exactly with the same `q`.
/// Everything else is JSON: no `Accept`, `*/*`, `application/json`, and also an
/// `Accept` that allows neither (`text/html`): the server is lenient rather than
/// answering `406`, which the contract does not have. A range with a malformed `q` is
/// ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryFormat {
    /// `application/json`, the default.
    Json,
    /// `application/vnd.apache.arrow.stream`.
    Arrow,
}

impl QueryFormat {
    /// The format that `headers` ask for.
    pub fn negotiate(headers: &HeaderMap) -> QueryFormat {
        // q-values in thousandths; JSON's with how specifically it was matched
        // (3 exact, 2 `application/*`, 1 `*/*`).
        let mut arrow_q: Option<u16> = None;
        let mut json: Option<(u8, u16)> = None;
        for value in headers.get_all(ACCEPT) {
            let Ok(text) = value.to_str() else { continue };
            for range in text.split(',') {
                let mut parts = range.split(';');
                let media_type = parts.next().unwrap_or_default().trim();
                if media_type.is_empty() {
                    continue;
                }
                let q = parts
                    .filter_map(|param| param.split_once('='))
                    .find(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
                    .map_or(Some(1000), |(_, value)| parse_qvalue(value.trim()));
                let Some(q) = q else { continue };
                if media_type.eq_ignore_ascii_case(ARROW_STREAM) {
                    arrow_q = arrow_q.max(Some(q));
                }
                let specificity = if media_type.eq_ignore_ascii_case("application/json") {
                    3
                } else if media_type.eq_ignore_ascii_case("application/*") {
                    2
                } else if media_type == "*/*" {
                    1
                } else {
                    0
                };
                if specificity > 0 {
                    json = json.max(Some((specificity, q)));
                }
            }
        }
        let Some(arrow_q) = arrow_q.filter(|&q| q > 0) else { return QueryFormat::Json };
        let (json_specificity, json_q) = json.unwrap_or((0, 0));
        if arrow_q > json_q || (arrow_q == json_q && json_specificity < 3) {
            QueryFormat::Arrow
        } else {
            QueryFormat::Json
        }
    }
}

/// A q-value (`0`, `0.5`, `1.000`) in thousandths; `None` if it is not one.
pub(crate) fn parse_qvalue(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.len() != 1 || fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{fraction:0<3}").parse::<u16>().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueryFormat {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(QueryFormat::negotiate(&parts.headers))
    }
}

/// The query string of `GET /api/v1/entities/{entity_id}/state`: an optional `as_of`,
/// as the time it means and as the text the client gave (which the answer echoes; a
/// `+` that arrived as a space is given back as the `+` it was).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsOfQuery(pub Option<(Timestamp, String)>);

impl<S: Send + Sync> FromRequestParts<S> for AsOfQuery {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, AppError> {
        let mut params = QueryParams::of(parts)?;
        let as_of = match params.take("as_of")? {
            None => None,
            Some(text) => {
                let at = parse_timestamp("as_of", &text, Bound::Upper)?;
                let echo = match Timestamp::parse_upper_bound(&text) {
                    Ok(_) => text,
                    Err(_) => text.replace(' ', "+"),
                };
                Some((at, echo))
            }
        };
        params.finish()?;
        Ok(AsOfQuery(as_of))
    }
}

/// An empty query string, for endpoints that take no parameters: a parameter there is
/// a mistake (say, `as_of` on a snapshot), not something to ignore silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoQuery;

impl<S: Send + Sync> FromRequestParts<S> for NoQuery {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, AppError> {
        QueryParams::of(parts)?.finish()?;
        Ok(NoQuery)
    }
}

/// The decoded `name=value` pairs of a query string, taken one name at a time; what is
/// left at the end is an unknown parameter. A list, not a map: a request names a few.
struct QueryParams {
    params: Vec<(String, String)>,
    taken: Vec<&'static str>,
}

impl QueryParams {
    fn of(parts: &Parts) -> Result<Self, AppError> {
        let query = parts.uri.query().unwrap_or("");
        check_query_utf8(query)?;
        let params = form_urlencoded::parse(query.as_bytes())
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect();
        Ok(QueryParams { params, taken: Vec::new() })
    }

    /// The value of parameter `name`, if given; given twice is an error.
    fn take(&mut self, name: &'static str) -> Result<Option<String>, AppError> {
        self.taken.push(name);
        let Some(at) = self.params.iter().position(|(given, _)| given == name) else { return Ok(None) };
        let (_, value) = self.params.swap_remove(at);
        if self.params.iter().any(|(given, _)| given == name) {
            return Err(Error::Validation(format!("query parameter '{name}' is given more than once")).into());
        }
        Ok(Some(value))
    }

    /// Fails on the first parameter nobody took.
    fn finish(self) -> Result<(), AppError> {
        let mut unknown: Vec<&String> = self.params.iter().map(|(name, _)| name).collect();
        unknown.sort();
        let Some(name) = unknown.first() else { return Ok(()) };
        let expected = if self.taken.is_empty() {
            "this endpoint takes no query parameters".to_string()
        } else {
            format!("expected one of: {}", self.taken.join(", "))
        };
        Err(Error::Validation(format!("unknown query parameter '{name}' ({expected})")).into())
    }
}

/// Fails on a query-string name or value that is not UTF-8 once percent-decoded. The
/// form decoder would replace such bytes with U+FFFD, and so answer about another id
/// (`entity_id=%FF` would be the entity `"\u{FFFD}"`); a path segment is refused the same way.
fn check_query_utf8(query: &str) -> Result<(), AppError> {
    // `&`, `=` and `+` are ASCII: decoding a whole `name=value` checks both halves.
    match query.split('&').find(|part| percent_decode_str(part).decode_utf8().is_err()) {
        None => Ok(()),
        Some(part) => {
            Err(Error::Validation(format!("query string: '{part}' is not UTF-8 after percent-decoding"))
                .into())
        }
    }
}

/// Which end of a time range a timestamp bounds: it decides how a time finer than a
/// microsecond rounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    Lower,
    Upper,
}

fn parse_timestamp(name: &str, text: &str, bound: Bound) -> Result<Timestamp, AppError> {
    let parse = |text: &str| match bound {
        Bound::Lower => Timestamp::parse_lower_bound(text),
        Bound::Upper => Timestamp::parse_upper_bound(text),
    };
    let error = match parse(text) {
        Ok(timestamp) => return Ok(timestamp),
        Err(error) => error,
    };
    // A `+` of an offset that was not percent-encoded arrives as a space (form
    // encoding); take it back rather than make every shell user encode it.
    if text.contains(' ') {
        if let Ok(timestamp) = parse(&text.replace(' ', "+")) {
            return Ok(timestamp);
        }
    }
    Err(Error::Validation(format!("query parameter '{name}': {error}")).into())
}

fn parse_number<T: std::str::FromStr>(name: &str, text: &str, expected: &str) -> Result<T, AppError> {
    text.parse::<T>().map_err(|_| {
        Error::Validation(format!("query parameter '{name}' must be {expected}, got {text:?}")).into()
    })
}

/// The formats a request body may come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyFormat {
    /// `application/json` (or `application/*+json`), UTF-8.
    Json,
    /// `application/x-ndjson` (or `application/ndjson`): one JSON value per line.
    Ndjson,
}

/// The body's format from its `Content-Type`; anything else, or a `Content-Encoding`
/// other than `identity`, is `415`.
fn body_format(headers: &HeaderMap, ndjson_allowed: bool) -> Result<BodyFormat, AppError> {
    let accepted =
        if ndjson_allowed { "application/json or application/x-ndjson" } else { "application/json" };
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Err(AppError::UnsupportedMediaType(format!(
            "the request has no Content-Type; send the body as {accepted}"
        )));
    };
    let unsupported = || {
        AppError::UnsupportedMediaType(format!(
            "Content-Type {:?} is not supported here; send the body as {accepted} (UTF-8)",
            String::from_utf8_lossy(value.as_bytes())
        ))
    };
    // No content coding is decoded: a compressed body would be read as if it were
    // not (RFC 9110, 8.4.1: answer 415 to a coding the server does not accept).
    for coding in headers.get_all(CONTENT_ENCODING) {
        let identity = coding.to_str().is_ok_and(|coding| {
            coding.split(',').all(|c| c.trim().is_empty() || c.trim().eq_ignore_ascii_case("identity"))
        });
        if !identity {
            return Err(AppError::UnsupportedMediaType(format!(
                "Content-Encoding {:?} is not supported; send the body uncompressed",
                String::from_utf8_lossy(coding.as_bytes())
            )));
        }
    }
    let text = value.to_str().map_err(|_| unsupported())?;
    let mut parts = text.split(';');
    let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    for param in parts {
        let Some((name, value)) = param.split_once('=') else { continue };
        if name.trim().eq_ignore_ascii_case("charset") {
            let charset = value.trim().trim_matches('"');
            if !charset.eq_ignore_ascii_case("utf-8") && !charset.eq_ignore_ascii_case("utf8") {
                return Err(unsupported());
            }
        }
    }
    let is_json =
        essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"));
    let is_ndjson = essence == "application/x-ndjson" || essence == "application/ndjson";
    match (is_json, is_ndjson && ndjson_allowed) {
        (true, _) => Ok(BodyFormat::Json),
        (false, true) => Ok(BodyFormat::Ndjson),
        (false, false) => Err(unsupported()),
    }
}

/// The whole body, at most [`REQUEST_BYTES_MAX`]. A declared length over the limit is
/// refused before anything is kept.
///
/// A body over the limit is still read and thrown away, up to
/// [`DISCARD_BYTES_MAX`] and for at most [`DISCARD_TIME_MAX`], before the `413` goes
/// out: a server that closes a connection with unread input makes the kernel reset
/// it, and a client still sending its body then sees a reset instead of our answer.
/// A client that sent `Expect: 100-continue` has not sent the body, so nothing is
/// read.
async fn read_body(req: Request) -> Result<Bytes, AppError> {
    let expects_continue =
        req.headers().get(EXPECT).is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let declared = declared_length(req.headers());
    let mut body = req.into_body();
    let too_large = |message: String| AppError::from(Error::PayloadTooLarge(message));
    if let Some(length) = declared {
        if length > REQUEST_BYTES_MAX as u64 {
            if !expects_continue && length <= DISCARD_BYTES_MAX as u64 {
                discard(&mut body, DISCARD_BYTES_MAX).await;
            }
            return Err(too_large(format!(
                "the request body is {length} bytes, over the limit of {REQUEST_BYTES_MAX}"
            )));
        }
    }
    // A declared length is a hint, not a promise: do not reserve much on its word.
    let capacity = declared.map_or(0, |length| length.min(1 << 20) as usize);
    let mut bytes = Vec::with_capacity(capacity);
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame =
            frame.map_err(|e| Error::InvalidEvent(format!("could not read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        if bytes.len() + data.len() > REQUEST_BYTES_MAX {
            discard(&mut body, DISCARD_BYTES_MAX.saturating_sub(bytes.len() + data.len())).await;
            return Err(too_large(format!(
                "the request body is over the limit of {REQUEST_BYTES_MAX} bytes"
            )));
        }
        bytes.extend_from_slice(&data);
    }
    Ok(Bytes::from(bytes))
}

/// The most bytes of a too-large body read (and thrown away) before answering `413`.
const DISCARD_BYTES_MAX: usize = 4 * REQUEST_BYTES_MAX;

/// The longest time spent reading a too-large body before answering `413`.
const DISCARD_TIME_MAX: Duration = Duration::from_secs(10);

/// Reads and drops up to `bytes_max` bytes of `body`, for at most [`DISCARD_TIME_MAX`].
async fn discard(body: &mut Body, bytes_max: usize) {
    let drain = async {
        let mut seen = 0usize;
        while seen <= bytes_max {
            match std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
                Some(Ok(frame)) => seen += frame.data_ref().map_or(0, |data| data.len()),
                Some(Err(_)) | None => return,
            }
        }
    };
    let _ = tokio::time::timeout(DISCARD_TIME_MAX, drain).await;
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// `T` from a JSON body. The body is checked as UTF-8 whole (ASCII a word at a time)
/// and then read as text, rather than each string and payload being checked as serde
/// reads it (those checks were 4% of the request workers' samples under batches). A
/// body that is not UTF-8 is read from its bytes, so that the error says where.
fn from_json<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(bytes),
    }
}

/// One event from its JSON text, which must be an object: serde would also take the
/// fields as an array (`["user.created", "user-1", {}]`), which is not an event.
fn parse_event(text: &[u8]) -> Result<RawNewEvent<'_>, String> {
    match text.trim_ascii_start().first() {
        Some(b'{') => from_json::<RawNewEvent<'_>>(text).map_err(|e| e.to_string()),
        Some(_) => match serde_json::from_slice::<serde::de::IgnoredAny>(text) {
            Ok(_) => Err("an event must be a JSON object".to_string()),
            Err(e) => Err(e.to_string()),
        },
        None => Err("the event is empty".to_string()),
    }
}

/// `{"events": [...]}`, read in one pass: each item is parsed into an event as the
/// array is read, so no byte is scanned twice, and an error inside the array names its
/// item (its index, from 0). Other members of the object are ignored.
fn parse_json_batch(bytes: &[u8]) -> Result<Vec<RawNewEvent<'_>>, AppError> {
    // Other members are refused, as unknown fields of an event are: an
    // `expected_version` beside `events` must not pass as a condition that holds.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawBatch<'a> {
        #[serde(borrow)]
        events: Items<'a>,
    }
    let not_a_batch = |e: &dyn std::fmt::Display| {
        AppError::from(Error::InvalidEvent(format!("the body is not a batch ({{\"events\": [...]}}): {e}")))
    };
    // An object only: serde would also take the fields as an array.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(not_a_batch(&"expected a JSON object"));
    }
    BATCH_ITEM.set(None);
    from_json::<RawBatch<'_>>(bytes).map(|batch| batch.events.0).map_err(|e| match BATCH_ITEM.take() {
        Some(index) => Error::InvalidEvent(format!("batch item {index}: not a valid event: {e}")).into(),
        None => not_a_batch(&e),
    })
}

thread_local! {
    /// The index of the batch item being read, while one is: set by [`Items`], read
    /// by [`parse_json_batch`] when the parse fails, on the same thread.
    static BATCH_ITEM: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The `events` array, read item by item.
struct Items<'a>(Vec<RawNewEvent<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for Items<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ItemByItem<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for ItemByItem<'a> {
            type Value = Items<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of events")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Self::Value, A::Error> {
                // Not sized by the array's hint: the item limit is the engine's to enforce.
                let mut events = Vec::new();
                loop {
                    BATCH_ITEM.set(Some(events.len()));
                    match items.next_element::<EventObject<'a>>()? {
                        Some(EventObject(event)) => events.push(event),
                        None => break,
                    }
                }
                BATCH_ITEM.set(None);
                Ok(Items(events))
            }
        }
        deserializer.deserialize_seq(ItemByItem(PhantomData))
    }
}

/// One event, which must be a JSON object: serde would also take the fields of
/// [`RawNewEvent`] as an array (`["user.created", "user-1", {}]`).
struct EventObject<'a>(RawNewEvent<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for EventObject<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectOnly<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for ObjectOnly<'a> {
            type Value = EventObject<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an event (a JSON object)")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                RawNewEvent::deserialize(MapAccessDeserializer::new(map)).map(EventObject)
            }
        }
        deserializer.deserialize_map(ObjectOnly(PhantomData))
    }
}

/// One event per line, each with its line number (from 1); blank lines (only
/// whitespace) are skipped and not counted as items.
fn parse_ndjson_batch(bytes: &[u8]) -> Result<Vec<(usize, RawNewEvent<'_>)>, AppError> {
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
        .enumerate()
        .map(|(index, (line_index, line))| {
            let line_number = line_index + 1;
            parse_event(line).map(|event| (line_number, event)).map_err(|e| {
                Error::InvalidEvent(format!(
                    "batch item {index} (line {line_number}): not a valid event: {e}"
                ))
                .into()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use serde_json::value::RawValue;

    use super::*;

    fn format(content_type: Option<&str>, ndjson_allowed: bool) -> Option<BodyFormat> {
        let mut headers = HeaderMap::new();
        if let Some(value) = content_type {
            headers.insert(CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
        }
        body_format(&headers, ndjson_allowed).ok()
    }

    #[test]
    fn content_types() {
        use BodyFormat::{Json, Ndjson};
        assert_eq!(format(Some("application/json"), false), Some(Json));
        assert_eq!(format(Some("application/json; charset=utf-8"), false), Some(Json));
        assert_eq!(format(Some("Application/JSON;charset=\"UTF-8\""), false), Some(Json));
        assert_eq!(format(Some("application/vnd.allsource+json"), false), Some(Json));
        assert_eq!(format(Some("application/json; charset=latin1"), false), None);
        assert_eq!(format(Some("text/plain"), false), None);
        assert_eq!(format(Some("application/jsonx"), false), None);
        assert_eq!(format(None, false), None);
        assert_eq!(format(Some("application/x-ndjson"), false), None);
        assert_eq!(format(Some("application/x-ndjson"), true), Some(Ndjson));
        assert_eq!(format(Some("application/ndjson; charset=utf-8"), true), Some(Ndjson));
        assert_eq!(format(Some("application/json"), true), Some(Json));
    }

    /// A body read as text when it is UTF-8, and from its bytes when not, reads the
    /// same: a byte that is not UTF-8 inside a string is refused, in a batch with its
    /// item's index.
    #[test]
    fn bodies_that_are_not_utf8_are_refused_with_their_place() {
        let event = |payload: &[u8]| {
            let mut text = br#"{"event_type":"t","entity_id":"e","payload":""#.to_vec();
            text.extend_from_slice(payload);
            text.extend_from_slice(br#""}"#);
            text
        };
        let good = event("caf\u{e9}".as_bytes());
        let bad = event(b"caf\xe9");
        assert_eq!(parse_event(&good).unwrap().payload.get(), "\"caf\u{e9}\"");
        let error = parse_event(&bad).unwrap_err();
        assert!(error.contains("invalid unicode"), "{error}");

        let batch = |second: &[u8]| [br#"{"events":["#.as_slice(), &good, b",", second, b"]}"].concat();
        assert_eq!(parse_json_batch(&batch(&good)).unwrap().len(), 2);
        let message = match parse_json_batch(&batch(&bad)) {
            Err(error) => error.to_string(),
            Ok(events) => panic!("{} events from a body that is not UTF-8", events.len()),
        };
        assert!(message.contains("batch item 1") && message.contains("invalid unicode"), "{message}");
    }

    fn negotiate(accept: &[&str]) -> QueryFormat {
        let mut headers = HeaderMap::new();
        for value in accept {
            headers.append(ACCEPT, HeaderValue::from_str(value).unwrap());
        }
        QueryFormat::negotiate(&headers)
    }

    #[test]
    fn accept_negotiation() {
        use QueryFormat::{Arrow, Json};
        let arrow = ARROW_STREAM;
        for (accept, want) in [
            (vec![], Json),
            (vec!["*/*"], Json),
            (vec!["application/json"], Json),
            (vec!["text/html"], Json),
            (vec!["application/*"], Json),
            (vec![""], Json),
            (vec![arrow], Arrow),
            (vec!["Application/VND.Apache.Arrow.Stream"], Arrow),
            (vec![" application/vnd.apache.arrow.stream ; q=1 "], Arrow),
            (vec!["application/vnd.apache.arrow.stream, application/json;q=0.5"], Arrow),
            (vec!["application/json;q=0.5, application/vnd.apache.arrow.stream"], Arrow),
            (vec!["application/vnd.apache.arrow.stream;q=0.9, */*;q=0.1"], Arrow),
            (vec!["application/vnd.apache.arrow.stream, */*"], Arrow),
            (vec!["application/vnd.apache.arrow.stream, application/*"], Arrow),
            (vec!["text/html, application/vnd.apache.arrow.stream;q=0.1"], Arrow),
            (vec!["application/vnd.apache.arrow.stream", "application/json;q=0.2"], Arrow),
            (vec!["application/vnd.apache.arrow.stream;q=0"], Json),
            (vec!["application/vnd.apache.arrow.stream;q=0.5, application/json"], Json),
            (vec!["application/vnd.apache.arrow.stream;q=0.5, */*"], Json),
            (vec!["application/vnd.apache.arrow.stream, application/json"], Json),
            (vec!["application/json", "application/vnd.apache.arrow.stream"], Json),
            (vec!["application/vnd.apache.arrow.stream;q=abc"], Json),
            (vec!["application/vnd.apache.arrow.stream;q=1.5"], Json),
            (vec!["application/vnd.apache.arrow.file"], Json),
            (vec!["application/vnd.apache.arrow.streamx"], Json),
            (vec!["application/vnd.apache.parquet"], Json),
        ] {
            assert_eq!(negotiate(&accept), want, "Accept: {accept:?}");
        }
    }

    #[test]
    fn qvalues() {
        for (text, want) in [
            ("1", Some(1000)),
            ("1.", Some(1000)),
            ("1.000", Some(1000)),
            ("0", Some(0)),
            ("0.5", Some(500)),
            ("0.05", Some(50)),
            ("0.001", Some(1)),
            ("1.001", None),
            ("2", None),
            ("0.0001", None),
            (".5", None),
            ("-0", None),
            ("0.a", None),
            ("", None),
        ] {
            assert_eq!(parse_qvalue(text), want, "{text:?}");
        }
    }

    #[test]
    fn ndjson_skips_blank_lines_and_counts_items() {
        let body =
            b"\n{\"event_type\":\"t\",\"entity_id\":\"e\",\"payload\":1}\r\n  \n{\"event_type\":\"t\"}\n";
        let err = parse_ndjson_batch(body).unwrap_err().to_string();
        assert!(err.starts_with("batch item 1 (line 4): "), "{err}");
        let ok = parse_ndjson_batch(&body[..body.len() - 21]).unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].0, 2, "its line");
        assert_eq!(ok[0].1.payload.get(), "1");
        assert!(parse_ndjson_batch(b"\n \n").unwrap().is_empty());
    }

    #[test]
    fn json_batch_errors_name_the_item() {
        let err =
            parse_json_batch(br#"{"events": [{"event_type":"t","entity_id":"e","payload":1}, {"x":1}]}"#)
                .unwrap_err();
        assert_eq!(err.code(), "InvalidEvent");
        assert!(err.to_string().starts_with("batch item 1: "), "{err}");
        let err = parse_json_batch(br#"{"events": {}}"#).unwrap_err();
        assert_eq!(err.code(), "InvalidEvent");
        let err = parse_json_batch(br#"{"events": [}"#).unwrap_err();
        assert_eq!(err.code(), "InvalidEvent");

        let item = r#"{"event_type":"t","entity_id":"e","payload":1}"#;
        let named = |body: String, index: usize| {
            let err = parse_json_batch(body.as_bytes()).unwrap_err();
            assert_eq!(err.code(), "InvalidEvent", "{body}");
            assert!(err.to_string().starts_with(&format!("batch item {index}: ")), "{body}: {err}");
        };
        // An item that is not an object, or is the event's fields as an array.
        named(format!(r#"{{"events": [{item}, {item}, "x"]}}"#), 2);
        named(format!(r#"{{"events": [["t", "e", 1], {item}]}}"#), 0);
        // Broken JSON inside the array names the item it is in.
        named(format!(r#"{{"events": [{item}, {{"event_type": "t", }}]}}"#), 1);
        named(
            format!(r#"{{"events": [{item}, {{"event_type":"t","entity_id":"e","payload":1,"extra":2}}]}}"#),
            1,
        );
        // Errors outside the array name no item.
        for body in [
            format!(r#"{{"events": [{item}], "events": [{item}]}}"#),
            format!(r#"{{"events": [{item}]}} x"#),
            format!(r#"{{"events": [{item}]"#),
            format!(r#"{{"items": [{item}]}}"#),
            format!(r#"[{item}]"#),
            format!(r#"{{"events": [{item}], "expected_version": 3}}"#),
            format!(r#"{{"expected_version": 3, "events": [{item}]}}"#),
        ] {
            let err = parse_json_batch(body.as_bytes()).unwrap_err();
            assert_eq!(err.code(), "InvalidEvent", "{body}");
            assert!(err.to_string().starts_with("the body is not a batch"), "{body}: {err}");
        }
    }

    /// The one pass reads each item as the item alone would be read, borrowing from
    /// the body; the `events` member's name may be escaped, as a derived struct allows.
    #[test]
    fn a_json_batch_reads_each_item_as_alone() {
        let items = [
            r#"{"event_type":"t","entity_id":"e","payload":{"a":[1,2.5,"x"]}}"#,
            r#"{ "entity_id" : "\u0065-2", "event_type":"t.\"q\"", "payload": "s", "metadata": null }"#,
            r#"{"event_type":"t","entity_id":"e","payload":null,"metadata":{"m":1},"id":"0190f0c4-6a1e-7c3a-9d4e-1b2c3d4e5f63","expected_version":3}"#,
        ];
        let body = format!(r#"{{ "ev\u0065nts": [{}] }}"#, items.join(" ,\n"));
        let events = parse_json_batch(body.as_bytes()).unwrap();
        assert_eq!(events.len(), items.len());
        for (event, item) in events.iter().zip(items) {
            let alone = parse_event(item.as_bytes()).unwrap();
            assert_eq!(event.event_type, alone.event_type, "{item}");
            assert_eq!(event.entity_id, alone.entity_id, "{item}");
            assert_eq!(event.payload.get(), alone.payload.get(), "{item}");
            assert_eq!(event.metadata.map(RawValue::get), alone.metadata.map(RawValue::get), "{item}");
            assert_eq!(event.id, alone.id, "{item}");
            assert_eq!(event.expected_version, alone.expected_version, "{item}");
        }
        assert!(
            matches!(events[0].entity_id, std::borrow::Cow::Borrowed(_)),
            "ids are borrowed from the body"
        );
        assert_eq!(events[1].entity_id, "e-2");
        assert!(parse_json_batch(br#"{"events": []}"#).unwrap().is_empty());
        assert!(parse_json_batch(br#"{"events": null}"#).is_err());
    }

    #[test]
    fn timestamps_name_the_parameter_and_forgive_unencoded_plus() {
        let t = parse_timestamp("since", "2026-11-27T12:00:00 02:00", Bound::Lower).unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-27T10:00:00.000000Z");
        let err = parse_timestamp("until", "yesterday", Bound::Upper).unwrap_err();
        assert_eq!(err.code(), "ValidationError");
        assert!(err.to_string().contains("'until'"), "{err}");
    }
}
