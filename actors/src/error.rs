//! Errors the actors answer with; each maps to a contract error code.

use parley_protocol::ErrorCode;
use parley_storage::StorageError;
use thiserror::Error;

/// Why a room operation failed.
#[derive(Debug, Clone, Error, serde::Serialize, serde::Deserialize)]
pub enum ChatError {
    /// No such room, or the caller is not a member (no existence leak).
    #[error("room not found")]
    NotFound,
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The request breaks a rule.
    #[error("{0}")]
    Invalid(String),
    /// Conflicts with existing state.
    #[error("{0}")]
    Conflict(String),
    /// Overloaded or storage unreachable; try again.
    #[error("{0}")]
    Unavailable(String),
    /// Unexpected failure.
    #[error("{0}")]
    Internal(String),
    /// The room exists for the caller, but the user a change names is not
    /// one of its members. (Last, so that earlier variants keep their wire tags.)
    #[error("member not found")]
    NoSuchMember,
}

impl ChatError {
    /// The contract error code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            ChatError::NotFound | ChatError::NoSuchMember => ErrorCode::NotFound,
            ChatError::Forbidden(_) => ErrorCode::Forbidden,
            ChatError::Invalid(_) => ErrorCode::InvalidRequest,
            ChatError::Conflict(_) => ErrorCode::Conflict,
            ChatError::Unavailable(_) => ErrorCode::Unavailable,
            ChatError::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<StorageError> for ChatError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound => ChatError::NotFound,
            StorageError::Unavailable(m) => ChatError::Unavailable(m),
            other => ChatError::Internal(other.to_string()),
        }
    }
}

impl<T> From<ractor::MessagingErr<T>> for ChatError {
    fn from(_: ractor::MessagingErr<T>) -> Self {
        ChatError::Unavailable("actor unavailable, try again".into())
    }
}

impl From<ractor::RactorErr<()>> for ChatError {
    fn from(_: ractor::RactorErr<()>) -> Self {
        ChatError::Unavailable("actor unavailable, try again".into())
    }
}
