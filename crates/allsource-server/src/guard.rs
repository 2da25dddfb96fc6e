//! The one middleware around every route, [`Guard`]. For each request, in this order:
//!
//! 1. it gives the request its id (`x-request-id`: the client's, or a fresh UUID) and
//!    its span (`request_id`, `method`, `route` template, then `status`);
//! 2. with API keys configured, it checks the bearer token ([`crate::auth`]);
//! 3. on an ordinary route, it takes a request slot and sets the time limit
//!    ([`crate::limits`]); the routes outside the limits are listed by the router;
//! 4. it runs the route, turning a panic into a `500 InternalError`;
//! 5. it records the response in the [`Metrics`] and echoes the request id.
//!
//! A refusal in step 2 or 3 is still counted and still carries the request id, and a
//! client without a key takes no slot. One hand-written service rather than a layer
//! each: axum wraps every route's service in a box once per layer and clones it for
//! each request, and a `from_fn` middleware also boxes its future and clones the
//! service it wraps. With the four layers this replaced, durable single appends ran at
//! 39-40K requests/s; with this one, at 43-44K (three alternating pairs of `cargo xtask
//! load --scenarios append`; the README has the full runs).

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use allsource_core::Error;
use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};
use tracing::Instrument;
use uuid::Uuid;

use crate::auth::{self, ApiKeys};
use crate::error::AppError;
use crate::limits::Limits;
use crate::metrics::{loggable_request_id, ErrorCode, Metrics, RouteKind, X_REQUEST_ID};

/// Makes [`Guard`]s; one per server, shared by every route.
#[derive(Clone)]
pub(crate) struct GuardLayer {
    shared: Arc<Shared>,
}

struct Shared {
    metrics: Metrics,
    keys: ApiKeys,
    limits: Limits,
    /// The route templates outside the request limits.
    unlimited: &'static [&'static str],
}

impl GuardLayer {
    /// A guard that checks `keys` (none: no check), holds the routes to `limits`
    /// (except those whose template is in `unlimited`, and unknown routes) and records
    /// in `metrics`.
    pub(crate) fn new(
        metrics: Metrics,
        keys: ApiKeys,
        limits: Limits,
        unlimited: &'static [&'static str],
    ) -> GuardLayer {
        GuardLayer { shared: Arc::new(Shared { metrics, keys, limits, unlimited }) }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard { inner, shared: self.shared.clone() }
    }
}

/// The service [`GuardLayer`] wraps each route in.
#[derive(Clone)]
pub(crate) struct Guard<S> {
    inner: S,
    shared: Arc<Shared>,
}

type BoxedResponse = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl<S> Service<Request> for Guard<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxedResponse;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> BoxedResponse {
        let started = Instant::now();
        let request_id = match request.headers().get(X_REQUEST_ID).filter(|id| !id.is_empty()) {
            Some(id) => Some(id.clone()),
            None => {
                let mut text = Uuid::encode_buffer();
                let id = HeaderValue::from_str(Uuid::new_v4().hyphenated().encode_lower(&mut text)).ok();
                if let Some(id) = &id {
                    request.headers_mut().insert(X_REQUEST_ID, id.clone());
                }
                id
            }
        };
        let template = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
        let route = template.map_or(RouteKind::Other, |template| RouteKind::of(request.method(), template));
        let limited = template.is_some_and(|template| !self.shared.unlimited.contains(&template));
        let span = tracing::info_span!(
            "request",
            request_id = %request_id.as_ref().map_or("<none>", loggable_request_id),
            method = %request.method(),
            route = %template.unwrap_or("<unmatched>"),
            status = tracing::field::Empty,
        );
        // With an explicit parent rather than inside the span: entering a span costs
        // even when the event is filtered out.
        tracing::debug!(parent: &span, "started");

        let shared = self.shared.clone();
        // A client without a key takes no slot.
        let admitted = if shared.keys.is_empty() { Ok(()) } else { auth::check(&shared.keys, &request) }
            .and_then(
                |()| if limited { span.in_scope(|| shared.limits.take_slot()).map(Some) } else { Ok(None) },
            );
        // The route's future, or the response that takes its place: a refusal, or the
        // `500` of a route that panicked before it returned a future.
        let (answer, slot) = match admitted {
            Err(error) => (Err(error.into_response()), None),
            Ok(slot) => match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
                Ok(future) => (Ok(future), slot),
                Err(panic) => (Err(span.in_scope(|| panic_response(panic))), slot),
            },
        };
        Box::pin(async move {
            let mut response = match answer {
                Err(response) => response,
                Ok(future) => {
                    let run = catch_panic(future).instrument(span.clone());
                    if !limited {
                        run.await
                    } else {
                        match tokio::time::timeout(shared.limits.timeout(), run).await {
                            Ok(response) => response,
                            Err(_) => span.in_scope(|| shared.limits.timed_out()).into_response(),
                        }
                    }
                }
            };
            drop(slot);
            let elapsed = started.elapsed();
            let status = response.status();
            // Only the `finished` line shows the status (span fields appear with events).
            if tracing::enabled!(tracing::Level::DEBUG) {
                span.record("status", status.as_u16());
                let latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
                tracing::debug!(parent: &span, latency_us, "finished");
            }
            let error_code = response.extensions().get::<ErrorCode>().map(|code| code.0);
            shared.metrics.record(route, status, error_code, elapsed);
            if let Some(id) = request_id {
                response.headers_mut().entry(X_REQUEST_ID).or_insert(id);
            }
            Ok(response)
        })
    }
}

/// Runs `future` to its response, or to the `500` of a panic while it is polled.
async fn catch_panic<F>(future: F) -> Response
where
    F: Future<Output = Result<Response, Infallible>>,
{
    let mut future = pin!(future);
    std::future::poll_fn(|cx| match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
        Ok(Poll::Pending) => Poll::Pending,
        Ok(Poll::Ready(Ok(response))) => Poll::Ready(response),
        Ok(Poll::Ready(Err(never))) => match never {},
        Err(panic) => Poll::Ready(panic_response(panic)),
    })
    .await
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
