//! The API's error type: every failure becomes the contract's JSON error body.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use parley_actors::ChatError;
use parley_protocol::{ErrorBody, ErrorCode};
use parley_storage::StorageError;

use crate::auth::password::HashError;

/// An error answered to an HTTP client.
#[derive(Debug)]
pub struct ApiError {
    /// Contract code (decides the status).
    pub code: ErrorCode,
    /// Human-readable message.
    pub message: String,
    /// Seconds for `Retry-After` (rate limits).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 `invalid_request`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// 429 `rate_limited` with `Retry-After`.
    pub fn rate_limited(retry_after: u64) -> Self {
        ApiError {
            code: ErrorCode::RateLimited,
            message: "too many requests, slow down".into(),
            retry_after: Some(retry_after.max(1)),
        }
    }

    /// 500 `internal`; the detail is logged, not shown.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(ErrorCode::Internal, "internal error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, Json(ErrorBody::new(self.code, self.message))).into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::AlreadyExists => ApiError::new(ErrorCode::Conflict, "already exists"),
            StorageError::NotFound => ApiError::not_found("not found"),
            StorageError::Unavailable(m) => {
                tracing::warn!(error = %m, "storage unavailable");
                ApiError::new(ErrorCode::Unavailable, "storage unavailable, try again")
            }
            other => ApiError::internal(other),
        }
    }
}

impl From<ChatError> for ApiError {
    fn from(e: ChatError) -> Self {
        match e {
            ChatError::Internal(m) => ApiError::internal(m),
            ChatError::NotFound => ApiError::not_found("room not found"),
            other => ApiError::new(other.code(), other.to_string()),
        }
    }
}

impl From<HashError> for ApiError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy => ApiError {
                code: ErrorCode::Unavailable,
                message: e.to_string(),
                retry_after: Some(1),
            },
            HashError::Failed(_) => ApiError::internal(e),
        }
    }
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;
