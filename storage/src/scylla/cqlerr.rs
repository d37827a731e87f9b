//! Mapping driver errors to [`StorageError`].
//!
//! Timeouts, unavailable replicas, overload and connection trouble become
//! `Unavailable` (the caller may retry later; for a lightweight
//! transaction the outcome is then unknown, which the commit protocol is
//! built to tolerate). A missing table or keyspace is a `Schema` error;
//! anything else (a rejected statement, a row that does not decode) is
//! `Internal`.

use scylla::errors::{DbError, ExecutionError, RequestAttemptError};

use crate::error::StorageError;

/// What kind of failure a driver error is, decided from the database's
/// error code when there is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Retry later.
    Unavailable,
    /// The keyspace or a table is missing or different.
    Schema,
    /// A bug or a rejected statement.
    Internal,
}

/// Classifies a database error code (and its message).
pub fn classify_db_error(e: &DbError, message: &str) -> FailureClass {
    match e {
        DbError::Unavailable { .. }
        | DbError::Overloaded
        | DbError::IsBootstrapping
        | DbError::ReadTimeout { .. }
        | DbError::WriteTimeout { .. }
        | DbError::ReadFailure { .. }
        | DbError::WriteFailure { .. }
        | DbError::RateLimitReached { .. }
        | DbError::TruncateError
        | DbError::ServerError => FailureClass::Unavailable,
        DbError::Invalid | DbError::ConfigError
            if message.contains("unconfigured table")
                || message.contains("does not exist")
                || message.contains("Keyspace") =>
        {
            FailureClass::Schema
        }
        _ => FailureClass::Internal,
    }
}

/// Classifies an execution error.
pub fn classify(e: &ExecutionError) -> FailureClass {
    match e {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, msg)) => {
            classify_db_error(db, msg)
        }
        ExecutionError::BadQuery(_) | ExecutionError::PrepareError(_) => FailureClass::Internal,
        _ => FailureClass::Unavailable,
    }
}

/// Maps an execution error of `what` (a statement name) to a storage error.
pub fn map_execution(what: impl std::fmt::Display, e: &ExecutionError) -> StorageError {
    build(classify(e), format!("{what}: {e}"))
}

/// Maps any other driver failure (paging, decoding) of `what`: paging and
/// connection failures are `Unavailable`, decoding failures `Internal`.
pub fn map_other(
    what: impl std::fmt::Display,
    class: FailureClass,
    e: impl std::fmt::Display,
) -> StorageError {
    build(class, format!("{what}: {e}"))
}

fn build(class: FailureClass, msg: String) -> StorageError {
    match class {
        FailureClass::Unavailable => StorageError::Unavailable(msg),
        FailureClass::Schema => StorageError::Schema(msg),
        FailureClass::Internal => StorageError::Internal(msg),
    }
}

#[cfg(test)]
mod tests {
    use scylla::errors::WriteType;
    use scylla::statement::Consistency;

    use super::*;

    #[test]
    fn timeouts_and_overload_are_unavailable() {
        let wt = DbError::WriteTimeout {
            consistency: Consistency::LocalQuorum,
            received: 1,
            required: 2,
            write_type: WriteType::Cas,
        };
        assert_eq!(classify_db_error(&wt, ""), FailureClass::Unavailable);
        assert_eq!(
            classify_db_error(&DbError::Overloaded, ""),
            FailureClass::Unavailable
        );
        let e = ExecutionError::LastAttemptError(RequestAttemptError::DbError(
            DbError::Overloaded,
            "busy".into(),
        ));
        assert!(matches!(
            map_execution("Ping", &e),
            StorageError::Unavailable(m) if m.starts_with("Ping: ")
        ));
    }

    #[test]
    fn missing_tables_are_schema_errors() {
        assert_eq!(
            classify_db_error(&DbError::Invalid, "unconfigured table messages"),
            FailureClass::Schema
        );
        assert_eq!(
            classify_db_error(&DbError::Invalid, "Invalid amount of bind variables"),
            FailureClass::Internal
        );
        assert_eq!(
            classify_db_error(&DbError::SyntaxError, "line 1"),
            FailureClass::Internal
        );
    }
}
