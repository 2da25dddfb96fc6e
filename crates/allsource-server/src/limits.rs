//! Request limits: at most so many requests in flight, each answered within a time
//! limit. A request past the limit is refused at once (`503 Overloaded` with
//! `Retry-After`), never queued, so an overloaded server answers fast and its memory
//! stays bounded; a request that takes too long is answered `504 Timeout`.
//!
//! Both apply to the ordinary routes only: long-lived responses (subscriptions) have
//! limits of their own, and `/health` must answer even when the server is busy.
//! A request holds its slot until its handler has produced the response head; the
//! time limit covers the same span (reading the body included, streaming a response
//! body such as an export's excluded).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{AppError, OVERLOADED_RETRY_AFTER_SECONDS};

/// The default time limit of a request.
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// The default number of requests in flight (on the ordinary routes).
pub const CONCURRENT_REQUESTS_DEFAULT: usize = 1024;

/// The request slots and the time limit, which the request guard holds each ordinary
/// request to.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    slots: Arc<Semaphore>,
    slots_max: usize,
    timeout: Duration,
}

impl Limits {
    /// `slots_max` requests in flight (at least 1), each within `timeout`.
    pub(crate) fn new(slots_max: usize, timeout: Duration) -> Limits {
        let slots_max = slots_max.clamp(1, Semaphore::MAX_PERMITS);
        Limits { slots: Arc::new(Semaphore::new(slots_max)), slots_max, timeout }
    }

    /// A free slot, held until it is dropped, or the `503 Overloaded` that refuses the
    /// request at once when every slot is taken.
    pub(crate) fn take_slot(&self) -> Result<OwnedSemaphorePermit, AppError> {
        self.slots.clone().try_acquire_owned().map_err(|_| {
            tracing::warn!(slots = self.slots_max, "overloaded: request refused");
            AppError::Overloaded(format!(
                "the server is at its limit of {} requests in flight; retry in {} s",
                self.slots_max, OVERLOADED_RETRY_AFTER_SECONDS
            ))
        })
    }

    /// How long a request may take.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The `504 Timeout` of a request that took longer than [`Limits::timeout`].
    pub(crate) fn timed_out(&self) -> AppError {
        tracing::warn!(timeout_ms = self.timeout.as_millis() as u64, "request timed out");
        AppError::Timeout(format!(
            "the request did not finish within {} ms; an append may still have been \
             committed: retry it with the same id to find out",
            self.timeout.as_millis()
        ))
    }
}

#[cfg(test)]
mod tests {
    use axum::body::{to_bytes, Body};
    use axum::extract::Request;
    use axum::http::StatusCode;
    use axum::routing::get;
    use axum::Router;
    use serde_json::Value;
    use tokio::sync::oneshot;
    use tower::ServiceExt;

    use super::*;
    use crate::guard::GuardLayer;
    use crate::{ApiKeys, Metrics};

    fn router(limits: Limits, release: Arc<tokio::sync::Notify>) -> Router {
        Router::new()
            .route(
                "/wait",
                get(move || async move {
                    release.notified().await;
                    "done"
                }),
            )
            .route("/fast", get(|| async { "fast" }))
            .layer(GuardLayer::new(Metrics::default(), ApiKeys::default(), limits, &[]))
    }

    async fn send(router: &Router, path: &str) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let request = Request::get(path).body(Body::empty()).unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        (parts.status, parts.headers, to_bytes(body, usize::MAX).await.unwrap().to_vec())
    }

    fn code(body: &[u8]) -> String {
        let body: Value = serde_json::from_slice(body).unwrap();
        body["error"]["code"].as_str().unwrap().to_string()
    }

    #[tokio::test]
    async fn overload_is_refused_not_queued() {
        let release = Arc::new(tokio::sync::Notify::new());
        let limits = Limits::new(1, Duration::from_secs(60));
        let slots = limits.slots.clone();
        let app = router(limits, release.clone());

        // One request holds the only slot until released.
        let (done_tx, done_rx) = oneshot::channel();
        let held = app.clone();
        tokio::spawn(async move {
            let _ = done_tx.send(send(&held, "/wait").await);
        });
        tokio::time::timeout(Duration::from_secs(10), async {
            while slots.available_permits() != 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();

        let (status, headers, body) = send(&app, "/fast").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers["retry-after"], "1");
        assert!(headers["content-type"].to_str().unwrap().starts_with("application/json"));
        assert_eq!(code(&body), "Overloaded");

        release.notify_one();
        let (status, _, body) = done_rx.await.unwrap();
        assert_eq!((status, body.as_slice()), (StatusCode::OK, b"done".as_slice()));
        // The slot is free again.
        let (status, _, body) = send(&app, "/fast").await;
        assert_eq!((status, body.as_slice()), (StatusCode::OK, b"fast".as_slice()));
    }

    #[tokio::test]
    async fn timeout_is_a_json_error_and_frees_the_slot() {
        let release = Arc::new(tokio::sync::Notify::new());
        let limits = Limits::new(1, Duration::from_millis(50));
        let app = router(limits, release);
        let (status, headers, body) = send(&app, "/wait").await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert!(headers["content-type"].to_str().unwrap().starts_with("application/json"));
        assert_eq!(code(&body), "Timeout");
        let (status, _, _) = send(&app, "/fast").await;
        assert_eq!(status, StatusCode::OK);
    }

    #[test]
    fn at_least_one_slot() {
        assert_eq!(Limits::new(0, REQUEST_TIMEOUT_DEFAULT).slots.available_permits(), 1);
    }
}
