//! The one error type of the event model, with the contract's codes and statuses.

use uuid::Uuid;

use crate::Version;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, grouped by whose fault it is: the caller's mistakes
/// (not found, invalid, validation, conflict, too large), the world's failures
/// (storage) and our own bugs (internal).
///
/// Each variant knows its contract code ([`Error::code`]) and HTTP status
/// ([`Error::status`]); this crate knows nothing of HTTP frameworks.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// No event with this id.
    #[error("event '{0}' not found")]
    EventNotFound(Uuid),
    /// The entity has no events (as of the time asked).
    #[error("entity '{0}' has no events")]
    EntityNotFound(String),
    /// The input is not valid JSON or not an event (missing or mistyped field).
    #[error("{0}")]
    InvalidEvent(String),
    /// Well-formed input that breaks a rule.
    #[error("{0}")]
    Validation(String),
    /// `expected_version` did not match the entity's current version.
    #[error("{message}")]
    ConcurrencyConflict {
        /// What the caller expected.
        expected_version: Version,
        /// What the entity's version is.
        current_version: Version,
        /// A sentence naming the entity (and the batch item, if any).
        message: String,
    },
    /// An event with this id exists with different content.
    #[error("{message}")]
    DuplicateEventId {
        /// The id that is taken.
        id: Uuid,
        /// A sentence naming the id (and the batch item, if any).
        message: String,
    },
    /// A body, payload or metadata over its limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A write could not be made durable; nothing was acknowledged.
    #[error("storage error: {message}")]
    Storage {
        /// What failed.
        message: String,
        /// The store refuses writes until it is reopened (a sync failed, the disk is full).
        read_only: bool,
    },
    /// A bug of ours.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The contract's error code, e.g. `"EntityNotFound"`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::EventNotFound(_) => "EventNotFound",
            Error::EntityNotFound(_) => "EntityNotFound",
            Error::InvalidEvent(_) => "InvalidEvent",
            Error::Validation(_) => "ValidationError",
            Error::ConcurrencyConflict { .. } => "ConcurrencyConflict",
            Error::DuplicateEventId { .. } => "DuplicateEventId",
            Error::PayloadTooLarge(_) => "PayloadTooLarge",
            Error::Storage { .. } => "StorageError",
            Error::Internal(_) => "InternalError",
        }
    }

    /// The HTTP status the contract gives this error.
    pub fn status(&self) -> u16 {
        match self {
            Error::EventNotFound(_) | Error::EntityNotFound(_) => 404,
            Error::InvalidEvent(_) | Error::Validation(_) => 400,
            Error::ConcurrencyConflict { .. } | Error::DuplicateEventId { .. } => 409,
            Error::PayloadTooLarge(_) => 413,
            Error::Storage { read_only: true, .. } => 503,
            Error::Storage { read_only: false, .. } | Error::Internal(_) => 500,
        }
    }

    /// The same error, its message prefixed with the index of the batch item it is about.
    pub fn at_batch_item(self, index: usize) -> Error {
        self.about(&format!("batch item {index}"))
    }

    /// The same error, its message prefixed with `what` it is about (`batch item 3
    /// (line 5)`), for the errors about an event; others are returned as they are.
    pub fn about(self, what: &str) -> Error {
        let prefix = |m: String| format!("{what}: {m}");
        match self {
            Error::InvalidEvent(m) => Error::InvalidEvent(prefix(m)),
            Error::Validation(m) => Error::Validation(prefix(m)),
            Error::PayloadTooLarge(m) => Error::PayloadTooLarge(prefix(m)),
            Error::ConcurrencyConflict { expected_version, current_version, message } => {
                Error::ConcurrencyConflict { expected_version, current_version, message: prefix(message) }
            }
            Error::DuplicateEventId { id, message } => {
                Error::DuplicateEventId { id, message: prefix(message) }
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses() {
        let cases: Vec<(Error, &str, u16)> = vec![
            (Error::EventNotFound(Uuid::nil()), "EventNotFound", 404),
            (Error::EntityNotFound("e".into()), "EntityNotFound", 404),
            (Error::InvalidEvent("x".into()), "InvalidEvent", 400),
            (Error::Validation("x".into()), "ValidationError", 400),
            (
                Error::ConcurrencyConflict { expected_version: 1, current_version: 2, message: "x".into() },
                "ConcurrencyConflict",
                409,
            ),
            (Error::DuplicateEventId { id: Uuid::nil(), message: "x".into() }, "DuplicateEventId", 409),
            (Error::PayloadTooLarge("x".into()), "PayloadTooLarge", 413),
            (Error::Storage { message: "x".into(), read_only: false }, "StorageError", 500),
            (Error::Storage { message: "x".into(), read_only: true }, "StorageError", 503),
            (Error::Internal("x".into()), "InternalError", 500),
        ];
        for (error, code, status) in cases {
            assert_eq!(error.code(), code);
            assert_eq!(error.status(), status, "{code}");
        }
    }

    #[test]
    fn batch_item_prefix() {
        let err = Error::Validation("entity_id must be 1..=256 bytes".into()).at_batch_item(3);
        assert_eq!(err.to_string(), "batch item 3: entity_id must be 1..=256 bytes");
    }
}
