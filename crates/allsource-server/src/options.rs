//! What the router needs besides the store: the settings of the optional parts of the
//! API (authentication, limits, subscriptions, metrics), built from the [`Config`]
//! by the binary and left at their defaults by tests that do not care.
//!
//! [`Config`]: crate::Config

use crate::stream::Subscriptions;

/// The settings [`app_with`](crate::app_with) builds the router from. `Default` is
/// the API as the contract describes it with no keys, the default limits and a fresh
/// metrics registry.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct AppOptions {
    /// The subscriptions of `GET /api/v1/events/stream`: their settings and the count
    /// of open streams; the binary keeps a clone to end them at shutdown.
    pub subscriptions: Subscriptions,
}

impl AppOptions {
    /// Serves streams with `subscriptions` (and their settings).
    pub fn with_subscriptions(mut self, subscriptions: Subscriptions) -> Self {
        self.subscriptions = subscriptions;
        self
    }
}
