//! [`AppError`]: every way a request can fail, as the contract's JSON error body.
//!
//! Every error response of the server, from a handler, an extractor, the router's
//! fallbacks or the panic catcher, is built here, so they all share one shape:
//! `{"error": {"code": "...", "message": "..."}}` with the contract's status.

use allsource_core::{Error, Uuid, Version};
use axum::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// A failed request: an engine [`Error`], or one of the few failures that only HTTP
/// knows (unknown route, wrong method, wrong content type).
#[derive(Debug, Clone, PartialEq)]
pub enum AppError {
    /// An error of the engine or of input validation at the edge; its code and status
    /// are the engine's ([`Error::code`], [`Error::status`]).
    Store(Error),
    /// `404 NotFound`: no such route, projection or projection key.
    NotFound(String),
    /// `405 MethodNotAllowed`: the route exists, the method does not.
    MethodNotAllowed(String),
    /// `415 UnsupportedMediaType`: a body without an accepted `Content-Type`.
    UnsupportedMediaType(String),
    /// `401 Unauthorized`: keys are on and the request has no bearer token, or one that
    /// is no key. The response carries `WWW-Authenticate: Bearer`.
    Unauthorized {
        /// What was wrong, never the token itself.
        message: String,
        /// A token was given but is no key (RFC 6750's `invalid_token`).
        invalid_token: bool,
    },
    /// `403 Forbidden`: a read key on a route that writes.
    Forbidden(String),
    /// `503 Overloaded`: every request slot is taken; the response carries
    /// `Retry-After`, nothing was done.
    Overloaded(String),
    /// `504 Timeout`: the request did not finish in time. What it did so far stands (an
    /// append may be committed), so clients retry appends with the same `id`.
    Timeout(String),
}

/// The seconds a client is asked to wait (`Retry-After`) after a `503 Overloaded`.
pub const OVERLOADED_RETRY_AFTER_SECONDS: u64 = 1;

impl AppError {
    /// The HTTP status of the response.
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::Store(error) => {
                StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            AppError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The contract's error code, e.g. `"EntityNotFound"`.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::Store(error) => error.code(),
            AppError::NotFound(_) => "NotFound",
            AppError::MethodNotAllowed(_) => "MethodNotAllowed",
            AppError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            AppError::Unauthorized { .. } => "Unauthorized",
            AppError::Forbidden(_) => "Forbidden",
            AppError::Overloaded(_) => "Overloaded",
            AppError::Timeout(_) => "Timeout",
        }
    }

    /// The response body. Internal details never reach the client: they are logged
    /// here, once, inside the request's span.
    fn body(&self) -> ErrorBody {
        let message = match self {
            AppError::Store(Error::Internal(detail)) => {
                tracing::error!(%detail, "internal error");
                "internal server error; the details are in the server's log".to_string()
            }
            AppError::Store(error @ Error::Storage { .. }) => {
                tracing::error!(%error, "storage error");
                error.to_string()
            }
            other => other.to_string(),
        };
        let mut detail = ErrorDetail { code: self.code(), message, ..ErrorDetail::default() };
        match self {
            AppError::Store(Error::ConcurrencyConflict { expected_version, current_version, .. }) => {
                detail.expected_version = Some(*expected_version);
                detail.current_version = Some(*current_version);
            }
            AppError::Store(Error::DuplicateEventId { id, .. }) => detail.id = Some(*id),
            AppError::Store(Error::Storage { read_only, .. }) => detail.read_only = Some(*read_only),
            _ => {}
        }
        ErrorBody { error: detail }
    }
}

/// `{"error": {...}}`: the body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"error": {"code": "EntityNotFound", "message": "entity 'user-9' has no events"}}))]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

/// The `error` object: code and message always, the rest where the error has them.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
struct ErrorDetail {
    /// The contract's error code, e.g. `ValidationError`, `EntityNotFound`,
    /// `ConcurrencyConflict`.
    #[schema(value_type = String)]
    code: &'static str,
    /// What went wrong, for people.
    message: String,
    /// For a `ConcurrencyConflict`: the version the request expected.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = u64, minimum = 0)]
    expected_version: Option<Version>,
    /// For a `ConcurrencyConflict`: the entity's version.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = u64, minimum = 0)]
    current_version: Option<Version>,
    /// The event id a `DuplicateEventId` is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, format = "uuid")]
    id: Option<Uuid>,
    /// For a `StorageError`: whether the store now refuses writes.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = bool)]
    read_only: Option<bool>,
}

impl From<Error> for AppError {
    fn from(error: Error) -> Self {
        AppError::Store(error)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        let headers = response.headers_mut();
        match &self {
            AppError::Unauthorized { invalid_token: false, .. } => {
                headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(r#"Bearer realm="allsource""#));
            }
            AppError::Unauthorized { invalid_token: true, .. } => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="allsource", error="invalid_token""#),
                );
            }
            AppError::Overloaded(_) => {
                headers.insert(RETRY_AFTER, HeaderValue::from(OVERLOADED_RETRY_AFTER_SECONDS));
            }
            _ => {}
        }
        // For the metrics: appends are counted by outcome, which is this code.
        response.extensions_mut().insert(crate::metrics::ErrorCode(self.code()));
        response
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppError::Store(error) => write!(f, "{error}"),
            AppError::NotFound(message)
            | AppError::MethodNotAllowed(message)
            | AppError::UnsupportedMediaType(message)
            | AppError::Unauthorized { message, .. }
            | AppError::Forbidden(message)
            | AppError::Overloaded(message)
            | AppError::Timeout(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for AppError {}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn check(error: AppError, status: u16, code: &str) -> Value {
        assert_eq!(error.status().as_u16(), status, "{error:?}");
        assert_eq!(error.code(), code, "{error:?}");
        let body = serde_json::to_value(error.body()).unwrap();
        assert_eq!(body["error"]["code"], code);
        assert!(body["error"]["message"].is_string(), "{body}");
        body
    }

    #[test]
    fn statuses_and_codes() {
        check(AppError::NotFound("x".into()), 404, "NotFound");
        check(AppError::MethodNotAllowed("x".into()), 405, "MethodNotAllowed");
        check(AppError::UnsupportedMediaType("x".into()), 415, "UnsupportedMediaType");
        check(AppError::Unauthorized { message: "x".into(), invalid_token: false }, 401, "Unauthorized");
        check(AppError::Forbidden("x".into()), 403, "Forbidden");
        check(AppError::Overloaded("x".into()), 503, "Overloaded");
        check(AppError::Timeout("x".into()), 504, "Timeout");
        check(Error::Validation("x".into()).into(), 400, "ValidationError");
        check(Error::Storage { message: "x".into(), read_only: true }.into(), 503, "StorageError");
        check(Error::Storage { message: "x".into(), read_only: false }.into(), 500, "StorageError");
        let body = check(
            Error::DuplicateEventId { id: Uuid::nil(), message: "x".into() }.into(),
            409,
            "DuplicateEventId",
        );
        assert_eq!(body["error"]["id"], Uuid::nil().to_string());
    }

    #[test]
    fn conflict_carries_versions() {
        let error =
            Error::ConcurrencyConflict { expected_version: 3, current_version: 5, message: "m".into() };
        let text = serde_json::to_string(&AppError::from(error.clone()).body()).unwrap();
        assert!(text.starts_with(r#"{"error":{"code":"ConcurrencyConflict","message":"m","#), "{text}");
        let body = check(error.into(), 409, "ConcurrencyConflict");
        assert_eq!(body["error"]["expected_version"], 3);
        assert_eq!(body["error"]["current_version"], 5);
        assert_eq!(body["error"]["message"], "m");
    }

    #[test]
    fn headers_of_auth_and_overload_errors() {
        let response = AppError::Unauthorized { message: "x".into(), invalid_token: false }.into_response();
        assert_eq!(response.headers()[WWW_AUTHENTICATE], r#"Bearer realm="allsource""#);
        let response = AppError::Unauthorized { message: "x".into(), invalid_token: true }.into_response();
        assert_eq!(
            response.headers()[WWW_AUTHENTICATE],
            r#"Bearer realm="allsource", error="invalid_token""#
        );
        let response = AppError::Overloaded("x".into()).into_response();
        assert_eq!(response.headers()[RETRY_AFTER], "1");
        let response = AppError::Forbidden("x".into()).into_response();
        assert!(response.headers().get(WWW_AUTHENTICATE).is_none());
    }

    #[test]
    fn internal_details_stay_in_the_log() {
        let body = check(Error::Internal("secret detail".into()).into(), 500, "InternalError");
        assert!(!body.to_string().contains("secret detail"), "{body}");
    }
}
