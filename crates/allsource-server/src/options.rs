//! What the router needs besides the store: the settings of the optional parts of the
//! API (authentication, limits, subscriptions, metrics), built from the [`Config`]
//! by the binary and left at their defaults by tests that do not care.
//!
//! [`Config`]: crate::Config

use std::time::Duration;

use crate::auth::ApiKeys;
use crate::limits::{CONCURRENT_REQUESTS_DEFAULT, REQUEST_TIMEOUT_DEFAULT};
use crate::metrics::Metrics;
use crate::stream::Subscriptions;

/// The settings [`app_with`](crate::app_with) builds the router from. `Default` is
/// the API as the contract describes it with no keys, the default limits and a fresh
/// metrics registry.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AppOptions {
    /// The API keys; empty (the default): no authentication.
    pub api_keys: ApiKeys,
    /// The time limit of a request on the ordinary routes (`504 Timeout` past it).
    pub request_timeout: Duration,
    /// How many requests may be in flight on the ordinary routes; one more is refused
    /// with `503 Overloaded`. At least 1.
    pub concurrent_requests_max: usize,
    /// The metrics registry `GET /metrics` serves and the request guard records into;
    /// the default is a fresh one. The binary keeps a clone to record its start-up.
    pub metrics: Metrics,
    /// The subscriptions of `GET /api/v1/events/stream`: their settings and the count
    /// of open streams; the binary keeps a clone to end them at shutdown.
    pub subscriptions: Subscriptions,
}

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions {
            api_keys: ApiKeys::default(),
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
            concurrent_requests_max: CONCURRENT_REQUESTS_DEFAULT,
            metrics: Metrics::default(),
            subscriptions: Subscriptions::default(),
        }
    }
}

impl AppOptions {
    /// Requires one of `api_keys` on every route but the open ones (no keys: open).
    pub fn with_api_keys(mut self, api_keys: ApiKeys) -> Self {
        self.api_keys = api_keys;
        self
    }

    /// Sets the time limit of a request.
    pub fn with_request_timeout(mut self, request_timeout: Duration) -> Self {
        self.request_timeout = request_timeout;
        self
    }

    /// Sets how many requests may be in flight (at least 1).
    pub fn with_concurrent_requests_max(mut self, concurrent_requests_max: usize) -> Self {
        self.concurrent_requests_max = concurrent_requests_max;
        self
    }

    /// Records into (and serves) `metrics` instead of a fresh registry.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Serves streams with `subscriptions` (and their settings).
    pub fn with_subscriptions(mut self, subscriptions: Subscriptions) -> Self {
        self.subscriptions = subscriptions;
        self
    }
}
