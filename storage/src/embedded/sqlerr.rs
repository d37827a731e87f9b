//! Mapping SQLite errors onto [`StorageError`].

use rusqlite::ErrorCode;

use crate::error::StorageError;

/// Maps a rusqlite error to the storage error a caller can act on.
///
/// Busy/locked (another writer holds the file longer than the busy timeout),
/// a full disk or a file that cannot be opened become `Unavailable` (retry
/// later); out-of-range stored values and foreign files become `Schema`;
/// everything else is `Internal`.
pub(crate) fn map_err(e: rusqlite::Error) -> StorageError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                StorageError::Unavailable(format!("database busy: {e}"))
            }
            ErrorCode::DiskFull | ErrorCode::CannotOpen | ErrorCode::SystemIoFailure => {
                StorageError::Unavailable(e.to_string())
            }
            ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt => {
                StorageError::Schema(format!("not a readable Parley database: {e}"))
            }
            _ => StorageError::Internal(e.to_string()),
        },
        rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..) => {
            StorageError::Schema(format!("unexpected stored value: {e}"))
        }
        rusqlite::Error::ToSqlConversionFailure(_) => {
            StorageError::Internal(format!("value out of the storable range: {e}"))
        }
        _ => StorageError::Internal(e.to_string()),
    }
}

/// True when the error is a UNIQUE or PRIMARY KEY constraint violation.
pub(crate) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => {
            f.code == ErrorCode::ConstraintViolation
                && (f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
        }
        _ => false,
    }
}

/// Maps a unique violation to `AlreadyExists` and anything else as
/// [`map_err`] does.
pub(crate) fn map_unique(e: rusqlite::Error) -> StorageError {
    if is_unique_violation(&e) {
        StorageError::AlreadyExists
    } else {
        map_err(e)
    }
}

/// The error for a poisoned connection mutex (a panic happened while a
/// connection was in use).
pub(crate) fn poisoned() -> StorageError {
    StorageError::Internal("embedded store connection lock poisoned".into())
}
