//! Mapping driver errors to [`StorageError`].
//!
//! Timeouts, unavailable replicas, overload and connection trouble become
//! `Unavailable` (the caller may retry later; for a lightweight
//! transaction the outcome is then unknown, which the commit protocol is
//! built to tolerate). A missing table or keyspace is a `Schema` error;
//! anything else (a rejected statement, a row that does not decode) is
//! `Internal`.

use scylla::errors::{
    DbError, ExecutionError, NextPageError, NextRowError, PagerExecutionError, RequestAttemptError,
    RequestError,
};

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
        // CAS_WRITE_UNKNOWN (Cassandra's code for a lightweight transaction
        // whose outcome is unknown): as a write timeout.
        DbError::Other(CAS_WRITE_UNKNOWN) => FailureClass::Unavailable,
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

/// The protocol error code of a lightweight transaction whose outcome is
/// unknown.
const CAS_WRITE_UNKNOWN: i32 = 0x1700;

/// Classifies the error of one request attempt: the database's answer by
/// its code, a request the driver could not even serialize as a bug, and
/// connection trouble as retryable.
pub fn classify_attempt(e: &RequestAttemptError) -> FailureClass {
    match e {
        RequestAttemptError::DbError(db, msg) => classify_db_error(db, msg),
        RequestAttemptError::SerializationError(_)
        | RequestAttemptError::CqlRequestSerialization(_) => FailureClass::Internal,
        _ => FailureClass::Unavailable,
    }
}

/// Classifies an execution error.
pub fn classify(e: &ExecutionError) -> FailureClass {
    match e {
        ExecutionError::LastAttemptError(a) => classify_attempt(a),
        ExecutionError::BadQuery(_) | ExecutionError::PrepareError(_) => FailureClass::Internal,
        _ => FailureClass::Unavailable,
    }
}

/// Classifies a failure to fetch a page of a paged read: the request's
/// own failure as [`classify_attempt`]; a page whose columns do not match
/// the expected row type as `Internal`.
pub fn classify_page(e: &NextPageError) -> FailureClass {
    match e {
        NextPageError::RequestFailure(RequestError::LastAttemptError(a)) => classify_attempt(a),
        NextPageError::RequestFailure(_) => FailureClass::Unavailable,
        _ => FailureClass::Internal,
    }
}

/// Classifies the failure to start a paged read.
pub fn classify_pager(e: &PagerExecutionError) -> FailureClass {
    match e {
        PagerExecutionError::NextPageError(p) => classify_page(p),
        PagerExecutionError::PrepareError(_) | PagerExecutionError::SerializationError(_) => {
            FailureClass::Internal
        }
        _ => FailureClass::Unavailable,
    }
}

/// Classifies a failure while reading the rows of a paged read: a row that
/// does not decode is `Internal`, not something a retry fixes.
pub fn classify_row(e: &NextRowError) -> FailureClass {
    match e {
        NextRowError::NextPageError(p) => classify_page(p),
        _ => FailureClass::Internal,
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
    fn unknown_lwt_outcomes_are_unavailable_and_bad_requests_internal() {
        assert_eq!(
            classify_db_error(&DbError::Other(CAS_WRITE_UNKNOWN), "cas unknown"),
            FailureClass::Unavailable
        );
        assert_eq!(
            classify_db_error(&DbError::Other(0x1234), ""),
            FailureClass::Internal
        );
        let timeout = RequestError::RequestTimeout(std::time::Duration::from_secs(5));
        assert_eq!(
            classify_row(&NextRowError::NextPageError(NextPageError::RequestFailure(
                timeout
            ))),
            FailureClass::Unavailable
        );
        let db = RequestError::LastAttemptError(RequestAttemptError::DbError(
            DbError::Invalid,
            "unconfigured table messages".into(),
        ));
        assert_eq!(
            classify_pager(&PagerExecutionError::NextPageError(
                NextPageError::RequestFailure(db)
            )),
            FailureClass::Schema
        );
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
